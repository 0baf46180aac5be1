package session

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// waitTimeout bounds every wait in these tests; nothing sleeps.
const waitTimeout = 20 * time.Second

// TestMain checks that no goroutine of this package outlives its owner.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func leakedGoroutines(grace time.Duration) string {
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "tandem/session.(*") || strings.Contains(g, "tandem/session/media.(*") {
				if !strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "TestMain") {
					leaked = append(leaked, g)
				}
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C // goroutines that are on their way out get a moment
	}
}

// clock is a settable clock: the schedule's minutes pass when a test says.
// A skewed clock (see skewed) reads another clock plus an offset.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	base *clock
	off  time.Duration
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 3, 2, 9, 58, 0, 0, time.UTC)}
}

// skewed returns a clock that reads c plus d: another machine's clock,
// d off.
func (c *clock) skewed(d time.Duration) *clock { return &clock{base: c, off: d} }

func (c *clock) Now() time.Time {
	if c.base != nil {
		return c.base.Now().Add(c.off)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// recorder keeps a node's events and lets a test wait for one.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	arrived []time.Time // real time each event arrived
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.arrived = append(r.arrived, time.Now())
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) find(pred func(Event) bool) (Event, bool) {
	e, _, ok := r.findAt(pred)
	return e, ok
}

func (r *recorder) findAt(pred func(Event) bool) (Event, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.events {
		if pred(e) {
			return e, r.arrived[i], true
		}
	}
	return Event{}, time.Time{}, false
}

func (r *recorder) count(pred func(Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if pred(e) {
			n++
		}
	}
	return n
}

func (r *recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		fmt.Fprintf(&b, "\n  %s %s %s %s %s", e.Booking, e.Type, e.From, e.Phase, e.Text)
	}
	return b.String()
}

// wait blocks until an event matching pred has been recorded.
func (r *recorder) wait(t testing.TB, what string, pred func(Event) bool) Event {
	t.Helper()
	e, _ := r.waitAt(t, what, pred)
	return e
}

// waitAt is wait, also returning when the event arrived.
func (r *recorder) waitAt(t testing.TB, what string, pred func(Event) bool) (Event, time.Time) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if e, at, ok := r.findAt(pred); ok {
			return e, at
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; events:%s", what, r.summary())
		}
	}
}

func is(typ, booking string) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && e.Booking == booking }
}

func isFrom(typ, booking, from string, match func(Event) bool) func(Event) bool {
	return func(e Event) bool {
		return e.Type == typ && e.Booking == booking && e.From == from && (match == nil || match(e))
	}
}

func isPhase(booking string, p Phase) func(Event) bool {
	return func(e Event) bool { return e.Type == EventPhase && e.Booking == booking && e.Phase == p }
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func waitDone(t testing.TB, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("session %s did not end", s.ID())
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newHost is a real libp2p host on loopback.
func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	)
	if err != nil {
		t.Fatalf("creating host: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newDB(t testing.TB) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil).
		WithMemTableSize(4 << 20).WithValueThreshold(64 << 10).WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20))
	if err != nil {
		t.Fatalf("opening badger: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// node is one test node: host, store, session manager, events.
type node struct {
	name string
	h    host.Host
	db   *badger.DB
	clk  *clock
	m    *Manager
	rec  *recorder
	// tweak, if set, changes the Manager's config at each (re)start.
	tweak func(*Config)
}

func newNode(t testing.TB, name string, clk *clock) *node {
	return newNodeWith(t, name, clk, nil)
}

// newNodeWith is newNode with its Manager's config changed by tweak.
func newNodeWith(t testing.TB, name string, clk *clock, tweak func(*Config)) *node {
	n := &node{name: name, h: newHost(t), db: newDB(t), clk: clk, rec: newRecorder(), tweak: tweak}
	n.restart(t)
	return n
}

// restart gives the node a new Manager on the same host and store, as a
// node process restart would (closing the old one first, if any).
func (n *node) restart(t testing.TB) {
	t.Helper()
	if n.m != nil {
		n.m.Close()
	}
	cfg := Config{
		Host: n.h, DB: n.db, Log: testLogger().With("node", n.name), Now: n.clk.Now, OnEvent: n.rec.add,
		Tick: 10 * time.Millisecond, LoopbackOnly: true,
		ICEDisconnectedTimeout: time.Second, ICEFailedTimeout: 2 * time.Second, ICEKeepAlive: 200 * time.Millisecond,
		ConnectTimeout: 5 * time.Second, LeaveLinger: 2 * time.Second,
	}
	if n.tweak != nil {
		n.tweak(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("starting manager: %v", err)
	}
	n.m = m
	t.Cleanup(m.Close)
}

// introduce lets the nodes find each other's addresses.
func introduce(nodes ...*node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.h.Peerstore().AddAddrs(b.h.ID(), b.h.Addrs(), peerstore.PermanentAddrTTL)
			}
		}
	}
}

// newPair makes two introduced nodes; the first one offers (lower ID).
func newPair(t testing.TB, clk *clock) (offerer, answerer *node) {
	return newPairWith(t, clk, nil)
}

// newPairWith is newPair with both Managers' config changed by tweak.
func newPairWith(t testing.TB, clk *clock, tweak func(*Config)) (offerer, answerer *node) {
	a, b := newNodeWith(t, "a", clk, tweak), newNodeWith(t, "b", clk, tweak)
	if b.h.ID() < a.h.ID() {
		a, b = b, a
		a.name, b.name = "a", "b"
	}
	introduce(a, b)
	return a, b
}

// bookings makes the two matching bookings of a session between a and b.
func bookings(a, b *node, id string, start time.Time, d time.Duration, kind string) (Booking, Booking) {
	mins := int(d / time.Minute)
	ba := Booking{ID: "a-" + id, PartnerBooking: "b-" + id, Partner: b.h.ID(), PartnerName: "Bea",
		Name: "Ada", Goal: "write the tests", Start: start, DurationMin: mins, Kind: kind}
	bb := Booking{ID: "b-" + id, PartnerBooking: "a-" + id, Partner: a.h.ID(), PartnerName: "Ada",
		Name: "Bea", Goal: "read the paper", Start: start, DurationMin: mins, Kind: kind}
	return ba, bb
}

func open(t testing.TB, n *node, b Booking) *Session {
	t.Helper()
	s, err := n.m.Open(b)
	if err != nil {
		t.Fatalf("%s opening %s: %v", n.name, b.ID, err)
	}
	return s
}

// meet opens a "now" session on both nodes and waits until both see the
// partner.
func meet(t testing.TB, a, b *node, id string) (*Session, *Session) {
	t.Helper()
	ba, bb := bookings(a, b, id, a.clk.Now(), 25*time.Minute, KindNow)
	sa, sb := open(t, a, ba), open(t, b, bb)
	a.rec.wait(t, "a sees b join", is(EventPartnerJoined, ba.ID))
	b.rec.wait(t, "b sees a join", is(EventPartnerJoined, bb.ID))
	return sa, sb
}
