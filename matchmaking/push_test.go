package matchmaking

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// relayOnly is a connection gater that lets the peers in it reach each
// other only through a circuit relay, as two symmetric NATs would: every
// direct connection to one of them is refused, dialled or accepted.
type relayOnly struct {
	mu    sync.Mutex
	peers map[peer.ID]bool
}

func (g *relayOnly) add(ps ...peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range ps {
		g.peers[p] = true
	}
}

func (g *relayOnly) allowed(p peer.ID, addr ma.Multiaddr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.peers[p] {
		return true
	}
	_, err := addr.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func (g *relayOnly) InterceptPeerDial(peer.ID) bool                   { return true }
func (g *relayOnly) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool { return g.allowed(p, a) }
func (g *relayOnly) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *relayOnly) InterceptSecured(_ network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return g.allowed(p, c.RemoteMultiaddr())
}
func (g *relayOnly) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// relayedPair is two nodes that reach each other only through a circuit
// relay on loopback (b holds a reservation on it), both on clk.
type relayedPair struct {
	a, b   *testNode
	relay  host.Host
	la, lb *offerLog
	// pullsA counts a's completed rounds of relayed pulls.
	pullsA atomic.Int32
}

func newRelayedPair(t *testing.T, clk *testClock) *relayedPair {
	t.Helper()
	relay, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	// The relay's default limits (2 minutes, 128 KiB per relayed
	// connection), as on the internet.
	r, err := relayv2.New(relay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	gate := &relayOnly{peers: map[peer.ID]bool{}}
	p := &relayedPair{relay: relay, la: &offerLog{}, lb: &offerLog{}}
	node := func(log *offerLog, hook func(string)) *testNode {
		key, id := mustKey(t)
		gate.add(id)
		return startTestNode(&testNode{t: t, key: key, dir: t.TempDir(), hook: hook,
			hostOpts: []libp2p.Option{libp2p.ConnectionGater(gate)},
			tune:     func(c *Config) { c.Now, c.OnOffer = clk.now, log.add }})
	}
	p.a = node(p.la, func(point string) {
		if point == "relayed pull done" {
			p.pullsA.Add(1)
		}
	})
	p.b = node(p.lb, nil)
	ctx, cancel := context.WithTimeout(context.Background(), deadline(10*time.Second))
	defer cancel()
	if _, err := client.Reserve(ctx, p.b.h, peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}); err != nil {
		t.Fatalf("reserving a slot on the relay: %v", err)
	}
	return p
}

