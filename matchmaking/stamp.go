package matchmaking

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/libp2p/go-libp2p/core/peer"
)

// StampBits is the identity stamp's difficulty: an offer's stamp is a
// nonce such that SHA-256("tandem-stamp/1" || owner || nonce) starts with
// this many zero bits. Finding one takes 2^StampBits hashes on average,
// seconds once for a user (the stamp is kept in the store), and checking
// one takes a single hash; an attacker pays it again for every identity
// it makes, so 10,000 identities cost hours of CPU, and a no-show or a
// lapsed hold burns the identity it was made with. It is a protocol
// constant: nodes with different values do not see each other's offers.
// Tests lower it through Config.StampBits.
const StampBits = 24

const stampDomain = "tandem-stamp/1"

// maxStamp bounds a stamp's length on the wire.
const maxStamp = 16

func stampHash(owner peer.ID, nonce []byte) [32]byte {
	buf := make([]byte, 0, len(stampDomain)+len(owner)+len(nonce))
	return sha256.Sum256(append(append(append(buf, stampDomain...), owner...), nonce...))
}

func leadingZeros(h [32]byte) int {
	n := 0
	for _, b := range h {
		if b != 0 {
			return n + bits.LeadingZeros8(b)
		}
		n += 8
	}
	return n
}

// checkStamp reports whether nonce is a stamp of owner at difficulty d.
func checkStamp(owner peer.ID, nonce []byte, d int) error {
	if len(nonce) > maxStamp {
		return fmt.Errorf("identity stamp of %d bytes, at most %d", len(nonce), maxStamp)
	}
	if leadingZeros(stampHash(owner, nonce)) < d {
		return fmt.Errorf("identity stamp does not meet difficulty %d", d)
	}
	return nil
}

// mintStamp finds a stamp of owner at difficulty d (2^d hashes on
// average).
func mintStamp(owner peer.ID, d int) []byte {
	buf := append([]byte(stampDomain), owner...)
	n := len(buf)
	buf = append(buf, make([]byte, 8)...)
	for i := uint64(0); ; i++ {
		binary.BigEndian.PutUint64(buf[n:], i)
		if leadingZeros(sha256.Sum256(buf)) >= d {
			return append([]byte(nil), buf[n:]...)
		}
	}
}

// storedStamp is the node's stamp as kept in the store.
type storedStamp struct {
	Peer  string `json:"peer"`
	Bits  int    `json:"bits"`
	Nonce []byte `json:"nonce"`
}

const stampKey = "mm/stamp"

// loadStamp returns the node's stamp from the store, minting (and
// storing) one if there is none for this identity and difficulty.
func (s *Service) loadStamp() ([]byte, error) {
	var st storedStamp
	ok, err := s.db.get(stampKey, &st)
	if err != nil {
		return nil, fmt.Errorf("loading identity stamp: %w", err)
	}
	self := s.h.ID()
	if ok && st.Peer == self.String() && checkStamp(self, st.Nonce, s.cfg.StampBits) == nil {
		return st.Nonce, nil
	}
	s.log.Info("computing this identity's stamp (once; takes seconds)", "bits", s.cfg.StampBits)
	nonce := mintStamp(self, s.cfg.StampBits)
	if err := s.db.put(stampKey, storedStamp{Peer: self.String(), Bits: s.cfg.StampBits, Nonce: nonce}); err != nil {
		return nil, fmt.Errorf("saving identity stamp: %w", err)
	}
	return nonce, nil
}
