package matchmaking

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// StampBits is the identity stamp's difficulty: an offer's stamp is a
// nonce such that SHA-256("tandem-stamp/1" || owner || nonce) starts with
// this many zero bits. Finding one takes 2^StampBits hashes on average,
// seconds once for a user (the stamp is kept in the store; the node mints
// it in the background and is usable meanwhile, its offers going out once
// it is ready), and checking one takes a single hash; an attacker pays it
// again for every identity it makes, so 10,000 identities cost hours of
// CPU, and a no-show or a lapsed hold burns the identity it was made with.
// It is a protocol constant: nodes with different values do not see each
// other's offers. Tests lower it through Config.StampBits.
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
	nonce, _ := mintStampCtx(context.Background(), owner, d, nil)
	return nonce
}

// mintCheckEvery is how many hashes the mint tries between looks at its
// context and progress reports: about a millisecond of work, so Close
// never waits long for it.
const mintCheckEvery = 1 << 12

// mintStampCtx is mintStamp that gives up when ctx ends (at difficulty 32
// a mint takes hours) and, if tried is not nil, keeps there how many
// hashes it has tried so far.
func mintStampCtx(ctx context.Context, owner peer.ID, d int, tried *atomic.Uint64) ([]byte, error) {
	buf := append([]byte(stampDomain), owner...)
	n := len(buf)
	buf = append(buf, make([]byte, 8)...)
	for i := uint64(0); ; i++ {
		if i%mintCheckEvery == 0 && i > 0 {
			if tried != nil {
				tried.Store(i)
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		binary.BigEndian.PutUint64(buf[n:], i)
		if leadingZeros(sha256.Sum256(buf)) >= d {
			if tried != nil {
				tried.Store(i + 1)
			}
			return append([]byte(nil), buf[n:]...), nil
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

// loadStamp returns the node's stamp from the store, or nil when there is
// none for this identity and difficulty (Start then mints one in the
// background: prepareStamp).
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
	return nil, nil
}

// prepareStamp mints this identity's stamp, stores it, and then sends out
// what waited for it: the open offers at once (not at the next
// re-announcement) and the matcher's proposals, which carry our own
// offer. It runs in the background from Start, so the node's API and web
// UI are up meanwhile and bookings can be made (they are kept, and shown
// as searching); Close cancels it, and the next start begins again.
func (s *Service) prepareStamp(ctx context.Context) {
	self := s.h.ID()
	s.log.Info("preparing this identity (one-time, a few seconds): offers go out once it is ready", "bits", s.cfg.StampBits)
	began := time.Now()
	nonce, err := mintStampCtx(ctx, self, s.cfg.StampBits, &s.stampTried)
	if err != nil {
		s.log.Debug("identity stamp not finished; the next start begins again", "tried", s.stampTried.Load())
		return
	}
	if err := s.db.put(stampKey, storedStamp{Peer: self.String(), Bits: s.cfg.StampBits, Nonce: nonce}); err != nil {
		// It works until the node stops; the next start mints again.
		s.log.Error("saving identity stamp", "err", err)
	}
	s.at("stamp-ready")
	s.stamp.Store(&nonce)
	s.log.Info("identity ready: announcing open offers", "took", time.Since(began).Round(time.Millisecond))
	if s.cfg.OnStamp != nil {
		s.cfg.OnStamp()
	}
	s.announceUnannounced(ctx)
	s.wake()
}

// announceUnannounced announces the open offers that never went out
// (they waited for the stamp). One that a Book racing the mint already
// announced is left to the re-announcement schedule.
func (s *Service) announceUnannounced(ctx context.Context) {
	var open []Booking
	s.mu.Lock()
	for _, b := range s.bookings {
		if _, done := s.announced[b.ID]; b.State == StateSearching && !done && !s.booking[b.ID] {
			open = append(open, *b)
		}
	}
	s.mu.Unlock()
	for _, b := range open {
		s.announce(ctx, b)
	}
}

// ownStamp is this identity's stamp, or nil while it is being minted.
func (s *Service) ownStamp() []byte {
	if p := s.stamp.Load(); p != nil {
		return *p
	}
	return nil
}

// StampStatus says whether the node's identity stamp is ready.
type StampStatus struct {
	Ready bool
	Bits  int
	// Tried is how many hashes the mint has tried so far (0 once
	// ready from the store); finding a stamp takes 2^Bits on average.
	Tried uint64
}

// Progress is the share of the expected work done while minting, below 1:
// finding a stamp is luck, so the mint may end before 1 or run past it
// (shown as 0.99 then).
func (st StampStatus) Progress() float64 {
	if st.Ready {
		return 1
	}
	return min(float64(st.Tried)/math.Exp2(float64(st.Bits)), 0.99)
}

// Stamp says whether this node's identity stamp is ready, and how far the
// mint has got when it is not. Offers and proposals wait for it.
func (s *Service) Stamp() StampStatus {
	return StampStatus{Ready: s.stamp.Load() != nil, Bits: s.cfg.StampBits, Tried: s.stampTried.Load()}
}
