// Package sybil is a stranger on the Tandem network, written from
// docs/protocol.md alone: identities that pay their stamp, offers sealed
// as the protocol says, board pulls and proposals spoken by hand. It
// shares no code with the matcher (package matchmaking), so what it does
// is what anyone who read the document could do. Benchmarks
// (`tandem bench swarm --sybils`) and the black-box cost tests use it;
// the daemon never does.
package sybil

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/bits"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Wire constants from docs/protocol.md.
const (
	offerDomain   = "tandem-offer"
	offerCodec    = "/tandem/offer/1"
	stampDomain   = "tandem-stamp/1"
	protoVersion  = 1
	matchProtocol = "/tandem/match/1.0.0"
	boardProtoV2  = "/tandem/board/2.0.0"
	maxBoardReply = 1 << 20
	maxMatchMsg   = 4 << 10
)

// Identity is one attacker identity: a key and its paid stamp.
type Identity struct {
	Key   crypto.PrivKey
	ID    peer.ID
	Stamp []byte
}

// NewIdentity makes a fresh identity and pays its stamp at difficulty
// bits (2^bits hashes on average).
func NewIdentity(bits int) (*Identity, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return &Identity{Key: k, ID: id, Stamp: Stamp(id, bits)}, nil
}

// Stamp finds a nonce such that SHA-256("tandem-stamp/1" || id || nonce)
// starts with bits zero bits.
func Stamp(id peer.ID, d int) []byte {
	buf := append([]byte(stampDomain), id...)
	n := len(buf)
	buf = append(buf, make([]byte, 8)...)
	for i := uint64(0); ; i++ {
		binary.BigEndian.PutUint64(buf[n:], i)
		h := sha256.Sum256(buf)
		z := 0
		for _, b := range h {
			if b != 0 {
				z += bits.LeadingZeros8(b)
				break
			}
			z += 8
		}
		if z >= d {
			return append([]byte(nil), buf[n:]...)
		}
	}
}

// offerRecord is the signed envelope's payload: an Offer.
type offerRecord struct{ o *pb.Offer }

func (r *offerRecord) Domain() string                 { return offerDomain }
func (r *offerRecord) Codec() []byte                  { return []byte(offerCodec) }
func (r *offerRecord) MarshalRecord() ([]byte, error) { return proto.Marshal(r.o) }
func (r *offerRecord) UnmarshalRecord(b []byte) error {
	r.o = &pb.Offer{}
	return proto.Unmarshal(b, r.o)
}

// Seal signs o as id's offer (it sets the version, owner and stamp).
func (id *Identity) Seal(o *pb.Offer) ([]byte, error) {
	o = proto.Clone(o).(*pb.Offer)
	o.Version, o.Owner, o.Stamp = protoVersion, []byte(id.ID), id.Stamp
	env, err := record.Seal(&offerRecord{o}, id.Key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// Open returns the offer in a signed envelope and its signer, checking
// the signature only.
func Open(env []byte) (*pb.Offer, peer.ID, error) {
	e, err := record.ConsumeTypedEnvelope(env, &offerRecord{})
	if err != nil {
		return nil, "", err
	}
	rec := &offerRecord{}
	if err := rec.UnmarshalRecord(e.RawPayload); err != nil {
		return nil, "", err
	}
	owner, err := peer.IDFromPublicKey(e.PublicKey)
	if err != nil {
		return nil, "", err
	}
	return rec.o, owner, nil
}

// PullBoard asks p for its board of topics (board sync, version 2) and
// returns the envelopes and the reply's size in bytes.
func PullBoard(ctx context.Context, h host.Host, p peer.ID, topics []string) ([][]byte, int, error) {
	st, err := h.NewStream(ctx, p, protocol.ID(boardProtoV2))
	if err != nil {
		return nil, 0, err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if _, err := protodelim.MarshalTo(st, &pb.BoardRequest{Version: protoVersion, Topics: topics}); err != nil {
		return nil, 0, err
	}
	st.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxBoardReply}).UnmarshalFrom(bufio.NewReader(st), resp); err != nil {
		return nil, 0, err
	}
	return resp.GetEnvelopes(), proto.Size(resp), nil
}

func writeMsg(w io.Writer, m *pb.MatchMessage) error {
	m.Version = protoVersion
	_, err := protodelim.MarshalTo(w, m)
	return err
}

func readMsg(r *bufio.Reader) (*pb.MatchMessage, error) {
	m := &pb.MatchMessage{}
	return m, (protodelim.UnmarshalOptions{MaxSize: maxMatchMsg}).UnmarshalFrom(r, m)
}

// Hold proposes to target (an open offer of victim's) from h, whose
// identity is id, carrying a matching offer of id's own, and if the
// victim accepts never confirms: the stream stays open until ctx ends.
// It reports whether the victim accepted.
func (id *Identity) Hold(ctx context.Context, h host.Host, victim peer.AddrInfo, target *pb.Offer, expiresUnix int64, seq uint64) (bool, error) {
	if err := h.Connect(ctx, victim); err != nil {
		return false, err
	}
	st, err := h.NewStream(ctx, victim.ID, protocol.ID(matchProtocol))
	if err != nil {
		return false, err
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	booking := "hold-" + target.GetBookingId()
	if len(booking) > 64 {
		booking = booking[:64]
	}
	own, err := id.Seal(&pb.Offer{
		BookingId: booking, StartUnix: target.GetStartUnix(), DurationMin: target.GetDurationMin(),
		Kind: target.GetKind(), Activity: target.GetActivity(), Quiet: target.GetQuiet(),
		Name: "sybil", ExpiresUnix: expiresUnix, Seq: seq,
	})
	if err != nil {
		st.Reset()
		return false, err
	}
	err = writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: booking, ToBooking: target.GetBookingId(), StartUnix: target.GetStartUnix(),
		DurationMin: target.GetDurationMin(), Kind: target.GetKind(), Activity: target.GetActivity(),
		Quiet: target.GetQuiet(), Name: "sybil", Offer: own,
	}}})
	if err != nil {
		st.Reset()
		return false, err
	}
	reply, err := readMsg(bufio.NewReader(st))
	if err != nil {
		st.Reset()
		return false, err
	}
	if reply.GetAccept() == nil {
		st.Reset()
		return false, nil
	}
	go func() { <-ctx.Done(); st.Reset() }()
	return true, nil
}

// Silent makes h an identity that never answers a proposal: it takes the
// stream and says nothing until the proposer gives up.
func Silent(h host.Host) {
	h.SetStreamHandler(protocol.ID(matchProtocol), func(s network.Stream) {
		io.Copy(io.Discard, s)
		s.Reset()
	})
}
