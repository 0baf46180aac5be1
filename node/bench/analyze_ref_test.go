package bench

// The analysis as it was before it was indexed (analyze.go at cdc0a64,
// checkBookings as at f949f55),
// kept only as the reference the indexed one must agree with
// (TestAnalysisMatchesReference).

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// refRecordTopic is the offer topic of node n's booking id ("" if unknown).
func refRecordTopic(n nodeState, id string) string {
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

// refCheckBookings verifies the invariants over every node's final
// bookings: no node holds two live bookings that overlap (a double
// booking), no booking is named by two partners (also a double booking),
// and every match is mutual (else one-sided).
func refCheckBookings(nodes []nodeState, now time.Time) bookingCheck {
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
			s1, e1 := liveInterval(b, now)
			for _, oid := range ids[x+1:] {
				o := n.final[oid]
				if !o.Live() {
					continue
				}
				if s2, e2 := liveInterval(o, now); s1.Before(e2) && s2.Before(e1) {
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
					since = fmt.Sprintf(", changed %.1f s before the check", now.Sub(pb.UpdatedAt).Seconds())
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

// refOpenSpans is when a booking was searching while its node was online:
// the time it was open to be matched.
func refOpenSpans(events []bookingEvent, id string, online []span, end time.Time) []span {
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

// refExactMax is the largest number of pairs any matcher could have formed
// from the requests that are still wanted at the end (searching or
// matched, not cancelled by their user), where two requests can pair when
// they are compatible, of different users, and were either open (searching,
// node online) at the same time for at least opportunity in all, or were
// in fact paired with each other. It is a maximum matching of that graph
// (Edmonds' blossom algorithm), computed per class of requests with the
// same kind, duration, start and quiet flag. static is the same without
// the timing condition: every two compatible requests wanted at the end.
func refExactMax(reqs []request, nodes []nodeState, pairs map[bkey]bkey, end time.Time, opportunity time.Duration) (exact, static int) {
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
			open: refOpenSpans(n.bookings, r.bookingID, n.online, end),
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

// refMatchTimes measures, for every final pair, the time from the moment both
// requests were open (searching, node online) to the moment both sides
// had stored the match (the acceptor's synced write, which comes after the
// proposer's), in the last matching episode of the two.
func refMatchTimes(nodes []nodeState, pairs map[bkey]bkey, end time.Time) []time.Duration {
	var out []time.Duration
	for a, b := range pairs {
		if a.node > b.node || (a.node == b.node && a.id > b.id) {
			continue // each pair once
		}
		ta0, ta1, ok1 := refEpisode(nodes[a.node], a.id, b.id, end)
		tb0, tb1, ok2 := refEpisode(nodes[b.node], b.id, a.id, end)
		if !ok1 || !ok2 {
			continue
		}
		t0, t1 := later(ta0, tb0), later(ta1, tb1)
		out = append(out, max(t1.Sub(t0), 0))
	}
	return out
}

// refEpisode finds, for booking id matched with partnerBooking at the end,
// when its last open span began before that match, and when it stored the
// match.
func refEpisode(n nodeState, id, partnerBooking string, end time.Time) (openedAt, matchedAt time.Time, ok bool) {
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
	for _, s := range refOpenSpans(n.bookings, id, n.online, end) {
		if !s.from.After(matchedAt) {
			openedAt = s.from
		}
	}
	return openedAt, matchedAt, !openedAt.IsZero()
}

// refPropagation measures, for every offer record a node published, the time
// until it (or a newer record of the same booking) was on the board of
// every other node that was ready (running, with a gossip mesh) when it
// was published and stayed so until it arrived. A record that some such
// node never got, while it stayed ready to the end, is incomplete. A node
// that has just (re)started counts from when its mesh formed: until then
// nothing can reach it, and what it missed comes with its first board
// pull.
func refPropagation(nodes []nodeState, from, end time.Time) (samples []time.Duration, incomplete, open, withdrawn int) {
	type okey struct {
		owner peer.ID
		id    string
	}
	type seen struct {
		seq uint64
		at  time.Time
	}
	boards := make([]map[okey][]seen, len(nodes))
	for i, n := range nodes {
		boards[i] = map[okey][]seen{}
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished {
				k := okey{e.e.Owner, e.e.BookingID}
				boards[i][k] = append(boards[i][k], seen{e.e.Seq, e.at})
			}
		}
	}
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
			k := okey{e.e.Owner, e.e.BookingID}
			topic := refRecordTopic(n, e.e.BookingID)
			var last time.Duration
			complete := true
			for t := range nodes {
				// The nodes on the record's shard when it was published.
				if t == o || !onlineAt(nodes[t].shards[topic], e.at) {
					continue
				}
				var got time.Time
				for _, s := range boards[t][k] {
					if s.seq >= e.e.Seq {
						got = later(s.at, e.at)
						break
					}
				}
				switch {
				case !got.IsZero() && onlineThroughout(nodes[t].shards[topic], e.at, got):
					last = max(last, got.Sub(e.at))
				case got.IsZero() && onlineThroughout(nodes[t].shards[topic], e.at, end):
					complete = false
				}
			}
			if complete {
				samples = append(samples, last)
			} else {
				incomplete++
			}
		}
	}
	return samples, incomplete, open, withdrawn
}

// refDebugPropagation prints the slowest offer records: who published,
// who got them last, and how.
func refDebugPropagation(w io.Writer, nodes []nodeState, from, end time.Time) {
	type rec struct {
		owner, last int
		lat         time.Duration
		at          time.Time
		src         matchmaking.OfferSource
		wd          bool
		ownerUp     time.Duration
		lastUp      time.Duration
		within100   int
		targets     int
	}
	upFor := func(n nodeState, t time.Time) time.Duration {
		for _, s := range n.online {
			if !s.from.After(t) && !s.to.Before(t) {
				return t.Sub(s.from)
			}
		}
		return -1
	}
	var recs []rec
	for o, n := range nodes {
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished || e.at.Before(from) {
				continue
			}
			r := rec{owner: o, last: -1, at: e.at, wd: e.e.Withdrawn, ownerUp: upFor(n, e.at)}
			topic := refRecordTopic(n, e.e.BookingID)
			for t := range nodes {
				if t == o || !onlineAt(nodes[t].shards[topic], e.at) {
					continue
				}
				r.targets++
				for _, x := range nodes[t].offers {
					if x.e.Source != matchmaking.OfferPublished && x.e.Owner == e.e.Owner && x.e.BookingID == e.e.BookingID && x.e.Seq >= e.e.Seq {
						d := max(x.at.Sub(e.at), 0)
						if d < 100*time.Millisecond {
							r.within100++
						}
						if d > r.lat || r.last == -1 {
							r.lat, r.last, r.src = d, t, x.e.Source
							r.lastUp = upFor(nodes[t], e.at)
						}
						break
					}
				}
			}
			recs = append(recs, r)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].lat > recs[j].lat })
	fmt.Fprintf(w, "slowest offer records (of %d):\n", len(recs))
	for _, r := range recs[:min(15, len(recs))] {
		fmt.Fprintf(w, "  %8v at +%6.1fs owner %3d (up %6.1fs) withdrawn=%-5v last node %3d (up %6.1fs) by %-6s; %d/%d within 100 ms\n",
			r.lat.Truncate(time.Millisecond), r.at.Sub(from).Seconds(), r.owner, r.ownerUp.Seconds(), r.wd, r.last, r.lastUp.Seconds(), r.src, r.within100, r.targets)
	}
}
