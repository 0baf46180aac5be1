package matchmaking

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a node clock a test moves on: it reads the real time plus
// an offset, or stands still at a set time.
type testClock struct {
	offset  atomic.Int64
	stopped atomic.Int64 // unix ns; 0: running
}

func (c *testClock) now() time.Time {
	if s := c.stopped.Load(); s != 0 {
		return time.Unix(0, s)
	}
	return time.Now().Add(time.Duration(c.offset.Load()))
}

func (c *testClock) stop() { c.stopped.Store(time.Now().UnixNano()) }
func (c *testClock) advance(d time.Duration) {
	c.offset.Add(int64(d))
	if s := c.stopped.Load(); s != 0 {
		c.stopped.Store(s + int64(d))
	}
}

// Re-announcements keep pace with the node's clock, on which the offers
// expire: once a minute of it has passed, the offer goes out again,
// however little real time that took. (The announce loop ran on a real
// ticker and measured the offer's age in real time.)
func TestReannounceFollowsNodeClock(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	log := &offerLog{}
	n := newTestNode(t, func(c *Config) {
		c.Now, c.OnOffer, c.AnnounceInterval = clk.now, log.add, time.Minute
	})
	bk := n.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 50})
	published := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		k := 0
		for _, e := range log.events {
			if e.Source == OfferPublished && e.BookingID == bk.ID {
				k++
			}
		}
		return k
	}
	waitFor(t, 10*time.Second, "the first announcement", func() bool { return published() >= 1 })
	clk.advance(61 * time.Second)
	waitFor(t, 10*time.Second, "a re-announcement a minute of the node's clock later", func() bool { return published() >= 2 })
}

// The full re-check of every match (every two minutes) runs on the node's
// clock: a partner that dropped the match is found out once two minutes
// of it have passed. (It was timed in real time.)
func TestFullRecheckFollowsNodeClock(t *testing.T) {
	clk := &testClock{}
	nodes := startNodes(t, 2, func(c *Config) { c.Now = clk.now })
	a, b := nodes[0], nodes[1]
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	// b drops the match without telling a (as a node that lost its store
	// would: a finished match is still answered "confirmed").
	if _, err := b.svc.update(bb.ID, func(cur *Booking) (*Booking, error) {
		cur.State, cur.Partner, cur.PartnerBooking = StateCancelled, "", ""
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	clk.advance(2*time.Minute + 10*time.Second)
	waitFor(t, 10*time.Second, "a's full re-check to free its booking", func() bool {
		return a.booking(ba.ID).State == StateSearching
	})
}

// A node clock set back (here by a day) does not stall the matcher until it catches up:
// waits count the clock's forward steps only, and a stamp from before the
// step back (the last announcement) counts as long ago.
func TestReannounceAfterClockSetBack(t *testing.T) {
	clk := &testClock{}
	clk.stop()
	log := &offerLog{}
	n := newTestNode(t, func(c *Config) {
		c.Now, c.OnOffer, c.AnnounceInterval = clk.now, log.add, time.Minute
	})
	bk := n.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 50})
	published := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		k := 0
		for _, e := range log.events {
			if e.Source == OfferPublished && e.BookingID == bk.ID {
				k++
			}
		}
		return k
	}
	waitFor(t, 10*time.Second, "the first announcement", func() bool { return published() >= 1 })
	clk.advance(-24 * time.Hour)
	// The clock then runs on, 5 s a poll.
	waitFor(t, 10*time.Second, "a re-announcement a minute after the clock was set back a day", func() bool {
		clk.advance(5 * time.Second)
		return published() >= 2
	})
}

// A match whose session ended early (Finish on one side) stands: the
// partner's full re-check is answered "confirmed", and its booking stays
// matched until its own session finishes it. (The re-check runs on the
// node's clock; a test that advanced it while one side left had the other
// side's booking freed to search again, racing its own Finish:
// node's TestRematchAfterPartnerLeftEarly.)
func TestFinishedMatchStandsForThePartner(t *testing.T) {
	clk := &testClock{}
	nodes := startNodes(t, 2, func(c *Config) { c.Now = clk.now })
	a, b := nodes[0], nodes[1]
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if _, err := b.svc.Finish(bb.ID, ba.ID, "session ended early"); err != nil {
		t.Fatal(err)
	}
	// a's re-check of the match, as its full re-check sends it.
	reply := b.svc.onConfirm(a.id(), confirmFor(a.booking(ba.ID), "a").GetConfirm(), false)
	if reply.GetConfirmed() == nil {
		t.Fatalf("a's Confirm for the finished match was answered %v, want confirmed", reply)
	}
	a.svc.settle(context.Background(), a.booking(ba.ID), reply)
	if got := a.booking(ba.ID); got.State != StateMatched || got.Partner != b.id().String() {
		t.Fatalf("a's booking after the re-check: %s with %q, want still matched with b", got.State, got.Partner)
	}
	if got := b.booking(bb.ID); got.State != StateDone {
		t.Fatalf("b's booking is %s, want done", got.State)
	}
}

// TestConfirmCrossingCancelCarriesTheReason: the partner's user cancelled
// the match, and our re-check's Confirm crossed its Cancel. The answer is
// the Cancel itself, so our user hears "partner cancelled" and why, not
// only that the match is gone.
func TestConfirmCrossingCancelCarriesTheReason(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	// b's user cancels; its Cancel is still on the way to a.
	if _, err := b.svc.update(bb.ID, func(cur *Booking) (*Booking, error) {
		cur.State, cur.Note = StateCancelled, "sick today"
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	reply := b.svc.onConfirm(a.id(), confirmFor(a.booking(ba.ID), "a").GetConfirm(), false)
	if reply.GetCancel().GetReason() != "sick today" {
		t.Fatalf("a's Confirm for the cancelled match was answered %v, want b's Cancel", reply)
	}
	a.svc.settle(context.Background(), a.booking(ba.ID), reply)
	got := a.booking(ba.ID)
	if got.State != StateSearching || got.Note != "partner cancelled: sick today" {
		t.Fatalf("a's booking after the crossing: %s, note %q; want searching, \"partner cancelled: sick today\"", got.State, got.Note)
	}
}
