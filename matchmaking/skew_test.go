package matchmaking

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// skewedPair starts two nodes whose clocks run lowerAhead apart: the node
// with the lower peer ID (the one that proposes) reads lowerAhead later
// than the other. Each clock is the real time plus a shared offset (which
// advance moves on) plus its own, set once the IDs are known and before
// anything is booked.
func skewedPair(t *testing.T, lowerAhead time.Duration) (lower, higher *testNode, advance func(time.Duration)) {
	t.Helper()
	var offs [2]atomic.Int64
	var shared atomic.Int64
	nodes := make([]*testNode, 2)
	for i := range nodes {
		nodes[i] = newTestNode(t, func(c *Config) {
			c.Now = func() time.Time { return time.Now().Add(time.Duration(shared.Load() + offs[i].Load())) }
		})
	}
	li := 0
	if nodes[1].id() < nodes[0].id() {
		li = 1
	}
	offs[li].Store(int64(lowerAhead))
	connect(t, nodes[0], nodes[1])
	return nodes[li], nodes[1-li], func(d time.Duration) { shared.Add(int64(d)) }
}

// Two nodes whose clocks are MaxClockSkew apart, either way round, match
// for a scheduled slot and for "focus now", and agree on the start.
func TestClockSkewStillMatches(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lowerAhead time.Duration
	}{
		{"lower-ahead", 5 * time.Minute},
		{"lower-behind", -5 * time.Minute},
	} {
		for _, kind := range []Kind{KindScheduled, KindNow} {
			t.Run(tc.name+"/"+string(kind), func(t *testing.T) {
				lower, higher, _ := skewedPair(t, tc.lowerAhead)
				req := BookRequest{Kind: kind, DurationMin: 25}
				if kind == KindScheduled {
					// Ahead on both clocks.
					req.At = nextSlot(time.Hour)
				}
				bl, bh := lower.book(t, req), higher.book(t, req)
				nodes := []*testNode{lower, higher}
				waitFor(t, 20*time.Second, "the skewed pair to match", func() bool {
					return lower.booking(bl.ID).State == StateMatched && higher.booking(bh.ID).State == StateMatched && settled(nodes)
				})
				if got := checkInvariants(t, nodes); got != 1 {
					t.Fatalf("pairs = %d, want 1: %s", got, describe(nodes))
				}
				if kind == KindNow {
					// The proposer picks the start on its own clock; both keep it.
					if s, want := lower.booking(bl.ID).Start, lower.svc.now(); s.Sub(want).Abs() > time.Minute {
						t.Errorf("focus-now start %v, want about the proposer's clock %v", s, want)
					}
				}
			})
		}
	}
}

// An offer's seq keeps growing when the owner's clock is set back and the
// node restarts: its withdrawal must still replace the open offer that
// other nodes hold.
func TestSeqSurvivesClockSetBack(t *testing.T) {
	var back atomic.Int64
	owner := newTestNode(t, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(-time.Duration(back.Load())) }
	})
	watcher := newTestNode(t, nil)
	watcher.view()
	connect(t, owner, watcher)
	b := owner.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 50})
	onBoard := func() bool {
		for _, o := range watcher.svc.Board(time.Time{}, time.Time{}) {
			if o.BookingID == b.ID {
				return true
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, "the offer on the watcher's board", onBoard)

	// The owner's clock is corrected back by an hour, and the node restarts.
	back.Store(int64(time.Hour))
	owner.stop()
	owner.start()
	connect(t, owner, watcher)
	// The withdrawal goes to the watcher's day shard by a fanout publish,
	// which reaches only the peers the owner knows to be on that topic:
	// wait for the watcher's subscription to arrive (on a loaded machine
	// it can come after the Cancel, and the copy would then be lost).
	day := ShardOf(b).DayKey().Topic()
	waitFor(t, 10*time.Second, "the owner to know the watcher is on the day shard", func() bool {
		return slices.Contains(owner.ps.ListPeers(day), watcher.h.ID())
	})
	if _, err := owner.svc.Cancel(context.Background(), b.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the withdrawal to replace the offer", func() bool { return !onBoard() })
}

// At the end of a session the node whose clock is ahead marks its booking
// done first. The other's re-check of the match then hears "no such
// match": that must end its booking too, not send a "now" booking
// searching again for a new partner during its check-in.
func TestMatchEndsUnderClockSkew(t *testing.T) {
	ahead, behind, advance := skewedPair(t, 5*time.Minute)
	ba := ahead.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	bb := behind.book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	nodes := []*testNode{ahead, behind}
	waitFor(t, 20*time.Second, "the pair to match", func() bool {
		return ahead.booking(ba.ID).State == StateMatched && behind.booking(bb.ID).State == StateMatched && settled(nodes)
	})
	// The session's end on the ahead clock (the proposer's, which the
	// session runs on): its booking is done, the other's end is minutes away
	// on its own clock.
	advance(ahead.booking(ba.ID).End().Sub(ahead.svc.now()) + time.Second)
	waitFor(t, 20*time.Second, "the ahead node to end its booking", func() bool {
		return ahead.booking(ba.ID).State == StateDone
	})
	behind.svc.reconcile(context.Background(), ahead.id(), true)
	if b := behind.booking(bb.ID); b.State != StateDone || b.Partner != ahead.id().String() {
		t.Fatalf("after the re-check at the end the booking is %s with partner %q, want done with %s", b.State, b.Partner, ahead.id())
	}
}
