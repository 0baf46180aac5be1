package matchmaking

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestConcurrentPullsOfOnePeerAllAnswered: a node that joins many topics
// at once (the calendar joins 46 shards) pulls each from the same peer at
// the same moment. Each pull is answered in turn. Before, a grant charged
// the whole budget left until its reply was written, so every pull but
// the first was refused, and a late joiner's calendar missed the offers
// of the shards whose pulls were refused (TestLateJoinerSeesOffersAndMatches
// failed 2 runs in 13).
func TestConcurrentPullsOfOnePeerAllAnswered(t *testing.T) {
	n := newTestNode(t, nil)
	b := n.book(t, BookRequest{At: nextSlot(2 * time.Hour), DurationMin: 25})
	// A reply carries the node's own offer once the booking is placed on
	// its topic (lanes.go: up to settleWait with no peer there).
	waitFor(t, 10*time.Second, "the booking placed", func() bool { return n.svc.settledPlace(b.ID) })
	a := newAttacker(t)
	connect(t, &testNode{h: a.h}, n)
	const pulls = 24
	var wg sync.WaitGroup
	errs := make(chan error, pulls)
	for range pulls {
		wg.Go(func() {
			envs, _, err := a.pullBoard(n.id(), protoVersion)
			if err == nil && len(envs) != 1 {
				t.Errorf("a reply of %d envelopes, want the node's one offer", len(envs))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	refused := 0
	for err := range errs {
		if err != nil {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("%d of %d pulls at once refused", refused, pulls)
	}
}

// TestSyncTurnQueueBounds: requests queue per peer up to maxQueuedPulls
// and for all peers up to maxQueuedTotal; past either, turn refuses at
// once, and every queued request gets its turn or gives up with its
// context, leaving nothing behind.
func TestSyncTurnQueueBounds(t *testing.T) {
	b := newSyncBudget()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queued := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.queued
	}
	var wg sync.WaitGroup
	var served atomic.Int64
	enqueue := func(p peer.ID) {
		wg.Go(func() {
			if done, ok := b.turn(ctx, p); ok {
				served.Add(1)
				<-ctx.Done() // hold the turn until the test ends
				done()
			}
		})
	}
	one := peer.ID("one peer")
	for range maxQueuedPulls {
		enqueue(one)
	}
	waitFor(t, 5*time.Second, "one peer's queue full", func() bool { return queued() == maxQueuedPulls })
	if _, ok := b.turn(ctx, one); ok {
		t.Fatal("a request past the peer's queue got a turn")
	}
	for i := 0; queued() < maxQueuedTotal; i++ {
		enqueue(peer.ID(fmt.Sprint("peer ", i)))
		i := i
		waitFor(t, 5*time.Second, "the request queued", func() bool { return queued() == maxQueuedPulls+i+1 })
	}
	if _, ok := b.turn(ctx, peer.ID("a newcomer")); ok {
		t.Fatal("a request past the total queue got a turn")
	}
	if got := served.Load(); got != 1+maxQueuedTotal-maxQueuedPulls {
		t.Fatalf("%d turns held, want one per peer (%d)", got, 1+maxQueuedTotal-maxQueuedPulls)
	}
	cancel()
	wg.Wait()
	if queued() != 0 || len(b.turns) != 0 {
		t.Fatalf("left behind: %d queued, %d peers", queued(), len(b.turns))
	}
}
