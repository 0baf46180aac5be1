package matchmaking

// Attacks from docs/protocol.md's threat model, each run by a stranger
// that speaks the wire protocol from the document alone: a real libp2p
// host on loopback with its own gossipsub and no Tandem validator, which
// can sign offers for as many identities as it likes.

import (
	"bufio"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// attacker is a bare host: gossipsub joined to the offers topic with no
// validator of ours, and the wire protocol spoken by hand.
type attacker struct {
	t     testing.TB
	key   crypto.PrivKey
	h     host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	ctx   context.Context
}

func newAttacker(t testing.TB) *attacker {
	t.Helper()
	key, _ := mustKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); h.Close() })
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(OffersTopic)
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, key: key, h: h, ps: ps, topic: topic, ctx: ctx}
}

func (a *attacker) id() peer.ID { return a.h.ID() }

// connect links the attacker to n and waits until n sees it on the topic.
func (a *attacker) connect(n *testNode) {
	a.t.Helper()
	connect(a.t, &testNode{h: a.h}, n)
	waitFor(a.t, 5*time.Second, "attacker on the topic", func() bool {
		for _, p := range a.topic.ListPeers() {
			if p == n.id() {
				return true
			}
		}
		return false
	})
}

// publishAs publishes data on the offers topic as author key (gossipsub
// signs the message with it; the attacker needs no host per identity).
func (a *attacker) publishAs(key crypto.PrivKey, data []byte) {
	a.t.Helper()
	id, _ := peer.IDFromPrivateKey(key)
	if err := a.topic.Publish(a.ctx, data, pubsub.WithSecretKeyAndPeerId(key, id)); err != nil {
		a.t.Fatal(err)
	}
}

// pullBoard runs a board request against n and returns the envelopes and
// the reply's size in bytes (0 envelopes and an error if n refused).
func (a *attacker) pullBoard(n peer.ID, version uint32) ([][]byte, int, error) {
	ctx, cancel := context.WithTimeout(a.ctx, deadline(5*time.Second))
	defer cancel()
	st, err := a.h.NewStream(ctx, n, BoardProtocol)
	if err != nil {
		return nil, 0, err
	}
	defer st.Close()
	if _, err := protodelim.MarshalTo(st, &pb.BoardRequest{Version: version}); err != nil {
		return nil, 0, err
	}
	st.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(st), resp); err != nil {
		return nil, 0, err
	}
	return resp.GetEnvelopes(), proto.Size(resp), nil
}

// roundTrip sends one match message to n and reads the answer.
func (a *attacker) roundTrip(n peer.ID, m *pb.MatchMessage) *pb.MatchMessage {
	a.t.Helper()
	return roundTripRaw(a.t.(*testing.T), a.h, n, m)
}

// breakSignature returns env with its signature altered.
func breakSignature(t testing.TB, env []byte) []byte {
	t.Helper()
	var e recordpb.Envelope
	if err := proto.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	e.Signature[len(e.Signature)-1] ^= 0xff
	out, err := proto.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An envelope whose own signature is broken, published by gossip under a
// valid gossipsub signature of its owner, is never stored and never
// re-served by board sync (before: gossip skipped the envelope's
// signature, so the victim stored it and served it to every new node).
func TestAttackBadSignatureEnvelope(t *testing.T) {
	victim := newTestNode(t, nil)
	a := newAttacker(t)
	a.connect(victim)
	now := time.Now()
	bad := validOffer(a.id(), now)
	bad.BookingId = "bad-signature"
	env, err := sealOffer(bad, a.key)
	if err != nil {
		t.Fatal(err)
	}
	a.publishAs(a.key, breakSignature(t, env))
	// A good offer published after it: once it is on the board, the bad
	// one has been judged.
	good := validOffer(a.id(), now)
	good.BookingId = "good"
	genv, _ := sealOffer(good, a.key)
	a.publishAs(a.key, genv)
	waitFor(t, 5*time.Second, "the good offer on the board", func() bool { return victim.svc.board.get(a.id(), "good") != nil })
	if victim.svc.board.get(a.id(), "bad-signature") != nil {
		t.Fatal("an envelope with a broken signature was stored")
	}
	envs, _, err := a.pullBoard(victim.id(), protoVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		if _, _, err := openOffer(e, time.Now()); err != nil {
			t.Fatalf("board sync re-served a record that does not verify: %v", err)
		}
	}
}

// A Cancel from a third party for someone else's match is refused, not
// acknowledged, and changes nothing.
func TestAttackThirdPartyCancelRefused(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	slot := nextSlot(3 * time.Hour)
	ba, bb := a.book(t, BookRequest{At: slot, DurationMin: 25}), b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a match", func() bool { return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed })
	evil := newAttacker(t)
	connect(t, &testNode{h: evil.h}, b)
	reply := evil.roundTrip(b.id(), &pb.MatchMessage{Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{
		FromBooking: ba.ID, ToBooking: bb.ID, Reason: "gotcha",
	}}})
	if reply.GetReject() == nil {
		t.Fatalf("a third party's Cancel was answered %v, want a refusal", reply)
	}
	if got := b.booking(bb.ID); got.State != StateMatched || got.Partner != a.id().String() {
		t.Fatalf("the third party's Cancel changed the booking: %+v", got)
	}
}

