package matchmaking

import (
	"bufio"
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// shardLog records the offer events of one node with the shard of each
// record, from the board's copy.
type shardLog struct {
	mu     sync.Mutex
	events []OfferEvent
}

func (l *shardLog) add(e OfferEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *shardLog) received() []OfferEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []OfferEvent
	for _, e := range l.events {
		if e.Source != OfferPublished {
			out = append(out, e)
		}
	}
	return out
}

func shardTopicOf(kind Kind, at time.Time, dur int) string {
	return ShardOf(Booking{Kind: kind, Start: at, DurationMin: dur}).Topic()
}

// TestShardReceivesOnlyItsOffers: a node with one open booking (day D,
// 25 minutes) is on that shard only; offers for other durations, other
// days and focus now do not even arrive at it (gossip carries them past
// it), while a node that views them all gets them all.
func TestShardReceivesOnlyItsOffers(t *testing.T) {
	var wlog, vlog shardLog
	// Day shards, as a node with lanes off uses them (TestClassReceivesOnlyItsOffers is the same with lanes).
	w := newTestNode(t, func(c *Config) { c.OnOffer, c.NoLanes = wlog.add, true })
	viewer := newTestNode(t, func(c *Config) { c.OnOffer, c.NoLanes = vlog.add, true })
	viewer.view()
	pubs := startNodes(t, 4, func(c *Config) { c.NoLanes = true })
	for _, p := range pubs {
		connect(t, w, p) // every publisher is w's direct neighbour
		connect(t, viewer, p)
	}
	day := sameDaySlot(26*time.Hour, time.Hour) // day D (and an hour on); D+1 is a day later
	w.book(t, BookRequest{At: day, DurationMin: 25, Activity: ActivityDesk})
	want := pubs[0].book(t, BookRequest{At: day.Add(time.Hour), DurationMin: 25}) // same shard, another slot
	others := []Booking{
		pubs[1].book(t, BookRequest{At: day, DurationMin: 50}),
		pubs[2].book(t, BookRequest{At: day.Add(24 * time.Hour), DurationMin: 25}),
		pubs[3].book(t, BookRequest{Kind: KindNow, DurationMin: 25}),
	}
	all := append([]Booking{want}, others...)
	waitFor(t, 10*time.Second, "the viewer to see all four offers", func() bool {
		seen := map[string]bool{}
		for _, e := range vlog.received() {
			seen[e.BookingID] = true
		}
		for _, b := range all {
			if !seen[b.ID] {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "w to see the offer of its shard", func() bool {
		return slices.ContainsFunc(w.svc.Board(time.Time{}, time.Time{}), func(o BoardOffer) bool { return o.BookingID == want.ID })
	})
	// Re-announcements and board syncs have had time to leak, if they would.
	waitFor(t, 10*time.Second, "a board sync round", func() bool {
		return time.Since(want.CreatedAt) > 3*time.Second
	})
	onlyOn(t, w, &wlog, shardTopicOf(KindScheduled, day, 25), others)
	for _, o := range w.svc.Board(time.Time{}, time.Time{}) {
		if o.BookingID != want.ID {
			t.Errorf("w's board shows %+v", o)
		}
	}
}

// TestMatchingAcrossShards: bookings on different shards match at the
// same time, including one node with a booking on each.
func TestMatchingAcrossShards(t *testing.T) {
	nodes := startNodes(t, 5, nil)
	d := nextSlot(5 * time.Hour)
	both := nodes[0]
	b1 := both.book(t, BookRequest{At: d, DurationMin: 25})
	b2 := both.book(t, BookRequest{At: d.Add(24 * time.Hour), DurationMin: 50})
	p1 := nodes[1].book(t, BookRequest{At: d, DurationMin: 25})
	p2 := nodes[2].book(t, BookRequest{At: d.Add(24 * time.Hour), DurationMin: 50})
	n1 := nodes[3].book(t, BookRequest{Kind: KindNow, DurationMin: 75})
	n2 := nodes[4].book(t, BookRequest{Kind: KindNow, DurationMin: 75})
	waitFor(t, 20*time.Second, "three pairs on three shards", func() bool {
		for _, c := range []struct {
			n  *testNode
			id string
		}{{both, b1.ID}, {both, b2.ID}, {nodes[1], p1.ID}, {nodes[2], p2.ID}, {nodes[3], n1.ID}, {nodes[4], n2.ID}} {
			if b := c.n.booking(c.id); b.State != StateMatched || !b.Confirmed {
				return false
			}
		}
		return true
	})
	if got := checkInvariants(t, nodes); got != 3 {
		t.Fatalf("pairs = %d, want 3", got)
	}
	if both.booking(b1.ID).PartnerBooking != p1.ID || both.booking(b2.ID).PartnerBooking != p2.ID {
		t.Fatal("pairs across shards")
	}
	// Matched bookings release their shards: after the linger the node
	// leaves them.
	waitFor(t, 20*time.Second, "the matched node to leave its shards", func() bool {
		return len(both.svc.OfferTopics()) == 0
	})
}

// TestViewShowsCounts: a node that looks at a day sees every open offer
// of that day (what the calendar counts as "N people have this slot
// open"), and nothing of a day it does not look at.
func TestViewShowsCounts(t *testing.T) {
	nodes := startNodes(t, 5, func(c *Config) { c.AnnounceInterval = 2 * time.Second })
	v := nodes[0]
	d := nextSlot(50 * time.Hour)
	day := d.Truncate(24 * time.Hour)
	// Three open offers for one slot that cannot pair with each other.
	nodes[1].book(t, BookRequest{At: d, DurationMin: 50, Activity: ActivityDesk})
	nodes[2].book(t, BookRequest{At: d, DurationMin: 50, Activity: ActivityMoving})
	nodes[3].book(t, BookRequest{At: d, DurationMin: 50, Activity: ActivityDesk, Quiet: true})
	nodes[4].book(t, BookRequest{At: d.Add(24 * time.Hour), DurationMin: 50}) // the next day
	v.svc.View(day, day.Add(24*time.Hour))
	count := func() int {
		c := 0
		for _, o := range v.svc.Board(day, day.Add(24*time.Hour)) {
			if o.Start.Equal(d) && o.DurationMin == 50 {
				c++
			}
		}
		return c
	}
	waitFor(t, 15*time.Second, "3 people with the slot open", func() bool { return count() == 3 })
	if got := len(v.svc.Board(time.Time{}, time.Time{})); got != 3 {
		t.Fatalf("the board holds %d offers; the next day's is not viewed", got)
	}
	if slices.Contains(v.svc.OfferTopics(), shardTopicOf(KindScheduled, d.Add(24*time.Hour), 50)) {
		t.Fatal("v joined the next day's shard")
	}
}

// TestBoardSyncPerShard: a node that joins a shard late gets the offers
// of that shard from a peer's board by sync, and nothing of the peer's
// other shards.
func TestBoardSyncPerShard(t *testing.T) {
	// No re-announcements; day shards, as with lanes off (with lanes, late's
	// other slot is another topic: TestClassReceivesOnlyItsOffers).
	slow := func(c *Config) { c.AnnounceInterval, c.NoLanes = 10*time.Minute, true }
	a, b, hub := newTestNode(t, slow), newTestNode(t, slow), newTestNode(t, slow)
	hub.view()
	connect(t, a, hub)
	connect(t, b, hub)
	d := sameDaySlot(6*time.Hour, time.Hour) // late's slot, an hour on, is on a's UTC day (a's shard)
	ba := a.book(t, BookRequest{At: d, DurationMin: 25, Activity: ActivityDesk})
	bb := b.book(t, BookRequest{At: d, DurationMin: 75})
	waitFor(t, 10*time.Second, "the hub to hold both", func() bool { return len(hub.svc.Board(time.Time{}, time.Time{})) == 2 })

	var llog shardLog
	late := newTestNode(t, func(c *Config) { slow(c); c.OnOffer = llog.add })
	bl := late.book(t, BookRequest{At: d.Add(time.Hour), DurationMin: 25}) // a's shard, not a's slot: no match
	connect(t, late, hub)                                                  // only the hub, which holds a's offer
	waitFor(t, 10*time.Second, "late to get a's offer by sync", func() bool {
		return slices.ContainsFunc(llog.received(), func(e OfferEvent) bool { return e.BookingID == ba.ID && e.Source == OfferSync })
	})
	// The hub's answer carried its 25-minute shard only.
	st := late.svc.joinedTopic(ShardOf(late.booking(bl.ID)))
	late.svc.syncBoard(context.Background(), hub.id(), st)
	for _, e := range llog.received() {
		if e.BookingID == bb.ID {
			t.Fatalf("late got b's offer of another shard by %s", e.Source)
		}
	}

	// The request and its answer, on the wire.
	s, err := late.h.NewStream(context.Background(), hub.id(), BoardProtocolV2)
	if err != nil {
		t.Fatal(err)
	}
	protodelim.MarshalTo(s, &pb.BoardRequest{Version: protoVersion, Topics: []string{shardTopicOf(KindScheduled, d, 75)}})
	s.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(s), resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEnvelopes()) != 1 {
		t.Fatalf("asked for the 75-minute shard, got %d records", len(resp.GetEnvelopes()))
	}
	if _, id, _, _ := peekOffer(resp.GetEnvelopes()[0]); id != bb.ID {
		t.Fatalf("got record %s, want b's %s", id, bb.ID)
	}
}

// TestV1NodeMatchesV2Node: a version 1 node (one topic, board sync
// version 1) and a version 2 node match either way round: the version 2
// node joins version 1's topic while such a peer is connected, and leaves
// it when it has gone.
func TestV1NodeMatchesV2Node(t *testing.T) {
	for _, v1Lower := range []bool{true, false} {
		var old, cur *testNode
		for old == nil || (old.id() < cur.id()) != v1Lower {
			old = &testNode{t: t, tune: func(c *Config) { c.AnnounceInterval = 3 * time.Second }, v1: true, dir: t.TempDir()}
			old.key, _ = mustKey(t)
			old.start()
			t.Cleanup(old.stop)
			cur = newTestNode(t, func(c *Config) { c.AnnounceInterval = 3 * time.Second })
		}
		connect(t, old, cur)
		waitFor(t, 10*time.Second, "the v2 node on version 1's topic", func() bool {
			return slices.Contains(cur.svc.OfferTopics(), shard.V1Topic)
		})
		if got := old.svc.OfferTopics(); !slices.Equal(got, []string{shard.V1Topic}) {
			t.Fatalf("the v1 node is on %v", got)
		}
		d := nextSlot(8 * time.Hour)
		bo := old.book(t, BookRequest{At: d, DurationMin: 50})
		bc := cur.book(t, BookRequest{At: d, DurationMin: 50})
		waitFor(t, 20*time.Second, "the v1 and v2 nodes to match", func() bool {
			return old.booking(bo.ID).Confirmed && cur.booking(bc.ID).Confirmed
		})
		if checkInvariants(t, []*testNode{old, cur}) != 1 {
			t.Fatal("no pair")
		}
		old.stop()
		waitFor(t, 30*time.Second, "the v2 node to leave version 1's topic", func() bool {
			return !slices.Contains(cur.svc.OfferTopics(), shard.V1Topic)
		})
	}
}

// TestV1Off: with V1Off a version 2 node never uses version 1's topic, so
// it does not see a version 1 node's offers.
func TestV1Off(t *testing.T) {
	old := &testNode{t: t, v1: true, dir: t.TempDir()}
	old.key, _ = mustKey(t)
	old.start()
	t.Cleanup(old.stop)
	cur := newTestNode(t, func(c *Config) { c.V1 = V1Off })
	cur.view()
	connect(t, old, cur)
	old.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 50})
	other := newTestNode(t, nil) // a version 2 node's offer does arrive
	connect(t, other, cur)
	other.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 25})
	waitFor(t, 10*time.Second, "the v2 offer", func() bool { return len(cur.svc.Board(time.Time{}, time.Time{})) == 1 })
	if slices.Contains(cur.svc.OfferTopics(), shard.V1Topic) {
		t.Fatal("on version 1's topic with V1Off")
	}
	if n := cur.recv.topics()[shard.V1Topic]; n != 0 {
		t.Fatalf("%d version 1 messages arrived", n)
	}
}

