package matchmaking

import (
	"sync"
	"testing"
	"time"
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
	n.book(t, BookRequest{At: nextSlot(2 * time.Hour), DurationMin: 25})
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
