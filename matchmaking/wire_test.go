package matchmaking

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/encoding/protodelim"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

func mustKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func validOffer(owner peer.ID, now time.Time) *pb.Offer {
	return &pb.Offer{
		Version: protoVersion, Owner: []byte(owner), BookingId: "b1",
		StartUnix: now.Truncate(Grid).Add(2 * Grid).Unix(), DurationMin: 50,
		Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_DESK,
		Name: "Ada", ExpiresUnix: now.Add(time.Minute).Unix(), Seq: 1,
		Stamp: mintStamp(owner, testStampBits),
	}
}

func TestOpenOfferChecksEverything(t *testing.T) {
	now := time.Now()
	key, id := mustKey(t)
	otherKey, _ := mustKey(t)
	seal := func(o *pb.Offer, k crypto.PrivKey) []byte {
		env, err := sealOffer(o, k)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	good := seal(validOffer(id, now), key)
	if _, owner, err := openOffer(good, now); err != nil || owner != id {
		t.Fatalf("valid offer: %v %v", owner, err)
	}
	mutate := func(f func(*pb.Offer)) []byte {
		o := validOffer(id, now)
		f(o)
		return seal(o, key)
	}
	bad := map[string][]byte{
		"garbage":       []byte("not an envelope"),
		"forged owner":  seal(validOffer(id, now), otherKey),
		"misaligned":    mutate(func(o *pb.Offer) { o.StartUnix += 60 }),
		"too far":       mutate(func(o *pb.Offer) { o.StartUnix = now.Add(20 * 24 * time.Hour).Truncate(Grid).Unix() }),
		"duration":      mutate(func(o *pb.Offer) { o.DurationMin = 40 }),
		"version":       mutate(func(o *pb.Offer) { o.Version = 9 }),
		"no booking id": mutate(func(o *pb.Offer) { o.BookingId = "" }),
		"kind":          mutate(func(o *pb.Offer) { o.Kind = pb.Kind(7) }),
		"activity":      mutate(func(o *pb.Offer) { o.Activity = pb.Activity_ACTIVITY_UNSPECIFIED }),
		"oversized":     mutate(func(o *pb.Offer) { o.Name = strings.Repeat("n", 3000) }),
		"long name":     mutate(func(o *pb.Offer) { o.Name = strings.Repeat("n", MaxNameLen+1) }),
		"escape name":   mutate(func(o *pb.Offer) { o.Name = "\x1b[2J\x1b[31mAda" }),
		"bell name":     mutate(func(o *pb.Offer) { o.Name = "Ada\a" }),
		"newline name":  mutate(func(o *pb.Offer) { o.Name = "Ada\nBo" }),
		"bidi name":     mutate(func(o *pb.Offer) { o.Name = "Ada\u202egnp" }),
		"expiry":        mutate(func(o *pb.Offer) { o.ExpiresUnix = now.Add(48 * time.Hour).Unix() }),
		"bad addr":      mutate(func(o *pb.Offer) { o.Addrs = [][]byte{{0xff, 0xff}} }),
		"bad with":      mutate(func(o *pb.Offer) { o.With = []byte{1, 2, 3} }),
	}
	// Gossip skips the envelope signature (gossipsub checked the author's)
	// but checks everything else, and that the author is the owner.
	gossip := func(data []byte, now time.Time) error {
		_, err := openGossipOffer(data, now, id)
		return err
	}
	if err := gossip(good, now); err != nil {
		t.Fatalf("valid gossip offer: %v", err)
	}
	_, otherID := mustKey(t)
	if _, err := openGossipOffer(good, now, otherID); err == nil {
		t.Errorf("an offer relayed on gossip by someone else than its owner was accepted")
	}
	for name, data := range bad {
		if _, _, err := openOffer(data, now); err == nil {
			t.Errorf("%s: accepted", name)
		} else if errors.As(err, new(errStale)) {
			t.Errorf("%s: classed as stale, want rejected: %v", name, err)
		}
		if err := gossip(data, now); err == nil {
			t.Errorf("%s: accepted on gossip", name)
		} else if errors.As(err, new(errStale)) {
			t.Errorf("%s: classed as stale on gossip, want rejected: %v", name, err)
		}
	}
	stale := map[string][]byte{
		"past":    mutate(func(o *pb.Offer) { o.StartUnix = now.Add(-time.Hour).Truncate(Grid).Unix() }),
		"expired": mutate(func(o *pb.Offer) { o.ExpiresUnix = now.Add(-peerSlack - time.Second).Unix() }),
	}
	for name, data := range stale {
		if _, _, err := openOffer(data, now); !errors.As(err, new(errStale)) {
			t.Errorf("%s: err = %v, want stale", name, err)
		}
		if err := gossip(data, now); !errors.As(err, new(errStale)) {
			t.Errorf("%s: err = %v on gossip, want stale", name, err)
		}
	}
}

// A fresh offer made on a clock MaxClockSkew ahead of or behind ours is
// accepted, scheduled or "now" alike.
func TestOfferFromSkewedClock(t *testing.T) {
	now := time.Now()
	key, id := mustKey(t)
	for _, skew := range []time.Duration{MaxClockSkew, -MaxClockSkew} {
		theirs := now.Add(skew)
		sched := validOffer(id, theirs)
		sched.StartUnix = now.Truncate(Grid).Add(4 * Grid).Unix()
		sched.ExpiresUnix = theirs.Add(90 * time.Second).Unix()
		focus := validOffer(id, theirs)
		focus.Kind, focus.StartUnix = pb.Kind_KIND_NOW, theirs.Unix()
		focus.ExpiresUnix = theirs.Add(90 * time.Second).Unix()
		for name, o := range map[string]*pb.Offer{"scheduled": sched, "now": focus} {
			env, err := sealOffer(o, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := openOffer(env, now); err != nil {
				t.Errorf("%s offer from a clock %v off: %v", name, skew, err)
			}
			if _, err := openGossipOffer(env, now, id); err != nil {
				t.Errorf("%s offer by gossip from a clock %v off: %v", name, skew, err)
			}
		}
	}
}

// A rogue peer floods bad records and bad stream frames; the victim keeps
// its bookings and still matches an honest peer.
func TestBadPeerDoesNotDisturbNode(t *testing.T) {
	victim, honest := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, victim, honest)

	rkey, rid := mustKey(t)
	rogue, err := libp2p.New(libp2p.Identity(rkey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rps, err := pubsub.NewGossipSub(ctx, rogue, pubsub.WithFloodPublish(true))
	if err != nil {
		t.Fatal(err)
	}
	victim.view()
	topic, err := rps.Join(shardOfOffer(validOffer(rid, time.Now())).Topic())
	if err != nil {
		t.Fatal(err)
	}
	connect(t, &testNode{h: rogue}, victim)
	slot := nextSlot(7 * time.Hour)
	bv := victim.book(t, BookRequest{At: slot, DurationMin: 25})

	now := time.Now()
	forged := validOffer(honest.id(), now) // claims to be honest's, signed by rogue
	forgedEnv, _ := record.Seal(&offerRecord{offer: forged}, rkey)
	forgedBytes, _ := forgedEnv.Marshal()
	misaligned := validOffer(rid, now)
	misaligned.StartUnix += 120
	misBytes, _ := sealOffer(misaligned, rkey)
	waitFor(t, 5*time.Second, "rogue in topic", func() bool { return len(topic.ListPeers()) > 0 })
	for _, msg := range [][]byte{[]byte("garbage"), forgedBytes, misBytes, bytes.Repeat([]byte{1}, 5000)} {
		if err := topic.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Bad frames on both stream protocols.
	for _, proto := range []protocol.ID{MatchProtocol, BoardProtocol} {
		st, err := rogue.NewStream(ctx, victim.id(), proto)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3})
		st.Close()
	}
	// A well-formed proposal for a booking that does not match.
	reply := roundTripRaw(t, rogue, victim.id(), &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: "x", ToBooking: bv.ID, StartUnix: slot.Add(Grid).Unix(), DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING,
	}}})
	if reply.GetReject() == nil {
		t.Fatalf("mismatched proposal answered %v", reply)
	}
	// A Confirm for a match that was never proposed.
	reply = roundTripRaw(t, rogue, victim.id(), &pb.MatchMessage{Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{FromBooking: "x", ToBooking: bv.ID}}})
	if reply.GetReject() == nil {
		t.Fatalf("unproposed confirm answered %v", reply)
	}

	bh := honest.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "victim matched with honest peer", func() bool {
		return victim.booking(bv.ID).Confirmed && honest.booking(bh.ID).Confirmed
	})
	if p := victim.booking(bv.ID).Partner; p != honest.id().String() {
		t.Fatalf("victim matched %s", p)
	}
	for _, o := range victim.svc.board.open(time.Now()) {
		if o.owner == rid || (o.owner == honest.id() && o.offer.GetBookingId() == "b1") {
			t.Fatalf("bad record on the board: %+v", o.offer)
		}
	}
}