// A board request of another version is refused.
func TestAttackBoardRequestVersion(t *testing.T) {
	victim, other := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, victim, other)
	other.book(t, BookRequest{At: nextSlot(2 * time.Hour), DurationMin: 25})
	waitFor(t, 10*time.Second, "the offer on the victim's board", func() bool { return len(victim.svc.board.open(time.Now())) == 1 })
	a := newAttacker(t)
	connect(t, &testNode{h: a.h}, victim)
	if envs, _, err := a.pullBoard(victim.id(), protoVersion); err != nil || len(envs) == 0 {
		t.Fatalf("version %d request: %d envelopes, err %v", protoVersion, len(envs), err)
	}
	if envs, _, err := a.pullBoard(victim.id(), protoVersion+1); err == nil || len(envs) > 0 {
		t.Fatalf("version %d request answered with %d envelopes", protoVersion+1, len(envs))
	}
}

// The per-author rate limiter keeps limiting an author however many others
// it tracks (before: at 10,000 authors it forgot everyone, so a flood of
// fresh identities reset every bucket).
func TestAttackRateLimiterRemembers(t *testing.T) {
	r := newRateLimiter(20, 2)
	now := time.Now()
	_, first := mustKey(t)
	for range 20 {
		r.allow(first, now)
	}
	if r.allow(first, now) {
		t.Fatal("burst not enforced")
	}
	for i := range maxRateBuckets + 10 {
		r.allow(peer.ID(fmt.Sprintf("sybil-%d", i)), now)
	}
	if r.allow(first, now) {
		t.Fatal("the limiter forgot an author over its burst after a flood of new authors")
	}
	// Buckets that have refilled carry nothing and make room.
	later := now.Add(time.Minute)
	if !r.allow(peer.ID("newcomer"), later) {
		t.Fatal("a new author is refused once old buckets have refilled")
	}
}

// fillBoard puts owners x perOwner valid offers on n's board (as a board
// sync would) and returns the keys used.
func fillBoard(t testing.TB, n *testNode, owners, perOwner int) []crypto.PrivKey {
	t.Helper()
	now := time.Now()
	var keys []crypto.PrivKey
	var envs [][]byte
	for range owners {
		k, id := mustKey(t)
		keys = append(keys, k)
		for j := range perOwner {
			o := validOffer(id, now)
			o.BookingId = fmt.Sprintf("b%d", j)
			o.StartUnix += int64(j) * int64(Grid/time.Second)
			o.Name = "filler filler filler filler filler filler filler filler"
			env, err := sealOffer(o, k)
			if err != nil {
				t.Fatal(err)
			}
			envs = append(envs, env)
		}
	}
	for i := 0; i < len(envs); i += 200 {
		// Each batch as if from its owner's first key: a forwarder quota
		// must not get in the way of filling.
		_, from := mustKey(t)
		n.svc.mergeBoard(envs[i:min(i+200, len(envs))], from)
	}
	return keys
}

// Board sync amplification: a requester asking again and again receives
// at most its per-minute byte budget (before: a full board, up to 1 MiB,
// per 64-byte request, without limit).
func TestAttackBoardSyncAmplification(t *testing.T) {
	victim := newTestNode(t, nil)
	fillBoard(t, victim, 200, 10)
	if got := len(victim.svc.board.open(time.Now())); got < 1500 {
		t.Fatalf("board holds %d offers, want the 2000 filled", got)
	}
	a := newAttacker(t)
	connect(t, &testNode{h: a.h}, victim)
	total, answered := 0, 0
	for range 10 {
		if _, n, err := a.pullBoard(victim.id(), protoVersion); err == nil {
			total += n
			answered++
		}
	}
	t.Logf("10 requests: %d answered, %d bytes", answered, total)
	if answered == 0 {
		t.Fatal("no request answered at all")
	}
	// The budget refills at syncBytesPerPeer a minute; the loop takes
	// seconds at most, so allow a tenth more.
	if limit := syncBytesPerPeer * 11 / 10; total > limit {
		t.Fatalf("one requester received %d bytes in 10 requests, more than its budget %d", total, limit)
	}
}
