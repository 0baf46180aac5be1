package matchmaking

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A node's open offer on a shard crowded with open offers is re-announced
// less often, and lives as much longer, than one on a quiet shard: all
// owners together re-announce about reannounceBudget records per
// AnnounceInterval on a shard, not one per open offer.
func TestCrowdedShardReannouncesLess(t *testing.T) {
	n := newTestNode(t, func(c *Config) { c.NoLanes = true }) // the day shard stretches; a lane has at most laneVolume bookings
	crowded := sameDaySlot(4*time.Hour, time.Hour)
	quiet := crowded.Add(2 * time.Hour)
	now := time.Now()
	// 3 x reannounceBudget other owners with an open offer in the crowded
	// slot's shard (50 minutes); none in the quiet one's (25 minutes).
	for i := range 3 * reannounceBudget {
		key, owner := mustKey(t)
		o := validOffer(owner, now)
		o.BookingId = fmt.Sprintf("b%d", i)
		o.StartUnix, o.DurationMin = crowded.Unix(), 50
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		if !n.svc.board.put(o, owner, env, now) {
			t.Fatalf("offer %d not admitted", i)
		}
	}
	busy := n.book(t, BookRequest{Kind: KindScheduled, At: crowded, DurationMin: 50, Activity: ActivityMoving, Quiet: true})
	calm := n.book(t, BookRequest{Kind: KindScheduled, At: quiet, DurationMin: 25})
	ttlOf := func(id string) time.Duration {
		var ttl time.Duration
		waitFor(t, 20*time.Second, "the booking's offer announced", func() bool {
			n.svc.mu.Lock()
			defer n.svc.mu.Unlock()
			if o := n.svc.lastOffer[id]; o != nil {
				ttl = time.Until(time.Unix(o.GetExpiresUnix(), 0))
				return true
			}
			return false
		})
		return ttl
	}
	cfg := n.svc.cfg
	if got := n.svc.reannounceEvery(ShardOf(busy)); got != 3*cfg.AnnounceInterval {
		t.Errorf("crowded shard: re-announced every %v, want %v (3 x the budget open)", got, 3*cfg.AnnounceInterval)
	}
	if got := n.svc.reannounceEvery(ShardOf(calm)); got != cfg.AnnounceInterval {
		t.Errorf("quiet shard: re-announced every %v, want %v", got, cfg.AnnounceInterval)
	}
	// Whole seconds on the wire, and the test's own delays: a margin.
	if ttl, want := ttlOf(busy.ID), 3*cfg.OfferTTL; ttl < want-5*time.Second || ttl > want+time.Second {
		t.Errorf("crowded shard's record lives %v, want about %v", ttl, want)
	}
	if ttl, want := ttlOf(calm.ID), cfg.OfferTTL; ttl < want-5*time.Second || ttl > want+time.Second {
		t.Errorf("quiet shard's record lives %v, want about %v", ttl, want)
	}
	// Due times follow the shard: an offer announced one AnnounceInterval
	// ago is due on the quiet shard, not on the crowded one.
	n.svc.mu.Lock()
	n.svc.announced[busy.ID] = n.svc.now().Add(-cfg.AnnounceInterval)
	n.svc.announced[calm.ID] = n.svc.now().Add(-cfg.AnnounceInterval)
	busyDue := n.svc.announceDueLocked(busy.ID, n.svc.reannounceEvery(ShardOf(busy)), n.svc.now())
	calmDue := n.svc.announceDueLocked(calm.ID, n.svc.reannounceEvery(ShardOf(calm)), n.svc.now())
	n.svc.mu.Unlock()
	if busyDue || !calmDue {
		t.Errorf("after one AnnounceInterval: crowded due %v (want false), quiet due %v (want true)", busyDue, calmDue)
	}
}

// An anti-entropy pull asks only for what the responder took recently: a
// record it has held for longer is not sent again (the join's full pull
// brought it), so a pull's size follows the shard's recent traffic, not
// its board.
func TestAntiEntropyPullsOnlyRecent(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	b.view()
	now := time.Now()
	put := func(id string, took time.Time) { putTaken(t, a, id, now, took) }
	put("old", now.Add(-10*time.Minute))
	put("new", now)
	has := func(id string) bool { return onBoard(b, id) }
	b.svc.pullBoard(context.Background(), a.id(), nil, 2*time.Minute)
	if !has("new") || has("old") {
		t.Fatalf("a pull of the last 2 minutes brought new %v (want true), old %v (want false)", has("new"), has("old"))
	}
	b.svc.syncBoard(context.Background(), a.id(), nil)
	if !has("old") {
		t.Fatal("a full pull did not bring the older record")
	}
}

// A peer joining a shard the node has already pulled brings only what it
// took since the node's last pull (plus joinPullGap), not its whole board;
// the first pull brings everything.
func TestJoinPullAfterFirstIsRecent(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	b.view()
	now := time.Now()
	k := ShardOf(Booking{Kind: KindScheduled, Start: time.Unix(validOffer(a.id(), now).GetStartUnix(), 0), DurationMin: 50})
	st := b.svc.joinedTopic(k)
	if st == nil {
		t.Fatalf("b is not on %s after viewing", k)
	}
	put := func(id string, took time.Time) { putTaken(t, a, id, now, took) }
	put("old", now.Add(-10*time.Minute))
	put("new", now.Add(-5*time.Second))
	has := func(id string) bool { return onBoard(b, id) }
	connect(t, a, b)
	lastPull := time.Now().Add(-30 * time.Second)
	st.lastPull.Store(&lastPull)
	b.svc.joinPull(context.Background(), a.id(), st)
	if !has("new") || has("old") {
		t.Fatalf("a join pull after the first brought new %v (want true), old %v (want false)", has("new"), has("old"))
	}
	st.lastPull.Store(nil)
	b.svc.joinPull(context.Background(), a.id(), st)
	if !has("old") {
		t.Fatal("the first join pull did not bring the whole board")
	}
}

// putTaken stores on n's board an open offer of a fresh owner, booking
// id, in the slot validOffer picks at now, as if n took it at took.
func putTaken(t *testing.T, n *testNode, id string, now, took time.Time) {
	t.Helper()
	key, owner := mustKey(t)
	o := validOffer(owner, now)
	o.BookingId, o.ExpiresUnix = id, now.Add(50*time.Minute).Unix()
	env, err := sealOffer(o, key)
	if err != nil {
		t.Fatal(err)
	}
	if !n.svc.board.put(o, owner, env, took) {
		t.Fatalf("offer %s not admitted", id)
	}
}

// onBoard reports whether n's board holds a record of booking id.
func onBoard(n *testNode, id string) bool {
	for _, e := range n.svc.board.all() {
		if e.offer.GetBookingId() == id {
			return true
		}
	}
	return false
}