func roundTripRaw(t *testing.T, h interface {
	NewStream(context.Context, peer.ID, ...protocol.ID) (network.Stream, error)
}, to peer.ID, m *pb.MatchMessage) *pb.MatchMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	st, err := h.NewStream(ctx, to, MatchProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := writeMsg(st, m); err != nil {
		t.Fatal(err)
	}
	reply, err := readMsg(bufio.NewReader(st))
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// Fuzz targets: every wire decoder. `go test` runs the seeds; `go test
// -fuzz=FuzzOpenOffer ./matchmaking` explores.

func FuzzOpenOffer(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, id := mustKey(f)
	good, _ := sealOffer(validOffer(id, now), key)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if g, err := openGossipOffer(data, now, id); err == nil && (peer.ID(g.GetOwner()) != id || checkOffer(g, now) != nil) {
			t.Fatalf("gossip accepted an offer that fails its own checks: %v", g)
		}
		o, owner, err := openOffer(data, now)
		if err != nil {
			return
		}
		// Whatever opens must be signed by its owner and re-check clean.
		if peer.ID(o.GetOwner()) != owner || checkOffer(o, now) != nil {
			t.Fatalf("accepted an offer that fails its own checks: %v", o)
		}
	})
}

// FuzzNeedlessRefresh: the gossip gate decodes what peers send before
// anything is checked. Whatever it calls needless must be, byte for byte
// but seq and expiry, the record the board holds.
func FuzzNeedlessRefresh(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, id := mustKey(f)
	stored := validOffer(id, now)
	s := &Service{board: newBoard()}
	s.board.admit(stored, id, nil, now, 0, id)
	s.board.tookOn(id, stored.GetBookingId(), "t")
	s.board.markSoon(id, stored.GetBookingId(), stored.GetSeq())
	refresh := proto.Clone(stored).(*pb.Offer)
	refresh.Seq++
	good, _ := sealOffer(refresh, key)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !s.needlessRefresh(data, id, "t", now) {
			return
		}
		o, ok := peekRecord(data)
		if !ok || o.GetSeq() <= stored.GetSeq() {
			t.Fatalf("needless: %v", o)
		}
		o.Seq, o.ExpiresUnix = stored.GetSeq(), stored.GetExpiresUnix()
		if !proto.Equal(o, stored) {
			t.Fatalf("called needless a record that differs from the stored one: %v", o)
		}
	})
}

