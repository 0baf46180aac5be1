package matchmaking

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// testStampBits is the identity stamp difficulty in tests: cheap, yet a
// record without a stamp fails it (but for 1 in 256).
const testStampBits = 8

// testNode is a real libp2p host on loopback with gossipsub, a real badger
// store in a temp dir and a matchmaking Service.
type testNode struct {
	t      testing.TB
	key    crypto.PrivKey
	dir    string
	h      host.Host
	ps     *pubsub.PubSub
	db     *badger.DB
	svc    *Service
	cancel context.CancelFunc
	tune   func(*Config)
	// v1 makes the node a version 1 node (see Service.v1Only).
	v1 bool
	// hook, if set, is the service's testHook from before its Start.
	hook func(point string)
	// v2 makes it a version 2 node (see Service.v2Only).
	v2 bool
	// recv counts the offer messages gossip brought the node, per topic.
	recv *topicCounter
	// confirmedAt maps a booking ID to when the node first stored it
	// confirmed (time.Time).
	confirmedAt sync.Map
	// hostOpts, if set, replace libp2p.DisableRelay() among the host's
	// options (a node that dials or is reached through a relay).
	hostOpts []libp2p.Option
	// held, if set, lets a test hold back the gossip RPCs the node
	// receives from one peer (see heldRPCs).
	held *heldRPCs
}

// heldRPCs holds back, while on, the gossipsub RPCs a node receives from
// one peer: they arrive but its pubsub does not process them until the
// hold is released, as when a loaded node is slow to read a peer's
// stream. Everything else (other peers, its own publishing, other
// protocols with that peer) goes on.
type heldRPCs struct {
	from    peer.ID
	mu      sync.Mutex
	release chan struct{} // nil: not holding
}

// hold starts holding from's RPCs.
func (g *heldRPCs) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.release == nil {
		g.release = make(chan struct{})
	}
}

// let processes the held RPCs and stops holding.
func (g *heldRPCs) let() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.release != nil {
		close(g.release)
		g.release = nil
	}
}

func (g *heldRPCs) wait() {
	g.mu.Lock()
	ch := g.release
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// heldHost is the host pubsub sees: its stream handlers read the held
// peer's streams through the hold.
type heldHost struct {
	host.Host
	g *heldRPCs
}

func (h heldHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		if s.Conn().RemotePeer() == h.g.from {
			s = heldStream{s, h.g}
		}
		handler(s)
	})
}

type heldStream struct {
	network.Stream
	g *heldRPCs
}

// Read returns what arrived only once the hold lets it through.
func (s heldStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.g.wait()
	return n, err
}

// topicCounter is a pubsub tracer counting the messages a node receives
// (before validation), per topic: what arrives, not what is kept.
type topicCounter struct {
	pubsub.RawTracer
	mu sync.Mutex
	n  map[string]int
	// keep, once set (keepRaw), records every message as it arrived.
	keep bool
	raw  []rawMsg
}

// rawMsg is a gossip message as it came off the wire, before validation.
type rawMsg struct {
	topic string
	from  peer.ID // the author
	data  []byte
}

func (c *topicCounter) RecvRPC(rpc *pubsub.RPC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range rpc.GetPublish() {
		c.n[m.GetTopic()]++
		if c.keep {
			c.raw = append(c.raw, rawMsg{m.GetTopic(), peer.ID(m.GetFrom()), append([]byte(nil), m.GetData()...)})
		}
	}
}

// keepRaw starts recording the messages that arrive.
func (c *topicCounter) keepRaw() {
	c.mu.Lock()
	c.keep = true
	c.mu.Unlock()
}

// received returns the messages recorded so far.
func (c *topicCounter) received() []rawMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rawMsg(nil), c.raw...)
}

// topics returns a copy of the counts.
func (c *topicCounter) topics() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// nopTracer implements the RawTracer methods topicCounter does not.
type nopTracer struct{}