// FuzzBoardRequest: a board request from a peer either names offer topics
// (at most maxBoardTopics) or is refused; it never panics.
func FuzzBoardRequest(f *testing.F) {
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, &pb.BoardRequest{Version: 1, Topics: []string{shard.NowTopic, "/tandem/offers/2/2026-12-03/25"}})
	f.Add(buf.Bytes(), true)
	buf.Reset()
	protodelim.MarshalTo(&buf, &pb.BoardRequest{Version: 1, Topics: []string{shard.NowTopic}, RecentS: 1<<32 - 1, OpenOnly: true})
	f.Add(buf.Bytes(), true)
	buf.Reset()
	protodelim.MarshalTo(&buf, &pb.BoardRequest{Version: 1, Topics: []string{"/tandem/offers/2/2026-12-03/50/0900", "/tandem/offers/2/2026-12-03/50/0900q/l01"}})
	f.Add(buf.Bytes(), true)
	f.Add([]byte{0x02, 0x08, 0x01}, false)
	f.Add([]byte{0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, data []byte, v2 bool) {
		req := &pb.BoardRequest{}
		if err := (protodelim.UnmarshalOptions{MaxSize: maxBoardRequestV2}).UnmarshalFrom(bufio.NewReader(bytes.NewReader(data)), req); err != nil {
			return
		}
		want, err := boardFilter(v2, req)
		if err != nil {
			return
		}
		if v2 && len(req.GetTopics()) > maxBoardTopics {
			t.Fatal("accepted too many topics")
		}
		want.accepts(shard.NowKey, "")
		want.accepts(shard.Class(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC), 50, false), "owner")
	})
}
