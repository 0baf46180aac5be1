package matchmaking

import (
	"bufio"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// TestClassReceivesOnlyItsOffers: with slot class topics, a node whose one
// open booking is day D 09:00, 25 minutes, is on that class's topic only:
// offers for another start the same day, or for the same start but quiet,
// do not even arrive at it, while a node that views the day gets them all
// (the publishers send them to its day shard too).
func TestClassReceivesOnlyItsOffers(t *testing.T) {
	var wlog, vlog shardLog
	w := newTestNode(t, func(c *Config) { c.OnOffer = wlog.add })
	viewer := newTestNode(t, func(c *Config) { c.OnOffer = vlog.add })
	viewer.view()
	pubs := startNodes(t, 3, nil)
	for _, p := range pubs {
		connect(t, w, p)
		connect(t, viewer, p)
	}
	at := sameDaySlot(26*time.Hour, time.Hour)
	bw := w.book(t, BookRequest{At: at, DurationMin: 25, Activity: ActivityDesk})
	want := pubs[0].book(t, BookRequest{At: at, DurationMin: 25, Activity: ActivityMoving}) // w's class, no match
	others := []Booking{
		pubs[1].book(t, BookRequest{At: at.Add(time.Hour), DurationMin: 25}),
		pubs[2].book(t, BookRequest{At: at, DurationMin: 25, Quiet: true}),
	}
	all := append([]Booking{want}, others...)
	waitFor(t, 10*time.Second, "the viewer to see all three offers", func() bool {
		seen := map[string]bool{}
		for _, e := range vlog.received() {
			seen[e.BookingID] = true
		}
		return !slices.ContainsFunc(all, func(b Booking) bool { return !seen[b.ID] })
	})
	waitFor(t, 10*time.Second, "w to see the offer of its class", func() bool {
		return slices.ContainsFunc(w.svc.Board(time.Time{}, time.Time{}), func(o BoardOffer) bool { return o.BookingID == want.ID })
	})
	mine := classKeyOfBooking(bw).Topic()
	onlyOn(t, w, &wlog, mine, others)
}

// onlyOn checks that node w, whose offer log is wlog, is on topic mine
// alone, received messages of no other topic and took none of the offers
// of others.
func onlyOn(t *testing.T, w *testNode, wlog *shardLog, mine string, others []Booking) {
	t.Helper()
	if got := w.svc.OfferTopics(); !slices.Equal(got, []string{mine}) {
		t.Fatalf("w is on %v, want only %s", got, mine)
	}
	for topic, n := range w.recv.topics() {
		if topic != mine {
			t.Errorf("%d messages of %s arrived at w", n, topic)
		}
	}
	for _, e := range wlog.received() {
		for _, o := range others {
			if e.BookingID == o.ID {
				t.Errorf("w's board got %s's offer (%s) by %s", o.ID, classKeyOfBooking(o).Topic(), e.Source)
			}
		}
	}
}

// TestFocusNowClassReceivesOnlyItsOffers: "focus now" offers have slot
// classes too (one per duration and quiet flag): a node looking for a
// 25 minute focus-now partner receives only that class's offers, while a
// node that watches the now shard (the calendar, the demo's partners)
// gets all of them through the publishers' fanout.
func TestFocusNowClassReceivesOnlyItsOffers(t *testing.T) {
	var wlog, vlog shardLog
	w := newTestNode(t, func(c *Config) { c.OnOffer = wlog.add })
	watcher := newTestNode(t, func(c *Config) { c.OnOffer = vlog.add })
	watcher.svc.WatchFocusNow()
	pubs := startNodes(t, 3, nil)
	for _, p := range pubs {
		connect(t, w, p)
		connect(t, watcher, p)
	}
	bw := w.book(t, BookRequest{Kind: KindNow, DurationMin: 25, Activity: ActivityDesk})
	want := pubs[0].book(t, BookRequest{Kind: KindNow, DurationMin: 25, Activity: ActivityMoving}) // w's class, no match
	others := []Booking{
		pubs[1].book(t, BookRequest{Kind: KindNow, DurationMin: 50}),
		pubs[2].book(t, BookRequest{Kind: KindNow, DurationMin: 25, Quiet: true}),
	}
	all := append([]Booking{want}, others...)
	waitFor(t, 10*time.Second, "the watcher to see all three offers", func() bool {
		seen := map[string]bool{}
		for _, e := range vlog.received() {
			seen[e.BookingID] = true
		}
		return !slices.ContainsFunc(all, func(b Booking) bool { return !seen[b.ID] })
	})
	waitFor(t, 10*time.Second, "w to see the offer of its class", func() bool {
		return slices.ContainsFunc(w.svc.Board(time.Time{}, time.Time{}), func(o BoardOffer) bool { return o.BookingID == want.ID })
	})
	mine := classKeyOfBooking(bw).Topic()
	if mine != "/tandem/offers/2/now/25/any" {
		t.Fatalf("a 25 minute focus-now booking's class topic is %s", mine)
	}
	onlyOn(t, w, &wlog, mine, others)
}

// TestCrowdedClassSplitsIntoLanes: seven nodes book one slot one after
// another with a lane volume of 2, so the class's topic fills and later
// bookings go down into lanes. Every booking that can pair does (three
// pairs, no double or one-sided booking), and the one left over climbs
// back to the class's topic, where leftovers meet.
func TestCrowdedClassSplitsIntoLanes(t *testing.T) {
	for _, kind := range []Kind{KindScheduled, KindNow} {
		t.Run(string(kind), func(t *testing.T) { crowdedClassSplitsIntoLanes(t, kind) })
	}
}

func crowdedClassSplitsIntoLanes(t *testing.T, kind Kind) {
	var mu sync.Mutex
	lanes := map[string]bool{}
	var deeper, settledOnLane int // level decisions reported (Config.OnPlace)
	tune := func(c *Config) {
		c.LaneVolume = 2
		c.OnPlace = func(e PlaceEvent) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case e.Deeper:
				deeper++
			case strings.Contains(e.Topic, "/l"):
				settledOnLane++
			}
		}
		c.OnShard = func(e ShardEvent) {
			if e.State == "joined" && strings.Contains(e.Topic, "/l") {
				mu.Lock()
				lanes[e.Topic] = true
				mu.Unlock()
			}
		}
	}
	nodes := make([]*testNode, 7)
	for i := range nodes {
		nodes[i] = newTestNode(t, tune)
		for _, m := range nodes[:i] {
			connect(t, nodes[i], m)
		}
	}
	at := nextSlot(5 * time.Hour)
	var last Booking
	for i, n := range nodes {
		req := BookRequest{At: at, DurationMin: 50}
		if kind == KindNow {
			req = BookRequest{Kind: KindNow, DurationMin: 50}
		}
		last = n.book(t, req)
		waitFor(t, 10*time.Second, "the booking placed", func() bool {
			return n.booking(last.ID).State != StateSearching || n.svc.settledPlace(last.ID)
		})
		if i%2 == 1 {
			waitFor(t, 20*time.Second, "the pair so far matched", func() bool {
				return stateCounts(nodes)[StateMatched] == i+1 && settled(nodes)
			})
		}
	}
	if pairs := checkInvariants(t, nodes); pairs != 3 {
		t.Fatalf("%d pairs, want 3:\n%s", pairs, describe(nodes))
	}
	mu.Lock()
	used, wentDeeper, onLane := len(lanes), deeper, settledOnLane
	mu.Unlock()
	if used == 0 {
		t.Fatal("no booking went down into a lane")
	}
	if wentDeeper == 0 || onLane == 0 {
		t.Fatalf("placements reported: %d deeper, %d settled on a lane; want both", wentDeeper, onLane)
	}
	leftover := nodes[len(nodes)-1]
	waitFor(t, 20*time.Second, "the leftover back on its class's topic", func() bool {
		k := leftover.svc.placeOf(last)
		return k.IsClass() && k.Lane == "" && leftover.svc.settledPlace(last.ID)
	})
	if b := leftover.booking(last.ID); b.State != StateSearching {
		t.Fatalf("the leftover: %+v", b)
	}
}

