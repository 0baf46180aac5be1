package matchmaking

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// storedBooking reads a booking from n's disk, not its memory.
func storedBooking(t *testing.T, n *testNode, id string) Booking {
	t.Helper()
	var b Booking
	if ok, err := n.svc.db.get(bookingPrefix+id, &b); err != nil || !ok {
		t.Fatalf("reading booking %s from disk: %v %v", id, ok, err)
	}
	return b
}

// A partner's Cancel that b cannot store leaves b's booking matched in
// memory and on disk alike, is not acknowledged (a is told to send it
// again), and is applied once b's disk works again.
func TestCancelThatCannotBeStoredIsResent(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	b.svc.db.failWrites.Store(true)
	got, err := a.svc.Cancel(context.Background(), ba.ID, "plans changed")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CancelUnsent {
		t.Error("a takes the Cancel as delivered though b could not store it")
	}
	if mem, disk := b.booking(bb.ID), storedBooking(t, b, bb.ID); mem.State != StateMatched || disk.State != StateMatched {
		t.Fatalf("b's booking: %s in memory, %s on disk; want matched in both", mem.State, disk.State)
	}
	b.svc.db.failWrites.Store(false)
	waitFor(t, 15*time.Second, "the re-sent Cancel to free b", func() bool {
		return b.booking(bb.ID).State == StateSearching && storedBooking(t, b, bb.ID).State == StateSearching &&
			!a.booking(ba.ID).CancelUnsent
	})
}

// Close waits for every goroutine the service started, the announcements
// of a match just made included: none may outlive it (they were started
// with a bare go statement and went on publishing after Close).
func TestCloseWaitsForAnnouncements(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	var started, finished atomic.Int32 // announcements of the match
	release := make(chan struct{})
	for _, n := range nodes {
		ctx := n.svc.ctx
		n.svc.setTestHook(func(p string) {
			switch p {
			case "announce matched":
				started.Add(1)
				<-ctx.Done() // under way when Close begins
				<-release
			case "announced matched":
				finished.Add(1)
			}
		})
	}
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	waitFor(t, 5*time.Second, "the match's announcements under way", func() bool { return started.Load() == 2 })
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		a.svc.Close()
		b.svc.Close()
	}()
	// Close must not return while the announcements run. Give it a while
	// to (wrongly) return, then let them finish.
	select {
	case <-closed:
		close(release)
		t.Fatalf("Close returned with %d of %d announcements still running", started.Load()-finished.Load(), started.Load())
	case <-time.After(2 * time.Second):
	}
	close(release)
	<-closed
	if s, f := started.Load(), finished.Load(); s != f {
		t.Fatalf("%d announcements started, %d finished when Close returned", s, f)
	}
}
