package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// nodeState is what the analysis knows about one node at the end.
type nodeState struct {
	id       peer.ID
	final    map[string]matchmaking.Booking // by booking ID
	bookings []bookingEvent
	offers   []offerEvent
	online   []span // the node was running
	ready    []span // ... and was connected again after a start
	// shards: per offer topic, when the node was on it with a peer
	// there (could receive the topic's offers).
	shards map[string][]span
	// clockShift is how far the node's clock (its bookings' times) runs
	// ahead of the wall clock the events were recorded with.
	clockShift time.Duration
}

// recordTopic is the offer topic a record e of node n went out on: the
// one the node says (its slot class or lane), else its booking's day
// shard ("" if unknown).
func recordTopic(n nodeState, e offerEvent) string {
	if e.e.Topic != "" {
		return e.e.Topic
	}
	id := e.e.BookingID
	if b, ok := n.final[id]; ok {
		return matchmaking.ShardOf(b).Topic()
	}
	for _, e := range n.bookings {
		if e.b.ID == id {
			return matchmaking.ShardOf(e.b).Topic()
		}
	}
	return ""
}

type bkey struct {
	node int
	id   string
}

// bookingCheck is the verdict on the final bookings of all nodes.
type bookingCheck struct {
	pairs       map[bkey]bkey // mutual matches, both directions
	double      int
	oneSided    int
	unconfirmed int
	problems    []string
}

func liveInterval(b matchmaking.Booking, now time.Time) (time.Time, time.Time) {
	d := time.Duration(b.DurationMin) * time.Minute
	if b.Kind == matchmaking.KindNow && b.State == matchmaking.StateSearching {
		return now, now.Add(d)
	}
	return b.Start, b.Start.Add(d)
}

