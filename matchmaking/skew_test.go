package matchmaking

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// skewedPair starts two nodes whose clocks run lowerAhead apart: the node
// with the lower peer ID (the one that proposes) reads lowerAhead later
// than the other. Each clock is the real time plus its own offset, set
// once the IDs are known and before anything is booked.
func skewedPair(t *testing.T, lowerAhead time.Duration) (lower, higher *testNode) {
	t.Helper()
	var offs [2]atomic.Int64
	nodes := make([]*testNode, 2)
	for i := range nodes {
		nodes[i] = newTestNode(t, func(c *Config) {
			c.Now = func() time.Time { return time.Now().Add(time.Duration(offs[i].Load())) }
		})
	}
	li := 0
	if nodes[1].id() < nodes[0].id() {
		li = 1
	}
	offs[li].Store(int64(lowerAhead))
	connect(t, nodes[0], nodes[1])
	return nodes[li], nodes[1-li]
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
				lower, higher := skewedPair(t, tc.lowerAhead)
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
	if _, err := owner.svc.Cancel(context.Background(), b.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the withdrawal to replace the offer", func() bool { return !onBoard() })
}