func FuzzMatchMessage(f *testing.F) {
	n := newTestNode(f, nil)
	slot := nextSlot(time.Hour)
	b := n.book(f, BookRequest{At: slot, DurationMin: 25})
	_, remote := mustKey(f)
	for _, m := range []*pb.MatchMessage{
		{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{FromBooking: "x", ToBooking: b.ID, StartUnix: slot.Unix(), DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_DESK}}},
		{Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{FromBooking: "x", ToBooking: b.ID}}},
		{Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{FromBooking: "x", ToBooking: b.ID, Reason: "r"}}},
		{Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{FromBooking: "x", ToBooking: b.ID, Release: true}}},
	} {
		var buf bytes.Buffer
		writeMsg(&buf, m)
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readMsg(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		switch {
		case m.GetPropose() != nil:
			n.svc.tryHold(remote, m.GetPropose())
		case m.GetConfirm() != nil:
			n.svc.onConfirm(remote, m.GetConfirm(), false)
		case m.GetCancel() != nil:
			n.svc.onCancel(remote, m.GetCancel())
		}
		// Nothing a peer sends can create or drop a booking.
		if got := len(n.svc.Bookings()); got != 1 {
			t.Fatalf("bookings = %d", got)
		}
		n.svc.mu.Lock()
		clear(n.svc.holds)
		n.svc.mu.Unlock()
	})
}