// TestWaitingBookingKeepsNewcomerUp: with a lane volume of 2, a and b
// match on the class's topic, which then shows two bookings. c goes down
// into a lane, finds nobody there and climbs back. When d books, the
// class's topic is as crowded, but it shows c waiting: d stays there and
// pairs with c instead of going down into a lane of its own, away from
// the one booking it could meet.
func TestWaitingBookingKeepsNewcomerUp(t *testing.T) {
	var mu sync.Mutex
	laneJoins := map[int]int{} // by node index
	nodes := make([]*testNode, 4)
	for i := range nodes {
		nodes[i] = newTestNode(t, func(c *Config) {
			c.LaneVolume = 2
			if i == 3 { // d: see below
				c.settleWait = time.Minute
			}
			c.OnShard = func(e ShardEvent) {
				if e.State == "joined" && strings.Contains(e.Topic, "/l") {
					mu.Lock()
					laneJoins[i]++
					mu.Unlock()
				}
			}
		})
		for _, m := range nodes[:i] {
			connect(t, nodes[i], m)
		}
	}
	joins := func(i int) int {
		mu.Lock()
		defer mu.Unlock()
		return laneJoins[i]
	}
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]
	at := nextSlot(5 * time.Hour)
	req := BookRequest{At: at, DurationMin: 50}
	// c views the day, so it holds a's and b's records (they reach the day
	// shard by fanout) whenever it books: otherwise, joining the class's
	// topic after a and b have left it, it saw no volume, stayed there and
	// never went down (1 run in 20 on a loaded machine).
	c.view()
	ba := a.book(t, req)
	waitFor(t, 10*time.Second, "a's booking placed", func() bool { return a.svc.settledPlace(ba.ID) })
	bb := b.book(t, req)
	waitFor(t, 20*time.Second, "a and b matched, and c holding their records", func() bool {
		ea, eb := c.svc.board.get(a.id(), ba.ID), c.svc.board.get(b.id(), bb.ID)
		return stateCounts(nodes[:2])[StateMatched] == 2 && settled(nodes[:2]) && ea != nil && ea.withdrawn && eb != nil && eb.withdrawn
	})
	bc := c.book(t, req)
	waitFor(t, 20*time.Second, "c down into a lane and back on the class's topic", func() bool {
		k := c.svc.placeOf(bc)
		return joins(2) > 0 && k.Lane == "" && c.svc.settledPlace(bc.ID)
	})
	// d must place its booking by what a board pull shows, not by the
	// time bound, which a slow machine can reach before d has heard of c
	// (its settleWait, above); and that pull must come from c, not from a or
	// b still lingering on the class's topic without c's offer.
	class := c.svc.placeOf(bc)
	waitFor(t, 20*time.Second, "a and b gone from the class's topic", func() bool {
		return a.svc.joinedTopic(class) == nil && b.svc.joinedTopic(class) == nil
	})
	bd := d.book(t, req)
	waitFor(t, 20*time.Second, "c and d matched", func() bool {
		return c.booking(bc.ID).PartnerBooking == bd.ID && d.booking(bd.ID).PartnerBooking == bc.ID && settled(nodes)
	})
	if pairs := checkInvariants(t, nodes); pairs != 2 {
		t.Fatalf("%d pairs, want 2:\n%s", pairs, describe(nodes))
	}
	if n := joins(3); n != 0 {
		t.Fatalf("d joined %d lanes while c was waiting on the class's topic", n)
	}
}