// checkBookings verifies the invariants over every node's final
// bookings: no node holds two live bookings that overlap (a double
// booking), no booking is named by two partners (also a double booking),
// and every match is mutual (else one-sided).
func checkBookings(nodes []nodeState, now time.Time) bookingCheck {
	c := bookingCheck{pairs: map[bkey]bkey{}}
	byID := map[string]int{}
	for i, n := range nodes {
		byID[n.id.String()] = i
	}
	named := map[bkey]bkey{}
	for i, n := range nodes {
		ids := make([]string, 0, len(n.final))
		for id := range n.final {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for x, id := range ids {
			b := n.final[id]
			if !b.Live() {
				continue
			}
			s1, e1 := liveInterval(b, now.Add(n.clockShift))
			for _, oid := range ids[x+1:] {
				o := n.final[oid]
				if !o.Live() {
					continue
				}
				if s2, e2 := liveInterval(o, now.Add(n.clockShift)); s1.Before(e2) && s2.Before(e1) {
					c.double++
					c.problems = append(c.problems, fmt.Sprintf("node %d holds overlapping live bookings %s and %s", i, id, oid))
				}
			}
			if b.State != matchmaking.StateMatched {
				continue
			}
			if !b.Confirmed {
				c.unconfirmed++
			}
			j, ok := byID[b.Partner]
			if !ok {
				c.oneSided++
				c.problems = append(c.problems, fmt.Sprintf("node %d booking %s names unknown partner %s", i, id, b.Partner))
				continue
			}
			me, them := bkey{i, id}, bkey{j, b.PartnerBooking}
			if prev, dup := named[them]; dup {
				c.double++
				c.problems = append(c.problems, fmt.Sprintf("node %d booking %s is named by %v and %v", j, b.PartnerBooking, prev, me))
			}
			named[them] = me
			pb, ok := nodes[j].final[b.PartnerBooking]
			if !ok || pb.State != matchmaking.StateMatched || pb.Partner != n.id.String() || pb.PartnerBooking != id {
				c.oneSided++
				// Whether the partner's side is still telling (a Cancel
				// being re-sent) or has given up tells a slow delivery
				// from a lost one.
				var since string
				if ok {
					since = fmt.Sprintf(", changed %.1f s before the check", now.Add(nodes[j].clockShift).Sub(pb.UpdatedAt).Seconds())
					if pb.CancelUnsent {
						since += ", its Cancel not yet acknowledged (being re-sent)"
					}
				}
				c.problems = append(c.problems, fmt.Sprintf("one-sided: node %d booking %s names node %d booking %s, which is %s with %q/%q%s",
					i, id, j, b.PartnerBooking, pb.State, pb.Partner, pb.PartnerBooking, since),
					"    node "+fmt.Sprint(i)+": "+history(n, id, now),
					"    node "+fmt.Sprint(j)+": "+history(nodes[j], b.PartnerBooking, now))
				continue
			}
			if !pb.Start.Equal(b.Start) || pb.DurationMin != b.DurationMin {
				c.oneSided++
				c.problems = append(c.problems, fmt.Sprintf("node %d booking %s and node %d booking %s disagree on the time", i, id, j, pb.ID))
				continue
			}
			c.pairs[me] = them
		}
	}
	return c
}

// openSpans is when a booking was searching while its node was online:
// the time it was open to be matched.
func openSpans(events []bookingEvent, id string, online []span, end time.Time) []span {
	var searching []span
	var from time.Time
	open := false
	for _, e := range events {
		if e.b.ID != id {
			continue
		}
		s := e.b.State == matchmaking.StateSearching
		switch {
		case s && !open:
			from, open = e.at, true
		case !s && open:
			searching = append(searching, span{from, e.at})
			open = false
		}
	}
	if open {
		searching = append(searching, span{from, end})
	}
	return intersect(searching, online)
}

// compatible is the protocol's compatibility rule (docs/protocol.md
// section 1) for two requests of different users.
func compatible(a, b matchmaking.BookRequest) bool {
	if a.Kind != b.Kind || a.DurationMin != b.DurationMin || a.Quiet != b.Quiet {
		return false
	}
	if a.Kind == matchmaking.KindScheduled && !a.At.Equal(b.At) {
		return false
	}
	return a.Activity == matchmaking.ActivityAnything || b.Activity == matchmaking.ActivityAnything || a.Activity == b.Activity
}

// exactMax is the largest number of pairs any matcher could have formed
// from the requests that are still wanted at the end (searching or
// matched, not cancelled by their user), where two requests can pair when
// they are compatible, of different users, and were either open (searching,
// node online) at the same time for at least opportunity in all, or were
// in fact paired with each other. It is a maximum matching of that graph
// (Edmonds' blossom algorithm), computed per class of requests with the
// same kind, duration, start and quiet flag. static is the same without
// the timing condition: every two compatible requests wanted at the end.
func exactMax(reqs []request, nodes []nodeState, pairs map[bkey]bkey, end time.Time, opportunity time.Duration) (exact, static int) {
	type vertex struct {
		k    bkey
		req  matchmaking.BookRequest
		open []span
	}
	classes := map[string][]vertex{}
	for _, r := range reqs {
		if r.bookingID == "" {
			continue
		}
		n := nodes[r.node]
		if b, ok := n.final[r.bookingID]; !ok || !b.Live() {
			continue
		}
		key := fmt.Sprintf("%s/%d/%v", r.req.Kind, r.req.DurationMin, r.req.Quiet)
		if r.req.Kind == matchmaking.KindScheduled {
			key += "/" + r.req.At.UTC().Format(time.RFC3339)
		}
		classes[key] = append(classes[key], vertex{
			k: bkey{r.node, r.bookingID}, req: r.req,
			open: openSpans(n.bookings, r.bookingID, n.online, end),
		})
	}
	for _, vs := range classes {
		adj := make([][]int, len(vs))
		sadj := make([][]int, len(vs))
		for i := range vs {
			for j := i + 1; j < len(vs); j++ {
				a, b := vs[i], vs[j]
				if a.k.node == b.k.node || !compatible(a.req, b.req) {
					continue
				}
				sadj[i] = append(sadj[i], j)
				sadj[j] = append(sadj[j], i)
				if pairs[a.k] == b.k || total(intersect(a.open, b.open)) >= opportunity {
					adj[i] = append(adj[i], j)
					adj[j] = append(adj[j], i)
				}
			}
		}
		exact += matchingSize(maxMatching(len(vs), adj))
		static += matchingSize(maxMatching(len(vs), sadj))
	}
	return exact, static
}

// matchTimes measures, for every final pair, the time from the moment both
// requests were open (searching, node online) to the moment both sides
// had stored the match (the acceptor's synced write, which comes after the
// proposer's), in the last matching episode of the two.
func matchTimes(nodes []nodeState, pairs map[bkey]bkey, end time.Time) []time.Duration {
	var out []time.Duration
	for a, b := range pairs {
		if a.node > b.node || (a.node == b.node && a.id > b.id) {
			continue // each pair once
		}
		ta0, ta1, ok1 := episode(nodes[a.node], a.id, b.id, end)
		tb0, tb1, ok2 := episode(nodes[b.node], b.id, a.id, end)
		if !ok1 || !ok2 {
			continue
		}
		t0, t1 := later(ta0, tb0), later(ta1, tb1)
		out = append(out, max(t1.Sub(t0), 0))
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// episode finds, for booking id matched with partnerBooking at the end,
// when its last open span began before that match, and when it stored the
// match.
func episode(n nodeState, id, partnerBooking string, end time.Time) (openedAt, matchedAt time.Time, ok bool) {
	var evs []bookingEvent
	for _, e := range n.bookings {
		if e.b.ID == id {
			evs = append(evs, e)
		}
	}
	first := len(evs)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].b.State != matchmaking.StateMatched || evs[i].b.PartnerBooking != partnerBooking {
			break
		}
		first = i
	}
	if first == len(evs) {
		return openedAt, matchedAt, false
	}
	matchedAt = evs[first].at
	for _, s := range openSpans(n.bookings, id, n.online, end) {
		if !s.from.After(matchedAt) {
			openedAt = s.from
		}
	}
	return openedAt, matchedAt, !openedAt.IsZero()
}

// propagation measures, for every offer record a node published, the time
// until it (or a newer record of the same booking) was on the board of
// every other node that was on the record's shard (its offer topic, with a
// peer there: nodeLog.shard) when it was published and stayed so until it
// arrived. A record that some such node never got, while it stayed on the
// shard to the end, is incomplete. A node that has just joined the shard,
// or (re)started, counts from when the shard's first peer appeared: until
// then nothing can reach it, and what it missed comes with its first board
// pull.
func propagation(nodes []nodeState, from, end time.Time) (samples []time.Duration, incomplete, open, withdrawn int) {
	ix := newOfferIndex(nodes)
	for o, n := range nodes {
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished || e.at.Before(from) {
				continue
			}
			if e.e.Withdrawn {
				withdrawn++
			} else {
				open++
			}
			var last time.Duration
			complete := true
			ix.eachTarget(o, recordTopic(n, e), e, func(_ int, shard []span, at time.Time, got int) {
				switch {
				case got >= 0 && onlineThroughout(shard, e.at, later(at, e.at)):
					last = max(last, later(at, e.at).Sub(e.at))
				case got < 0 && onlineThroughout(shard, e.at, end):
					complete = false
				}
			})
			if complete {
				samples = append(samples, last)
			} else {
				incomplete++
			}
		}
	}
	return samples, incomplete, open, withdrawn
}

