package matchmaking

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// A booking whose disk write hangs holds up nothing but itself: while a's
// store is stuck writing its booking for one slot, a books another slot
// and a and b negotiate a match for it. (The write used to happen under
// the service's main lock, which every negotiation waits for.)
func TestSlowWriteBlocksOnlyItsBooking(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	slotA, slotB := nextSlot(5*time.Hour), nextSlot(7*time.Hour)
	stuck, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	hook := func(key string, v any) {
		if bk, ok := v.(*Booking); ok && strings.HasPrefix(key, bookingPrefix) && bk.Start.Equal(slotA) {
			once.Do(func() { close(stuck) })
			<-release
		}
	}
	a.svc.db.beforeWrite.Store(&hook)
	bookedA := make(chan Booking, 1)
	go func() {
		bk, err := a.svc.Book(context.Background(), BookRequest{At: slotA, DurationMin: 25})
		if err != nil {
			t.Errorf("booking slot A: %v", err)
		}
		bookedA <- bk
	}()
	waitClosed(t, stuck, "slot A's write under way")

	bookedB := make(chan Booking, 1)
	go func() {
		bk, err := a.svc.Book(context.Background(), BookRequest{At: slotB, DurationMin: 25})
		if err != nil {
			t.Errorf("booking slot B: %v", err)
		}
		bookedB <- bk
	}()
	var ba Booking
	waitFor(t, 10*time.Second, "a's booking for slot B while slot A's write hangs", func() bool {
		select {
		case ba = <-bookedB:
			return true
		default:
			return false
		}
	})
	bb := b.book(t, BookRequest{At: slotB, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched for slot B while slot A's write hangs", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if got := len(a.svc.Bookings()); got != 1 {
		t.Errorf("a lists %d bookings while slot A's is being written; want 1 (memory follows the disk)", got)
	}

	releaseOnce.Do(func() { close(release) })
	stored := <-bookedA
	if mem, disk := a.booking(stored.ID), storedBooking(t, a, stored.ID); mem.State != StateSearching || disk.State != StateSearching {
		t.Fatalf("slot A's booking: %s in memory, %s on disk; want searching in both", mem.State, disk.State)
	}
	checkInvariants(t, nodes)
}

// While a booking is being written, another booking for the same time is
// refused: the overlap check counts the booking being written.
func TestOverlapCountsBookingBeingWritten(t *testing.T) {
	n := newTestNode(t, nil)
	slot := nextSlot(5 * time.Hour)
	stuck, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	// Only the first booking's write hangs: other writes (the identity
	// stamp minted in the background, a second booking that the check
	// failed to refuse) go through, so a wrong answer shows as one.
	var blocking sync.Mutex
	blocked := false
	hook := func(key string, v any) {
		if _, ok := v.(*Booking); !ok || !strings.HasPrefix(key, bookingPrefix) {
			return
		}
		blocking.Lock()
		first := !blocked
		blocked = true
		blocking.Unlock()
		if first {
			once.Do(func() { close(stuck) })
			<-release
		}
	}
	n.svc.db.beforeWrite.Store(&hook)
	first := make(chan error, 1)
	go func() {
		_, err := n.svc.Book(context.Background(), BookRequest{At: slot, DurationMin: 25})
		first <- err
	}()
	waitClosed(t, stuck, "the first booking's write under way")
	second := make(chan error, 1)
	go func() {
		_, err := n.svc.Book(context.Background(), BookRequest{At: slot, DurationMin: 50})
		second <- err
	}()
	var err error
	waitFor(t, 10*time.Second, "the second booking's answer", func() bool {
		select {
		case err = <-second:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("a second booking for the same time while the first was being written: %v; want a conflict", err)
	}
	releaseOnce.Do(func() { close(release) })
	if err := <-first; err != nil {
		t.Fatalf("first booking: %v", err)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	waitFor(t, 10*time.Second, what, func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	})
}