func FuzzBoardResponse(f *testing.F) {
	n := newTestNode(f, nil)
	now := time.Now()
	key, id := mustKey(f)
	good, _ := sealOffer(validOffer(id, now), key)
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, &pb.BoardResponse{Envelopes: [][]byte{good, []byte("x")}})
	f.Add(buf.Bytes())
	buf.Reset()
	protodelim.MarshalTo(&buf, &pb.BoardResponse{Envelopes: [][]byte{good}, WithdrawnTtlS: []uint32{1<<32 - 1, 0, 90}})
	f.Add(buf.Bytes())
	buf.Reset()
	protodelim.MarshalTo(&buf, &pb.BoardResponse{WithdrawnTtlS: []uint32{30, 90}, WithdrawnTag: []uint32{0, 1<<32 - 1}})
	f.Add(buf.Bytes())
	f.Add([]byte{0x01, 0x0a})
	f.Fuzz(func(t *testing.T, data []byte) {
		resp := &pb.BoardResponse{}
		if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(bytes.NewReader(data)), resp); err != nil {
			return
		}
		var g goneClaims
		g.adopt(now, resp.GetWithdrawnTtlS(), resp.GetWithdrawnTag(), time.Minute)
		if c := len(g.claims); c > maxGoneClaims || slices.ContainsFunc(g.claims, func(c claim) bool { return c.expires.After(now.Add(time.Minute)) }) {
			t.Fatalf("%d claims taken, or one for longer than the offer lifetime", c)
		}
		n.svc.mergeBoard(resp.GetEnvelopes(), id)
		for _, e := range n.svc.board.open(time.Now()) {
			if checkOffer(e.offer, time.Now()) != nil {
				t.Fatalf("board holds an invalid offer")
			}
		}
	})
}

// TestMergeBoardSkipsKnownRecords: a sync skips records the board already
// has at the same or a newer seq without checking them (a forged copy of a
// known record changes nothing), and checks everything that could be news.
func TestMergeBoardSkipsKnownRecords(t *testing.T) {
	n := newTestNode(t, nil)
	n.view()
	now := time.Now()
	key, id := mustKey(t)
	o := validOffer(id, now)
	o.Seq = 10
	good, _ := sealOffer(o, key)
	if added, bad := n.svc.mergeBoard([][]byte{good}, id); added != 1 || bad != 0 {
		t.Fatalf("first merge: added %d bad %d", added, bad)
	}
	// A copy of the same record with a broken signature: known, skipped.
	broken := append([]byte(nil), good...)
	broken[len(broken)-1] ^= 0xff
	if added, bad := n.svc.mergeBoard([][]byte{good, broken}, id); added != 0 || bad != 0 {
		t.Fatalf("known records: added %d bad %d, want 0 0", added, bad)
	}
	// A newer seq could be news: it is checked, and a forgery is caught.
	o.Seq = 11
	newer, _ := sealOffer(o, key)
	forged := append([]byte(nil), newer...)
	forged[len(forged)-1] ^= 0xff
	if added, bad := n.svc.mergeBoard([][]byte{forged}, id); added != 0 || bad != 1 {
		t.Fatalf("forged newer record: added %d bad %d, want 0 1", added, bad)
	}
	if added, bad := n.svc.mergeBoard([][]byte{newer}, id); added != 1 || bad != 0 {
		t.Fatalf("newer record: added %d bad %d, want 1 0", added, bad)
	}
}