// history tells what happened to node n's booking id and when the node
// was offline, in seconds before now: what a one-sided booking needs to
// be traced to its cause.
func history(n nodeState, id string, now time.Time) string {
	ago := func(t time.Time) string { return fmt.Sprintf("-%.1fs", now.Sub(t).Seconds()) }
	var out []string
	for _, e := range n.bookings {
		if e.b.ID != id {
			continue
		}
		h := ago(e.at) + " " + string(e.b.State)
		if e.b.Partner != "" {
			p := e.b.Partner
			h += " with " + p[len(p)-4:] + "/" + e.b.PartnerBooking
		}
		if e.b.Confirmed {
			h += " confirmed"
		}
		if e.b.CancelUnsent {
			h += " cancel-unsent"
		}
		if e.b.Note != "" {
			h += fmt.Sprintf(" (%s)", e.b.Note)
		}
		out = append(out, h)
	}
	var off []string
	for k, s := range n.online {
		if k > 0 {
			off = append(off, ago(n.online[k-1].to)+".."+ago(s.from))
		}
	}
	if len(off) > 0 {
		out = append(out, "offline "+strings.Join(off, ", "))
	}
	return strings.Join(out, "; ")
}

// offerIndex finds, for an offer record, the nodes that were on its shard
// and the first copy each of them received. Without it, every record
// looked at every node's shards and then scanned that node's copies of the
// booking from the first: a cost of records x N, and of the square of a
// booking's records (re-announced every 30 s, and on every shard join):
// at N = 1000, tens of millions of map look-ups and more scan steps (that
// analysis was still running 8 minutes after an N = 1000 run).
type offerIndex struct {
	nodes []nodeState
	base  time.Time // receipt times are kept from here
	// members are, per offer topic, the nodes ever on it (with their
	// spans there), by node index.
	members map[string][]shardMember
	keys    map[offerKey]int32 // a booking's records -> its index in runs
	// runs are, per key, the nodes that received records of it (by node
	// index) and where in got those records are.
	runs [][]receiptRun
	// got is every received record, by key, then node, then arrival.
	got []receipt
}

// offerKey names the records of one booking.
type offerKey struct {
	owner peer.ID
	id    string
}

