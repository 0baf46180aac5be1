package matchmaking

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// crashAt arms n to die at the named negotiation point: the hook blocks
// the negotiating goroutine until the test has torn the node down, so
// nothing after that point happens, as with kill -9.
func crashAt(n *testNode, point string) (hit <-chan struct{}, release func()) {
	h := make(chan struct{})
	r := make(chan struct{})
	var fired atomic.Bool
	n.svc.setTestHook(func(p string) {
		if p != point || !fired.CompareAndSwap(false, true) {
			return
		}
		close(h)
		<-r
	})
	return h, func() { close(r) }
}

// killHeld tears n down while crashAt holds its negotiation, then lets
// the held goroutine go on into a dead node, as kill -9 leaves it.
func killHeld(n *testNode, release func()) {
	n.h.Close()
	n.cancel()
	release()
	n.svc.wg.Wait()
	n.db.Close()
	n.svc = nil
}

func TestCrashDuringNegotiation(t *testing.T) {
	for _, tc := range []struct {
		point  string
		victim string // which side dies: proposer (lower peer ID) or acceptor
	}{
		{"proposer-persisted", "proposer"},
		{"acceptor-held", "acceptor"},
		{"acceptor-committed", "acceptor"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			x, y := newTestNode(t, nil), newTestNode(t, nil)
			proposer, acceptor := x, y
			if y.id() < x.id() {
				proposer, acceptor = y, x
			}
			victim, other := proposer, acceptor
			if tc.victim == "acceptor" {
				victim, other = acceptor, proposer
			}
			hit, release := crashAt(victim, tc.point)
			connect(t, x, y)
			slot := nextSlot(6 * time.Hour)
			bv := victim.book(t, BookRequest{At: slot, DurationMin: 50})
			bo := other.book(t, BookRequest{At: slot, DurationMin: 50})
			select {
			case <-hit:
			case <-time.After(15 * time.Second):
				t.Fatal("negotiation never reached " + tc.point)
			}
			killHeld(victim, release)
			victim.start()
			connect(t, victim, other)
			nodes := []*testNode{victim, other}
			waitFor(t, 20*time.Second, "pair settled after restart", func() bool {
				return victim.booking(bv.ID).Confirmed && other.booking(bo.ID).Confirmed
			})
			if got := checkInvariants(t, nodes); got != 1 {
				t.Fatalf("pairs = %d: %s", got, describe(nodes))
			}
		})
	}
}

// TestCancelWhileOffline: the partner of a match is offline when the user
// cancels. The Cancel cannot be delivered, so it is kept as unsent; when
// the partner comes back (on another port, not connected to anyone) it
// re-checks its match at the address it kept, learns of the cancel and
// searches again, and the canceller stops re-sending.
func TestCancelWhileOffline(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if len(b.booking(bb.ID).PartnerAddrs) == 0 || len(a.booking(ba.ID).PartnerAddrs) == 0 {
		t.Fatalf("no partner addresses kept: %v / %v", a.booking(ba.ID).PartnerAddrs, b.booking(bb.ID).PartnerAddrs)
	}
	b.stop()
	c, err := a.svc.Cancel(context.Background(), ba.ID, "something came up")
	if err != nil {
		t.Fatal(err)
	}
	if !c.CancelUnsent || !a.booking(ba.ID).CancelUnsent {
		t.Fatalf("cancel to an offline partner not marked unsent: %+v", c)
	}
	b.start() // new port; nobody dials it
	waitFor(t, 15*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
	checkInvariants(t, []*testNode{a, b})
}