// Names and reasons in match messages follow the same text rules as
// offers: a message carrying an escape sequence, a line break or a bidi
// override is refused whole, before it can reach a booking.
func TestReadMsgChecksText(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen+1)
	for name, m := range map[string]*pb.MatchMessage{
		"propose name": {Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{FromBooking: "x", ToBooking: "y", Name: "\x1b[2J"}}},
		"propose long": {Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{FromBooking: "x", ToBooking: "y", Name: long}}},
		"accept name":  {Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: "Bo\u202e"}}},
		"accept long":  {Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: long}}},
		"confirm name": {Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{FromBooking: "x", ToBooking: "y", Name: "a\nb"}}},
		"cancel bell":  {Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{FromBooking: "x", ToBooking: "y", Reason: "sorry\a"}}},
		"reject ctl":   {Body: &pb.MatchMessage_Reject{Reject: &pb.Reject{Reason: "busy\x1b[m"}}},
	} {
		var buf bytes.Buffer
		if err := writeMsg(&buf, m); err != nil {
			t.Fatal(err)
		}
		if got, err := readMsg(bufio.NewReader(&buf)); err == nil {
			t.Errorf("%s: accepted %v", name, got)
		}
	}
	var buf bytes.Buffer
	writeMsg(&buf, &pb.MatchMessage{Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: "Zoë 🚀"}}})
	if _, err := readMsg(bufio.NewReader(&buf)); err != nil {
		t.Errorf("a clean name refused: %v", err)
	}
}

// An offer refused for its content is not dropped in silence: the node
// says at info level whose offer it refused and why (rate-limited), and
// counts every refusal.
func TestRefusedOfferIsLogged(t *testing.T) {
	logs := &syncLog{}
	victim := newTestNode(t, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	rkey, rid := mustKey(t)
	rogue, err := libp2p.New(libp2p.Identity(rkey), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rps, err := pubsub.NewGossipSub(ctx, rogue, pubsub.WithFloodPublish(true))
	if err != nil {
		t.Fatal(err)
	}
	victim.view()
	topic, err := rps.Join(shardOfOffer(validOffer(rid, time.Now())).Topic())
	if err != nil {
		t.Fatal(err)
	}
	connect(t, &testNode{h: rogue}, victim)
	waitFor(t, 5*time.Second, "rogue in topic", func() bool { return len(topic.ListPeers()) > 0 })
	for i := range 3 {
		o := validOffer(rid, time.Now())
		o.BookingId = fmt.Sprintf("b%d", i)
		o.Name = strings.Repeat("x", 80)
		env, _ := sealOffer(o, rkey)
		if err := topic.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the refusals to be counted", func() bool { return victim.svc.RefusedOffers() == 3 })
	out := logs.String()
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, rid.String()) ||
		!strings.Contains(out, "name is 80 bytes, at most 64") {
		t.Fatalf("no info line naming the peer and the reason:\n%s", out)
	}
	if n := strings.Count(out, "refusing offer"); n != 1 {
		t.Errorf("%d log lines for 3 refusals within a minute, want 1 (rate-limited):\n%s", n, out)
	}
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A display name stored before the text rules (an escape sequence, or over
// 64 bytes) would make every peer refuse this node's offers: at start the
// node cleans it, keeps the clean copy and says so.
func TestStoredBadNameIsCleaned(t *testing.T) {
	logs := &syncLog{}
	n := newTestNode(t, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	n.stop()
	db, err := badger.Open(badger.DefaultOptions(n.dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := (dbOf(db)).put(profileKey, profile{Name: "\x1b[31mAda\u202e" + strings.Repeat("x", 80)}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	n.start()
	want := ("[31mAda" + strings.Repeat("x", 80))[:MaxNameLen]
	if got := n.svc.Name(); got != want {
		t.Fatalf("name after start = %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), "cleaned copy") {
		t.Errorf("no warning about the cleaned name:\n%s", logs)
	}
	slot := nextSlot(2 * time.Hour)
	b := n.book(t, BookRequest{At: slot, DurationMin: 25})
	if _, _, err := openOffer(mustSeal(t, n.svc.offerFor(b, time.Now()), n.key), time.Now()); err != nil {
		t.Errorf("the node's own offer is refused: %v", err)
	}
}

func dbOf(d *badger.DB) db { return db{bdb: d, failWrites: new(atomic.Bool)} }

func mustSeal(t *testing.T, o *pb.Offer, k crypto.PrivKey) []byte {
	t.Helper()
	env, err := sealOffer(o, k)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