// connect dials b from a through the relay and waits until each has
// identified the other over that connection.
func (p *relayedPair) connect(t *testing.T) {
	t.Helper()
	circuit, err := ma.NewMultiaddr(p.relay.Addrs()[0].String() + "/p2p/" + p.relay.ID().String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline(10*time.Second))
	defer cancel()
	if err := p.a.h.Connect(network.WithAllowLimitedConn(ctx, "test"), peer.AddrInfo{ID: p.b.id(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatalf("connecting through the relay: %v", err)
	}
	waitFor(t, 10*time.Second, "both nodes to identify each other through the relay", func() bool {
		ab, _ := p.a.h.Peerstore().SupportsProtocols(p.b.id(), MatchProtocol)
		ba, _ := p.b.h.Peerstore().SupportsProtocols(p.a.id(), MatchProtocol)
		return len(ab) == 1 && len(ba) == 1
	})
	p.checkRelayed(t)
}

func (p *relayedPair) checkRelayed(t *testing.T) {
	t.Helper()
	if c := p.a.h.Network().Connectedness(p.b.id()); c != network.Limited {
		t.Fatalf("a's connection to b is %v, want limited (through the relay only)", c)
	}
}

// matched reports whether n's booking id is matched with partner.
func matchedWith(n *testNode, id string, partner *testNode) bool {
	b, err := n.svc.Booking(id)
	return err == nil && b.State == StateMatched && b.Partner == partner.id().String()
}

// Two nodes reached only through a relay learn each other's new offers
// without waiting for the relayed board pull: the node clock stands still,
// so no pull on its 5 s pace (nor any other timed pull or
// re-announcement) can happen, and they must still see each other's
// offers and match. The second booking reaches the first node by a push;
// the first reaches the second by the pull it makes when its booking
// opens (it was not on the shard when the first was announced). Before
// the pushes and immediate pulls they waited for the node clock.
func TestRelayedPeersLearnNewOffersAtOnce(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	p := newRelayedPair(t, clk)
	p.connect(t)
	ba := p.a.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	// a's pull when its booking opened has found nothing new on b; had it
	// run after b booked, it would have brought b's offer.
	waitFor(t, 10*time.Second, "a's pull when its booking opened", func() bool { return p.pullsA.Load() >= 1 })
	bb := p.b.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	got := p.la.wait(t, "a to get b's offer", func(e OfferEvent) bool { return e.BookingID == bb.ID })
	if got.Source != OfferPushed {
		t.Errorf("b's offer reached a by %s, want a push", got.Source)
	}
	p.lb.wait(t, "b to get a's offer", func(e OfferEvent) bool { return e.BookingID == ba.ID })
	waitFor(t, 20*time.Second, "a and b to match through the relay", func() bool {
		return matchedWith(p.a, ba.ID, p.b) && matchedWith(p.b, bb.ID, p.a)
	})
	p.checkRelayed(t)
}

// Two nodes that book first and only then reach each other through a
// relay pull each other's board as soon as they have identified each
// other, not at the next relayed pull (the node clock stands still).
func TestRelayedPeerPulledWhenItConnects(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	p := newRelayedPair(t, clk)
	ba := p.a.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	bb := p.b.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	p.connect(t)
	waitFor(t, 20*time.Second, "a and b to match through the relay", func() bool {
		return matchedWith(p.a, ba.ID, p.b) && matchedWith(p.b, bb.ID, p.a)
	})
	p.checkRelayed(t)
}

// A withdrawal reaches a peer reached only through a relay at once too:
// a cancelled offer leaves its board without the node clock moving.
func TestRelayedPeerLearnsWithdrawalAtOnce(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	p := newRelayedPair(t, clk)
	p.connect(t)
	at := nextSlot(3 * time.Hour)
	// Same slot, activities that cannot pair: both stay searching.
	ba := p.a.book(t, BookRequest{At: at, DurationMin: 50, Activity: ActivityDesk})
	p.b.book(t, BookRequest{At: at, DurationMin: 50, Activity: ActivityMoving})
	p.lb.wait(t, "b to get a's offer", func(e OfferEvent) bool { return e.BookingID == ba.ID && !e.Withdrawn })
	if _, err := p.a.svc.Cancel(context.Background(), ba.ID, ""); err != nil {
		t.Fatal(err)
	}
	got := p.lb.wait(t, "b to get a's withdrawal", func(e OfferEvent) bool { return e.BookingID == ba.ID && e.Withdrawn })
	if got.Source != OfferPushed {
		t.Errorf("the withdrawal reached b by %s, want a push", got.Source)
	}
	for _, o := range p.b.svc.Board(time.Time{}, time.Time{}) {
		if o.BookingID == ba.ID {
			t.Fatalf("b's board still lists a's cancelled offer")
		}
	}
}

// pushFrame is an OfferPush frame carrying env.
func pushFrame(version uint32, env []byte) []byte {
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, &pb.OfferPush{Version: version, Envelope: env})
	return buf.Bytes()
}

// pushRaw writes frame on a push stream from h to p and waits until p has
// handled it (closed or reset the stream).
func pushRaw(t *testing.T, h host.Host, p peer.ID, frame []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	st, err := h.NewStream(ctx, p, OfferPushProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(frame)
	st.CloseWrite()
	io.Copy(io.Discard, st) // until the receiver closes or resets it
}

// A pushed record is checked as a gossip message from the pusher: the
// pusher must own it (a record of anyone else, even well signed, is
// refused), a frame or envelope that does not decode is refused, each
// refusal is counted and changes nothing, and the pusher's rate limit
// (gossip's per-author bucket, burst 20) bounds what it gets onto the
// board. The node clock stands still, so the bucket never refills.
func TestPushIsCheckedLikeGossip(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	log := &offerLog{}
	n := newTestNode(t, func(c *Config) { c.Now, c.OnOffer = clk.now, log.add })
	n.view()
	rogue, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	if err := rogue.Connect(ctx, peer.AddrInfo{ID: n.id(), Addrs: n.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	rogueKey := rogue.Peerstore().PrivKey(rogue.ID())
	now := clk.now()
	otherKey, other := mustKey(t)
	foreign, err := sealOffer(validOffer(other, now), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	own := func(i int) []byte {
		o := validOffer(rogue.ID(), now)
		o.BookingId = "b" + string(rune('a'+i))
		env, err := sealOffer(o, rogueKey)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	// Refused, each counted: someone else's record, an envelope that
	// does not open, a frame of another version, a frame that does not
	// decode.
	pushRaw(t, rogue, n.id(), pushFrame(protoVersion, foreign))
	pushRaw(t, rogue, n.id(), pushFrame(protoVersion, []byte("not an envelope")))
	pushRaw(t, rogue, n.id(), pushFrame(2, own(0)))
	pushRaw(t, rogue, n.id(), []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	if got := n.svc.RefusedOffers(); got != 4 {
		t.Errorf("refused %d pushes, want 4", got)
	}
	if len(n.svc.Board(time.Time{}, time.Time{})) != 0 {
		t.Fatalf("a refused push put something on the board")
	}
	// The first two spent two of the 20 tokens of the rogue's bucket.
	for i := range 25 {
		pushRaw(t, rogue, n.id(), pushFrame(protoVersion, own(i)))
	}
	if got := len(n.svc.Board(time.Time{}, time.Time{})); got != 18 {
		t.Errorf("%d of 25 pushed records on the board, want 18 (the rate limit's burst of 20, less 2 spent)", got)
	}
	if got := n.svc.RefusedOffers(); got != 4 {
		t.Errorf("refused %d, want 4: records over the rate are dropped, not refused", got)
	}
	e := log.wait(t, "a pushed record on the board", func(e OfferEvent) bool { return e.Owner == rogue.ID() })
	if e.Source != OfferPushed {
		t.Errorf("source %s, want push", e.Source)
	}
}

// FuzzOfferPush: nothing a pusher sends puts an invalid record on the
// board, or a record of anyone but the pusher.
func FuzzOfferPush(f *testing.F) {
	n := newTestNode(f, nil)
	n.view()
	now := time.Now()
	key, id := mustKey(f)
	good, _ := sealOffer(validOffer(id, now), key)
	f.Add(pushFrame(protoVersion, good))
	f.Add(pushFrame(protoVersion, []byte("x")))
	f.Add([]byte{0x02, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := &pb.OfferPush{}
		if err := (protodelim.UnmarshalOptions{MaxSize: maxPushFrame}).UnmarshalFrom(bufio.NewReader(bytes.NewReader(data)), msg); err != nil {
			return
		}
		n.svc.takePush(id, msg)
		for _, e := range n.svc.board.open(time.Now()) {
			if e.owner != id || checkOffer(e.offer, time.Now()) != nil {
				t.Fatalf("board holds an invalid offer or one not of the pusher: %v", e.offer)
			}
		}
	})
}

// A private pair reached only through a relay matches at once too: the
// invited peer gets the offer pushed to it alone (in the clear, on the
// pair's own stream), or pulls it sealed when its booking opens; and it
// serves neither on.
func TestRelayedPrivatePairMatches(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	p := newRelayedPair(t, clk)
	p.connect(t)
	ba := p.a.book(t, BookRequest{Kind: KindNow, DurationMin: 25, With: p.b.id().String()})
	bb := p.b.book(t, BookRequest{Kind: KindNow, DurationMin: 25, With: p.a.id().String()})
	// Each gets the other's by a push or by the pull its booking's opening
	// makes, whichever comes first (the clock stands still: nothing else).
	p.la.wait(t, "a to get b's offer", func(e OfferEvent) bool { return e.BookingID == bb.ID })
	p.lb.wait(t, "b to get a's offer", func(e OfferEvent) bool { return e.BookingID == ba.ID })
	for _, n := range []*testNode{p.a, p.b} {
		for _, env := range n.svc.board.envelopes(n.svc.now(), time.Time{}, MaxBoardResponse, wantAll) {
			if o, ok := peekRecord(env); ok && len(o.GetWith()) > 0 {
				t.Fatalf("%s would serve the private offer of booking %s", n.id(), o.GetBookingId())
			}
		}
	}
	waitFor(t, 20*time.Second, "a and b to match through the relay", func() bool {
		return matchedWith(p.a, ba.ID, p.b) && matchedWith(p.b, bb.ID, p.a)
	})
	p.checkRelayed(t)
}

// A new offer goes straight to the owners of offers in its slot class that
// the node is directly connected to (the peers the class plan may pair it
// with), not by gossip alone, which a flood's validation backlog delayed
// (TestAttackGroundIDSybils). Before, only peers reached through a relay
// got pushes.
func TestNewOfferPushedToConnectedClassOwners(t *testing.T) {
	r := newSybils(t, 1)[0]
	var key crypto.PrivKey
	var id peer.ID
	for key == nil || id > r.id {
		key, id = mustKey(t) // p below r: p proposes, and its plan pushes nothing (TestPlanPartnerInvited)
	}
	p := startTestNode(&testNode{t: t, key: key, dir: t.TempDir()})
	slot, pushed := classOwnerListening(t, p, r)
	p.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 10*time.Second, "p's new offer pushed to r", func() bool { return pushed.Load() > 0 })
}

// classOwnerListening makes r, connected to p, the owner of an offer on
// p's board in a slot class p has not booked yet, and counts the open
// offers of p's that are pushed to r. It returns the slot.
func classOwnerListening(t *testing.T, p *testNode, r *sybil) (time.Time, *atomic.Int64) {
	t.Helper()
	a := newAttacker(t)
	a.connect(p)
	pushed := &atomic.Int64{}
	r.h.SetStreamHandler(OfferPushProtocol, func(st network.Stream) {
		defer st.Close()
		msg := &pb.OfferPush{}
		if err := (protodelim.UnmarshalOptions{MaxSize: maxPushFrame}).UnmarshalFrom(bufio.NewReader(st), msg); err == nil {
			if o, ok := peekRecord(msg.GetEnvelope()); ok && peer.ID(o.GetOwner()) == p.id() && !o.GetWithdrawn() {
				pushed.Add(1)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.h.Connect(ctx, peer.AddrInfo{ID: p.id(), Addrs: p.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	slot := nextSlot(3 * time.Hour)
	p.view() // on the slot's shard before it books
	target := &pb.Offer{StartUnix: slot.Unix(), DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING}
	a.publishAs(r.key, r.offerLike(t, target, "r-1"))
	waitFor(t, 10*time.Second, "r's offer on p's board", func() bool { return p.svc.board.get(r.id, "r-1") != nil })
	waitFor(t, 10*time.Second, "p knowing r takes pushes", func() bool {
		ok, err := p.h.Peerstore().SupportsProtocols(r.id, OfferPushProtocol)
		return err == nil && len(ok) > 0
	})
	return slot, pushed
}

// The lower peer of a class plan's pair proposes, so it must have the
// higher one's offer, and gossip may not bring it: the higher booking may
// still be choosing its lane (it announces nothing until it settles), or
// be announced on a lane the other is not on. Here p's announcement is
// held, and r, the lower plan partner, still gets p's offer: p pushes it
// when its plan pairs them. Without the push nothing reaches r (checked).
func TestPlanPartnerInvited(t *testing.T) {
	r := newSybils(t, 1)[0]
	var key crypto.PrivKey
	var id peer.ID
	for key == nil || id < r.id {
		key, id = mustKey(t) // p above r: r is the plan's proposer
	}
	p := startTestNode(&testNode{t: t, key: key, dir: t.TempDir()})
	slot, pushed := classOwnerListening(t, p, r)
	// Every announcement of p's open offer waits until the test ends.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before p stops
	p.svc.setTestHook(func(point string) {
		if point == "announce searching" {
			<-release
		}
	})
	p.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 10*time.Second, "p's offer pushed to r", func() bool { return pushed.Load() > 0 })
}

// A node takes a pushed record of a slot class it has a booking in, on
// whichever lane: a plan partner's invitation (invitePlanPartner) must not
// be dropped because the partner's lane is not the node's (checked: it
// was, before).
func TestPushTakenAcrossLanes(t *testing.T) {
	q := newTestNode(t, func(c *Config) { c.ClimbAlone = time.Hour })
	slot := nextSlot(3 * time.Hour)
	class := shard.Class(slot, 25, false)
	var r *sybil
	for r == nil || shard.LaneBits(class, []byte(r.id), 1) == shard.LaneBits(class, []byte(q.id()), 1) {
		r = newSybils(t, 1)[0]
	}
	b := q.book(t, BookRequest{At: slot, DurationMin: 25})
	// q's booking as if it had gone a lane deeper (a crowded class).
	lane := class.Child([]byte(q.id()))
	q.svc.mu.Lock()
	q.svc.placeMu.Lock()
	q.svc.places[b.ID] = &placement{key: lane, since: time.Now(), settled: true}
	q.svc.interest.Hold(lane, b.ID)
	q.svc.interest.Drop(class, b.ID)
	q.svc.placeMu.Unlock()
	q.svc.mu.Unlock()
	q.svc.syncShards(context.Background())
	if q.svc.wantsOffer(class, r.id) {
		t.Fatalf("q is on a topic that carries r's offers; the test shows nothing")
	}
	target := &pb.Offer{StartUnix: slot.Unix(), DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING}
	if err := q.svc.takePush(r.id, &pb.OfferPush{Version: protoVersion, Envelope: r.offerLike(t, target, "r-1")}); err != nil {
		t.Fatal(err)
	}
	if q.svc.board.get(r.id, "r-1") == nil {
		t.Fatalf("r's pushed offer is not on q's board (q's booking is on %s)", q.svc.placeOf(q.booking(b.ID)))
	}
}

// A booking still choosing its lane on a class topic (nothing announced
// yet) is pushed to the peers it finds on the topic: they would otherwise
// learn of it only from a pull of the node's board, behind the topic's
// whole board (with 1,000 Sybil records in the class, 5-10 ms). Here
// neither node serves board pulls, so a's booking never settles within
// the test (its pull of the topic never completes) and b has no pull to
// learn it from; the bookings are of one class but cannot pair (desk and
// moving), so no plan invites either. Without the push b never gets a's
// offer (checked).
func TestPlacingBookingPushedToPeersOnTopic(t *testing.T) {
	var fromA atomic.Int64
	a := newTestNode(t, func(c *Config) { c.settleWait = time.Minute })
	aID := a.id()
	b := newTestNode(t, func(c *Config) {
		c.OnOffer = func(e OfferEvent) {
			if e.Owner == aID && e.Source == OfferPushed && !e.Withdrawn {
				fromA.Add(1)
			}
		}
	})
	for _, n := range []*testNode{a, b} {
		n.h.RemoveStreamHandler(BoardProtocol)
		n.h.RemoveStreamHandler(BoardProtocolV2)
	}
	connect(t, a, b)
	slot := nextSlot(3 * time.Hour)
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25, Activity: ActivityMoving})
	waitFor(t, 10*time.Second, "b's booking announced", func() bool {
		b.svc.mu.Lock()
		defer b.svc.mu.Unlock()
		return len(b.svc.announced) > 0
	})
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25, Activity: ActivityDesk})
	if k := a.svc.placeOf(ba); k != b.svc.placeOf(bb) || !k.IsClass() {
		t.Fatalf("a's booking is placed on %v, b's elsewhere", k)
	}
	waitFor(t, 10*time.Second, "a's placing booking pushed to b", func() bool { return fromA.Load() > 0 })
	if a.svc.settledPlace(ba.ID) {
		t.Fatal("a's booking settled: the test cannot tell a push of a placing booking from an announcement's")
	}
	if e := b.svc.board.get(aID, ba.ID); e == nil || activityFromPB(e.offer.GetActivity()) != ActivityDesk {
		t.Fatalf("b's board holds %v for a's booking", e)
	}
}