// TestPlacedWhenFinderFindsNobody: a booking waits to be placed until it
// knows what is on its topic. A node alone on the topic learns that from
// its finder (nobody there, and no peer came), not only from a board
// pull or the 2 s that bound the wait: a booking that went down into an
// empty lane, as most do, would otherwise wait the whole 2 s there.
func TestPlacedWhenFinderFindsNobody(t *testing.T) {
	n := newTestNode(t, nil) // no finder: it learns nothing but by pulls and time
	b := n.book(t, BookRequest{At: nextSlot(5 * time.Hour), DurationMin: 25})
	st := n.svc.joinedNow()[classKeyOfBooking(b)]
	if st == nil {
		t.Fatalf("not on its class's topic; on %v", n.svc.OfferTopics())
	}
	if st.known(0, settleWait) {
		t.Fatal("known with no pull, no lookup and no time passed")
	}
	st.foundNobody.Store(true)
	if !st.known(0, settleWait) {
		t.Fatal("not known after the finder found nobody")
	}
	if !n.svc.settledPlace(b.ID) {
		waitFor(t, 10*time.Second, "the booking placed", func() bool { return n.svc.settledPlace(b.ID) })
	}
}

// TestMatchedLeavesClassTopicSoon: once a booking on a slot class's topic
// matches, its node leaves the topic when classLinger ends, not after the
// day shards' re-announce interval (30 s) nor at its next periodic check
// of its shards: in either it would take in a busy class's traffic. a's
// periodic check is made rare here (every 7.5 minutes), so only the
// linger's own end can take it off the topic within the wait.
func TestMatchedLeavesClassTopicSoon(t *testing.T) {
	a := newTestNode(t, func(c *Config) { c.AnnounceInterval = time.Hour })
	b := newTestNode(t, nil)
	connect(t, a, b)
	req := BookRequest{At: nextSlot(5 * time.Hour), DurationMin: 25}
	ba := a.book(t, req)
	b.book(t, req)
	nodes := []*testNode{a, b}
	waitFor(t, 20*time.Second, "a and b matched", func() bool {
		return stateCounts(nodes)[StateMatched] == 2 && settled(nodes)
	})
	k := classKeyOfBooking(ba)
	if slices.Contains(a.svc.interest.Wanted(time.Now().Add(classLinger)), k) {
		t.Fatalf("a still wants %s %v after its booking matched", k.Topic(), classLinger)
	}
	waitFor(t, 10*time.Second, "a off its class's topic", func() bool {
		return !slices.Contains(a.svc.OfferTopics(), k.Topic())
	})
}

