// Package nodetest builds and runs Tandem nodes for tests: local-only
// configs (loopback listeners, no public bootstrap, no mDNS, no UPnP) and a
// WaitFor that polls a condition with a deadline instead of sleeping.
package nodetest

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node"
)

// Config returns a node config that never sends a packet beyond this
// machine: libp2p listens on 127.0.0.1 only (TCP and QUIC, any free port),
// the API on 127.0.0.1 (any free port), no bootstrap peers at all, no mDNS,
// no UPnP/NAT-PMP. The data dir is a fresh directory under t.TempDir().
// Tests that want peers add loopback addresses to Bootstrap or Peers.
func Config(t testing.TB) node.Config {
	t.Helper()
	return node.Config{
		DataDir: filepath.Join(t.TempDir(), "tandem"),
		Listen: []string{
			"/ip4/127.0.0.1/tcp/0",
			"/ip4/127.0.0.1/udp/0/quic-v1",
		},
		API:          "127.0.0.1:0",
		Bootstrap:    []string{node.BootstrapNone},
		MDNS:         false,
		NATPortMap:   false,
		LowResources: true,
		LogLevel:     "warn",
		// A cheap identity stamp: every test node is a fresh identity.
		Matchmaking: node.MatchmakingConfig{StampBits: 8},
	}
}

// Logger returns a logger at cfg.LogLevel that writes to the test's log,
// and stays quiet once the test has finished (late goroutines must not
// write to a finished test).
func Logger(t testing.TB, level string) *slog.Logger {
	t.Helper()
	lvl, err := node.ParseLogLevel(level)
	if err != nil {
		t.Fatal(err)
	}
	w := &testWriter{t: t}
	// Registered before any Stop cleanup, so it runs after them (LIFO).
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", p)
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

var _ io.Writer = (*testWriter)(nil)

// Start creates and starts a node from cfg and stops it when the test ends.
func Start(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(cfg, Logger(t, cfg.LogLevel))
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stopping node: %v", err)
		}
	})
	return n
}

// pollInterval is how often WaitFor re-checks its condition.
const pollInterval = 20 * time.Millisecond

// WaitFor polls cond until it returns true, and fails the test with msg if
// that has not happened within timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(msg, args...))
		}
		<-tick.C
	}
}

// Clock is a wall clock that tests move forward, so minute-scale schedules
// (session phases, no-shows) run in seconds. Give the same Clock to every
// node of a test: partners must agree on the time.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the real time plus every Advance so far.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Link makes b dial a directly at start (a static peer), a
// loopback-only stand-in for discovery.
func Link(t testing.TB, b *node.Config, a *node.Node) {
	t.Helper()
	for _, addr := range a.Addrs() {
		if strings.HasPrefix(addr, "/ip4/127.0.0.1/tcp/") {
			b.Peers = append(b.Peers, addr)
			return
		}
	}
	t.Fatalf("node %s has no loopback TCP address", a.ID())
}

// Trio is the cast of the rematch stories: A and B started on one Clock
// with B linked to A, and C's config (same clock, linked to A) for a test
// to start when it wants a third person around.
type Trio struct {
	Clock *Clock
	A, B  *node.Node
	CfgC  node.Config
}

// StartTrio starts A and B and prepares C.
func StartTrio(t testing.TB) Trio {
	t.Helper()
	clock := &Clock{}
	cfgA, cfgB, cfgC := Config(t), Config(t), Config(t)
	cfgA.Now, cfgB.Now, cfgC.Now = clock.Now, clock.Now, clock.Now
	a := Start(t, cfgA)
	Link(t, &cfgB, a)
	Link(t, &cfgC, a)
	return Trio{Clock: clock, A: a, B: Start(t, cfgB), CfgC: cfgC}
}