func (nopTracer) AddPeer(peer.ID, protocol.ID)                         {}
func (nopTracer) RemovePeer(peer.ID)                                   {}
func (nopTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (nopTracer) OnClosedOutboundStream(peer.ID)                       {}
func (nopTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (nopTracer) Join(string)                                          {}
func (nopTracer) Leave(string)                                         {}
func (nopTracer) Graft(peer.ID, string)                                {}
func (nopTracer) Prune(peer.ID, string)                                {}
func (nopTracer) ValidateMessage(*pubsub.Message)                      {}
func (nopTracer) DeliverMessage(*pubsub.Message)                       {}
func (nopTracer) RejectMessage(*pubsub.Message, string)                {}
func (nopTracer) DuplicateMessage(*pubsub.Message)                     {}
func (nopTracer) ThrottlePeer(peer.ID)                                 {}
func (nopTracer) RecvRPC(*pubsub.RPC)                                  {}
func (nopTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (nopTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (nopTracer) UndeliverableMessage(*pubsub.Message)                 {}

// background runs f in its own goroutine and makes the test's cleanup wait
// for it to return, so that the nodes f works on (started before this
// call, so stopped after it in cleanup's reverse order) are not torn down
// under it: a node's stop clears fields that f reads. f must return once
// a context that ends before the cleanup (a test's, or timeToMatch's) does.
func background(t testing.TB, f func()) {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	t.Cleanup(func() { <-done })
}

func testLogger() *slog.Logger {
	lvl := slog.LevelError
	if os.Getenv("TANDEM_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func newTestNode(t testing.TB, tune func(*Config)) *testNode {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return startTestNode(&testNode{t: t, key: key, dir: t.TempDir(), tune: tune})
}

// startTestNode starts n (its key, dir, tune, hook and hostOpts set) and
// stops it when the test ends.
func startTestNode(n *testNode) *testNode {
	t := n.t
	t.Helper()
	n.start()
	t.Cleanup(n.stop)
	return n
}

// start (re)starts the node on its key and data dir.
func (n *testNode) start() {
	t := n.t
	t.Helper()
	var err error
	opts := n.hostOpts
	if opts == nil {
		opts = []libp2p.Option{libp2p.DisableRelay()}
	}
	n.h, err = libp2p.New(append([]libp2p.Option{
		libp2p.Identity(n.key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	// The daemon's gossipsub options (node.PubSubOptions), which this
	// package cannot import.
	gp := pubsub.DefaultGossipSubParams()
	gp.HeartbeatInterval, gp.HistoryLength = 300*time.Millisecond, 15
	if n.recv == nil {
		n.recv = &topicCounter{RawTracer: nopTracer{}, n: map[string]int{}}
	}
	var psHost host.Host = n.h
	if n.held != nil {
		psHost = heldHost{n.h, n.held}
	}
	gate := NewGossipGate()
	n.ps, err = pubsub.NewGossipSub(ctx, psHost, pubsub.WithFloodPublish(true), pubsub.WithPeerExchange(true),
		pubsub.WithValidateQueueSize(1024), pubsub.WithPeerOutboundQueueSize(128), pubsub.WithGossipSubParams(gp),
		pubsub.WithRawTracer(n.recv), pubsub.WithPeerScore(PeerScoreParams(), PeerScoreThresholds()),
		pubsub.WithAppSpecificRpcInspector(gate.Inspect))
	if err != nil {
		t.Fatal(err)
	}
	n.db, err = badger.Open(badger.DefaultOptions(n.dir).WithSyncWrites(true).WithLogger(nil).
		WithMemTableSize(1 << 20).WithValueThreshold(1 << 10).WithBlockCacheSize(1 << 20).WithNumCompactors(2))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Host: n.h, PubSub: n.ps, Gate: gate, DB: n.db, Log: testLogger(),
		Name:          "node-" + n.h.ID().String()[len(n.h.ID().String())-4:],
		MatchInterval: 100 * time.Millisecond, SyncInterval: time.Second, HoldTimeout: 2 * time.Second, StreamTimeout: 2 * time.Second,
		StampBits: testStampBits,
	}
	if n.tune != nil {
		n.tune(&cfg)
	}
	if os.Getenv("TANDEM_NODE_TRACE") != "" {
		traceNode(t, n.h.ID().ShortString(), &cfg)
	}
	// When each booking was first stored confirmed: timeToMatch's exact
	// end (polling for it would round every match up to a poll).
	onBooking := cfg.OnBooking
	cfg.OnBooking = func(b Booking) {
		if b.Confirmed {
			n.confirmedAt.LoadOrStore(b.ID, time.Now())
		}
		if onBooking != nil {
			onBooking(b)
		}
	}
	n.svc, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.svc.v1Only = n.v1
	if n.hook != nil {
		n.svc.setTestHook(n.hook)
	}
	n.svc.v2Only = n.v2
	if err := n.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) stop() {
	if n.svc == nil {
		return
	}
	n.svc.Close()
	n.cancel()
	n.h.Close()
	n.db.Close()
	n.svc = nil
}

// crash drops the node without any cleanup of the matcher: the host goes
// away mid-conversation and the store is closed as a kill would leave it.
func (n *testNode) crash() {
	n.h.Close()
	n.cancel()
	n.svc.wg.Wait()
	n.db.Close()
	n.svc = nil
}

func (n *testNode) id() peer.ID { return n.h.ID() }

func connect(t testing.TB, a, b *testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatalf("connecting: %v", err)
	}
}

// connectSparse links every node to the next three in a ring.
func connectSparse(t testing.TB, nodes []*testNode) {
	for i := range nodes {
		for k := 1; k <= 3 && k < len(nodes); k++ {
			connect(t, nodes[i], nodes[(i+k)%len(nodes)])
		}
	}
}

// deadline stretches a wait's bound for a slow run: 3x on any run (CI's
// machine is loaded), 4x that under the race detector. A bound, not a goal:
// a passing wait never waits it out.
func deadline(d time.Duration) time.Duration { return 3 * raceSlowdown * d }

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout = deadline(timeout)
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a wait for an event
	}
}

func (n *testNode) book(t testing.TB, req BookRequest) Booking {
	t.Helper()
	b, err := n.svc.Book(context.Background(), req)
	if err != nil {
		t.Fatalf("booking: %v", err)
	}
	return b
}

// view has the node look at the calendar's next week (and focus now): it
// joins those shards, as the web UI's calendar does.
func (n *testNode) view() { n.svc.View(time.Time{}, time.Time{}) }

func nextSlot(d time.Duration) time.Time {
	return time.Now().UTC().Add(d).Truncate(Grid).Add(Grid)
}

// sameDaySlot is nextSlot(d), moved earlier if need be so that span after
// it is still its UTC day (one shard): a test that relies on two slots
// sharing a shard must not fail at the hours when they would not.
func sameDaySlot(d, span time.Duration) time.Time {
	at := nextSlot(d)
	if day := at.Truncate(24 * time.Hour); at.Add(span).Truncate(24*time.Hour) != day {
		at = day.Add(24*time.Hour - span - Grid)
	}
	return at
}

func (n *testNode) booking(id string) Booking {
	b, err := n.svc.Booking(id)
	if err != nil {
		n.t.Fatalf("booking %s: %v", id, err)
	}
	return b
}

// settled reports whether every booking is either matched and confirmed,
// or searching with no hold or proposal under way.
func settled(nodes []*testNode) bool {
	for _, n := range nodes {
		for _, b := range n.svc.Bookings() {
			if b.State == StateMatched && !b.Confirmed {
				return false
			}
		}
	}
	return true
}

// checkInvariants verifies invariants 1 and 2 over all nodes' bookings and
// returns the number of mutual pairs.
func checkInvariants(t testing.TB, nodes []*testNode) int {
	t.Helper()
	byID := map[string]*testNode{}
	for _, n := range nodes {
		byID[n.id().String()] = n
	}
	pairs := 0
	now := time.Now()
	for _, n := range nodes {
		bs := n.svc.Bookings()
		for i, b := range bs {
			for _, o := range bs[i+1:] {
				if b.Live() && o.Live() {
					s1, e1 := interval(b, now)
					s2, e2 := interval(o, now)
					if overlaps(s1, e1, s2, e2) {
						t.Errorf("%s holds overlapping live bookings %s and %s", n.id(), b.ID, o.ID)
					}
				}
			}
			if b.State != StateMatched {
				continue
			}
			p, ok := byID[b.Partner]
			if !ok {
				t.Errorf("%s booking %s names unknown partner %s", n.id(), b.ID, b.Partner)
				continue
			}
			pb, err := p.svc.Booking(b.PartnerBooking)
			if err != nil || pb.State != StateMatched || pb.Partner != n.id().String() || pb.PartnerBooking != b.ID {
				t.Errorf("one-sided booking: %s/%s names %s/%s, which holds %+v", n.id(), b.ID, b.Partner, b.PartnerBooking, pb)
				continue
			}
			if !pb.Start.Equal(b.Start) || pb.DurationMin != b.DurationMin {
				t.Errorf("pair %s/%s disagrees on time", b.ID, pb.ID)
			}
			if n.id() < p.id() {
				pairs++
			}
		}
	}
	return pairs
}

func stateCounts(nodes []*testNode) map[State]int {
	c := map[State]int{}
	for _, n := range nodes {
		for _, b := range n.svc.Bookings() {
			c[b.State]++
		}
	}
	return c
}

func describe(nodes []*testNode) string {
	var lines []string
	for _, n := range nodes {
		for _, b := range n.svc.Bookings() {
			lines = append(lines, fmt.Sprintf("%s %s %s partner=%s confirmed=%v", n.id().String()[40:], b.ID, b.State, b.Partner, b.Confirmed))
		}
	}
	sort.Strings(lines)
	return fmt.Sprint(lines)
}

// traceNode logs, with the time of day, what cfg's node does that its
// hooks see and no tune has claimed: offers taken, proposals, notes,
// placements and stored bookings (TANDEM_NODE_TRACE=1, for finding where
// a test's time goes).
func traceNode(t testing.TB, who string, cfg *Config) {
	at := func() string { return time.Now().Format("15:04:05.000000") }
	if cfg.OnOffer == nil {
		cfg.OnOffer = func(e OfferEvent) {
			t.Logf("%s %s offer of %s %s by %s", at(), who, e.Owner.ShortString(), e.BookingID, e.Source)
		}
	}
	if cfg.OnProposal == nil {
		cfg.OnProposal = func(e ProposalEvent) {
			t.Logf("%s %s proposed to %s: %s after %v", at(), who, e.Owner.ShortString(), e.Outcome, e.Took)
		}
	}
	if cfg.OnNote == nil {
		cfg.OnNote = func(e NoteEvent) { t.Logf("%s %s %s: %s %s", at(), who, e.Booking, e.What, e.Note) }
	}
	if cfg.OnPlace == nil {
		cfg.OnPlace = func(e PlaceEvent) {
			t.Logf("%s %s %s placed on %s: deeper %v volume %d", at(), who, e.Booking, e.Topic, e.Deeper, e.Volume)
		}
	}
	onBooking := cfg.OnBooking
	cfg.OnBooking = func(b Booking) {
		t.Logf("%s %s booking %s stored %s confirmed %v", at(), who, b.ID, b.State, b.Confirmed)
		if onBooking != nil {
			onBooking(b)
		}
	}
}