// A newcomer's first pull of a topic brings the open offers and only when
// each withdrawal expires (on a busy class most records are withdrawals);
// they still count into the volume its booking is placed by, and it
// passes them on to the next newcomer. A pull that is not a first one
// brings the withdrawals.
func TestFirstPullCountsWithdrawals(t *testing.T) {
	r := newTestNode(t, nil)
	r.view() // keeps the day's records, of every class
	now := time.Now()
	records := func(n, open int) [][]byte {
		var envs [][]byte
		for i := range n {
			key, id := mustKey(t)
			o := validOffer(id, now) // all expire in the same second
			o.Withdrawn = i >= open
			env, err := sealOffer(o, key)
			if err != nil {
				t.Fatal(err)
			}
			envs = append(envs, env)
		}
		return envs
	}
	envs := records(7, 3) // 3 open offers, 4 withdrawals
	_, from := mustKey(t)
	if added, bad := r.svc.mergeBoard(envs, from); added != 7 || bad != 0 {
		t.Fatalf("the responder took %d records (%d bad), want 7", added, bad)
	}
	class := classKeyOf(validOffer("", now))

	q := newTestNode(t, nil)
	connect(t, q, r)
	ask := func(from, to *testNode, openOnly bool) *pb.BoardResponse {
		t.Helper()
		s, err := from.h.NewStream(context.Background(), to.id(), BoardProtocolV2)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		protodelim.MarshalTo(s, &pb.BoardRequest{Version: protoVersion, Topics: []string{class.Topic()}, OpenOnly: openOnly})
		s.CloseWrite()
		resp := &pb.BoardResponse{}
		if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(s), resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := ask(q, r, true); len(resp.GetEnvelopes()) != 3 || len(resp.GetWithdrawnTtlS()) != 4 {
		t.Fatalf("open only: %d records, %d withdrawals listed; want 3 and 4", len(resp.GetEnvelopes()), len(resp.GetWithdrawnTtlS()))
	}
	if resp := ask(q, r, false); len(resp.GetEnvelopes()) != 7 || len(resp.GetWithdrawnTtlS()) != 0 {
		t.Fatalf("whole: %d records, %d withdrawals listed; want 7 and 0", len(resp.GetEnvelopes()), len(resp.GetWithdrawnTtlS()))
	}

	// q on the class's topic (r is not, so only this pull brings its records).
	at := time.Unix(validOffer("", now).GetStartUnix(), 0)
	bq := q.book(t, BookRequest{At: at, DurationMin: 50, Quiet: false, Activity: ActivityDesk})
	st := q.svc.joinedTopic(class)
	if st == nil {
		t.Fatalf("q is not on %s", class.Topic())
	}
	if st.lastPull.Load() != nil {
		t.Skip("q pulled the topic before the test did (a peer on it)")
	}
	q.svc.syncBoard(context.Background(), r.id(), st)
	if got := len(st.gone.live(q.svc.now())); got != 4 {
		t.Fatalf("q's first pull brought %d withdrawal claims, want 4", got)
	}
	if got, _ := q.svc.board.volumeIn(class, q.id(), q.svc.now()); got != 3 {
		t.Fatalf("q's board holds %d records of the class, want the 3 open offers", got)
	}
	if vol, claimed := q.svc.topicVolume(st, q.svc.now()); vol != 7 || claimed != 4 {
		t.Fatalf("q sees a volume of %d (%d claimed), want 7 (4)", vol, claimed)
	}
	// While q is there, 3 more bookings of the class are withdrawn (by
	// gossip; merged here): other records, expiring in the same second as
	// the 4 claimed. They are not taken for those claims (gone.go, the
	// tags): with expiries alone every member of a busy topic took its new
	// withdrawals for the newest claims, and the count stopped growing.
	if added, _ := q.svc.mergeBoard(records(3, 0), from); added != 3 {
		t.Fatalf("q took %d new withdrawals, want 3", added)
	}
	if vol, claimed := q.svc.topicVolume(st, q.svc.now()); vol != 10 || claimed != 4 {
		t.Fatalf("with 3 new withdrawals q sees a volume of %d (%d claimed), want 10 (4)", vol, claimed)
	}
	// q, now a member, passes the claims on to the next newcomer with its
	// own: the topic's memory is not one member's stay.
	z := newTestNode(t, nil)
	connect(t, z, q)
	if resp := ask(z, q, true); len(resp.GetWithdrawnTtlS()) != 7 || len(resp.GetWithdrawnTag()) != 7 {
		t.Fatalf("the next newcomer was told of %d withdrawals (%d tagged), want the 4 q was told of and its 3", len(resp.GetWithdrawnTtlS()), len(resp.GetWithdrawnTag()))
	}
	q.svc.syncBoard(context.Background(), r.id(), st) // not a first pull
	if got, _ := q.svc.board.volumeIn(class, q.id(), q.svc.now()); got != 10 {
		t.Fatalf("after a second pull q's board holds %d records of the class, want all 10", got)
	}
	// The 4 withdrawals are on q's board now as well as claimed: each
	// counts once, in q's volume and in what q tells a newcomer.
	if vol, claimed := q.svc.topicVolume(st, q.svc.now()); vol != 10 || claimed != 0 {
		t.Fatalf("after a second pull q sees a volume of %d (%d claimed), want 10 (0)", vol, claimed)
	}
	if resp := ask(z, q, true); len(resp.GetWithdrawnTtlS()) != 7 {
		t.Fatalf("after q's second pull the next newcomer was told of %d withdrawals, want 7", len(resp.GetWithdrawnTtlS()))
	}

	// q leaves the topic (its booking cancelled), and its board forgets
	// the topic's records; what it knew of the withdrawals stays with it
	// as claims, which it holds again when a booking brings it back.
	if _, err := q.svc.Cancel(context.Background(), bq.ID, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "q off the class's topic", func() bool { return q.svc.joinedTopic(class) == nil })
	q.book(t, BookRequest{At: at, DurationMin: 50, Quiet: false, Activity: ActivityAnything})
	st = q.svc.joinedTopic(class)
	if st == nil {
		t.Fatalf("q is not on %s again", class.Topic())
	}
	if got := st.gone.live(q.svc.now()); len(got) != 7 || slices.ContainsFunc(got, func(c claim) bool { return c.tag == 0 }) {
		t.Fatalf("back on the topic q holds %d claims (%v), want the 7 withdrawals it knew of, tagged", len(got), got)
	}
}