type shardMember struct {
	node  int
	spans []span
}

// receiptRun is where node's received records of one key are in got.
type receiptRun struct{ node, from, to int32 }

// receipt is one received record: the highest seq its node had received
// of the key up to and including it (so the first record with a seq of at
// least s is the first receipt with a maxSeq of at least s, found by
// binary search), when it came, and its place in its node's offer log.
//
// Seq and time are kept here, next to the key's other receipts, because
// reading them from the logs (millions of scattered reads) took most of
// the time. The time is kept as its distance from the index's base, so
// that the receipts hold no pointer for the garbage collector; base.Add
// gives back a time that compares and subtracts as the original does as
// long as all the times have monotonic clock readings (time.Now: every
// recorded time) or none have (the tests' synthetic runs).
type receipt struct {
	maxSeq uint64
	at     time.Duration
	idx    int32
}

func newOfferIndex(nodes []nodeState) *offerIndex {
	ix := &offerIndex{nodes: nodes, members: map[string][]shardMember{}, keys: map[offerKey]int32{}}
	for i, n := range nodes {
		for topic, spans := range n.shards {
			ix.members[topic] = append(ix.members[topic], shardMember{i, spans})
		}
	}
	// The key of every received record, and how many each key has.
	var keyOf, count []int32
	for _, n := range nodes {
		for _, e := range n.offers {
			if e.e.Source == matchmaking.OfferPublished {
				continue
			}
			k := offerKey{e.e.Owner, e.e.BookingID}
			kid, ok := ix.keys[k]
			if !ok {
				kid = int32(len(count))
				ix.keys[k] = kid
				count = append(count, 0)
			}
			count[kid]++
			keyOf = append(keyOf, kid)
		}
	}
	// Then each in its key's place (a counting sort): nodes in order and
	// each node's log in order, so every key's records come by node, and
	// one node's in the order they arrived.
	for _, n := range nodes {
		if len(n.offers) > 0 {
			ix.base = n.offers[0].at
			break
		}
	}
	next := make([]int32, len(count))
	var sum int32
	for k, c := range count {
		next[k] = sum
		sum += c
	}
	ix.got = make([]receipt, sum)
	ix.runs = make([][]receiptRun, len(count))
	maxSeq := make([]uint64, len(count)) // per key, of its current run
	j := 0
	for i, n := range nodes {
		for x, e := range n.offers {
			if e.e.Source == matchmaking.OfferPublished {
				continue
			}
			kid := keyOf[j]
			j++
			p := next[kid]
			next[kid]++
			if rs := ix.runs[kid]; len(rs) > 0 && rs[len(rs)-1].node == int32(i) {
				rs[len(rs)-1].to = p + 1
				maxSeq[kid] = max(maxSeq[kid], e.e.Seq)
			} else {
				ix.runs[kid] = append(rs, receiptRun{int32(i), p, p + 1})
				maxSeq[kid] = e.e.Seq
			}
			ix.got[p] = receipt{maxSeq[kid], e.at.Sub(ix.base), int32(x)}
		}
	}
	return ix
}

// eachTarget calls f, in node order, for every node t other than the
// publisher (index owner) that was on topic when record e was published,
// with t's spans on the topic, and when the first record of e's booking
// with e's seq or higher reached t and where it is in t's offer log (got;
// -1 if none did): e itself, or a newer one.
func (ix *offerIndex) eachTarget(owner int, topic string, e offerEvent, f func(t int, shard []span, at time.Time, got int)) {
	var runs []receiptRun
	if kid, ok := ix.keys[offerKey{e.e.Owner, e.e.BookingID}]; ok {
		runs = ix.runs[kid]
	}
	r := 0
	for _, m := range ix.members[topic] {
		if m.node == owner || !onlineAt(m.spans, e.at) {
			continue
		}
		for r < len(runs) && int(runs[r].node) < m.node {
			r++
		}
		var at time.Time
		got := -1
		if r < len(runs) && int(runs[r].node) == m.node {
			// The first to arrive with e's seq or higher.
			rs := ix.got[runs[r].from:runs[r].to]
			lo, hi := 0, len(rs) // sort.Search, without its closure
			for lo < hi {
				if mid := int(uint(lo+hi) >> 1); rs[mid].maxSeq < e.e.Seq {
					lo = mid + 1
				} else {
					hi = mid
				}
			}
			if lo < len(rs) {
				at, got = ix.base.Add(rs[lo].at), int(rs[lo].idx)
			}
		}
		f(m.node, m.spans, at, got)
	}
}
