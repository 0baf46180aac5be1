package bench

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// synthRun is a synthetic but realistic end state of a swarm run, for the
// analysis's tests and benchmarks: the workload of genWorkload (about
// 1.85 requests per node, 10 % of nodes offline once, 10 % of requests
// cancelled), some requests matched in pairs, shards joined while a
// booking searches (left 30 s after, with short drops), an offer record
// per search every 24-30 s (and a withdrawal when it ends), and every
// record arriving at the other nodes on its shard after a short delay
// (3 % after seconds, 0.3 % never) or, for a node joining the shard
// later, by a board pull. It is built to look like an N = 1000 run that
// matched little, the case whose analysis took minutes.
type synthRun struct {
	nodes     []nodeState
	reqs      []request
	from, end time.Time // the workload's start (propagation counts from it) and the end of settling
	published int       // offer records published (and withdrawals)
	received  int       // offer records received
}

func (r synthRun) String() string {
	return fmt.Sprintf("%d nodes, %d requests, %d records published, %d received", len(r.nodes), len(r.reqs), r.published, r.received)
}

// synthOpts shape a synthetic run.
type synthOpts struct {
	// matchShare is the chance that a request is paired with an earlier
	// compatible one still waiting.
	matchShare float64
	// every is how often an open offer is announced again (24-30 s when
	// zero, as announceLoop does); a few seconds stands for a storm of
	// re-announcements (every shard "ready" announces again).
	every time.Duration
	// monotonic gives every time a monotonic clock reading, as recorded
	// times have (time.Now), rather than a wall time only.
	monotonic bool
}

// synthSwarm builds a run of n nodes from seed.
func synthSwarm(n int, seed uint64, o synthOpts) synthRun {
	rng := rand.New(rand.NewPCG(seed, 0x5e47))
	start := time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)
	if o.monotonic {
		start = time.Now()
	}
	matchShare := o.matchShare
	const work = 330 * time.Second // 180 s of workload stretched under load, as at N = 1000
	end := start.Add(work + 150*time.Second)
	w := genWorkload(seed, n, work, start)
	run := synthRun{from: start, end: end}
	uniform := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Float64()*float64(hi-lo)) }
	again := func() time.Duration {
		if o.every > 0 {
			return uniform(o.every*4/5, o.every)
		}
		return uniform(24*time.Second, 30*time.Second)
	}

	nodes := make([]nodeState, n)
	for i := range nodes {
		id := make([]byte, 38)
		copy(id, "\x00\x24\x08\x01\x12\x20") // an identity multihash of an ed25519 key
		for j := 6; j < len(id); j++ {
			id[j] = byte(rng.IntN(256))
		}
		nodes[i] = nodeState{id: peer.ID(id), final: map[string]matchmaking.Booking{}, shards: map[string][]span{}}
		nodes[i].online = []span{{start, end}}
	}
	for _, ev := range w.events {
		if ev.kind == evOffline {
			nodes[ev.node].online[0].to = start.Add(ev.at)
		}
		if ev.kind == evOnline {
			nodes[ev.node].online = append(nodes[ev.node].online, span{start.Add(ev.at), end})
		}
	}
	for i := range nodes {
		for _, s := range nodes[i].online {
			nodes[i].ready = append(nodes[i].ready, span{s.from.Add(uniform(200*time.Millisecond, 2*time.Second)), s.to})
		}
	}
	online := func(node int, t time.Time) bool { return onlineAt(nodes[node].online, t) }

	// Bookings: each request is booked at its time; some are paired with
	// an earlier compatible one still searching.
	type bk struct {
		req      int
		b        matchmaking.Booking
		cancelAt time.Time // zero: never
		events   []bookingEvent
	}
	bks := make([]*bk, 0, len(w.requests))
	reqs := append([]request(nil), w.requests...)
	for i := range reqs {
		r := &reqs[i]
		if rng.Float64() < 0.01 {
			r.err = fmt.Errorf("refused") // a clash the node refused
			continue
		}
		id := make([]byte, 8)
		for j := range id {
			id[j] = byte(rng.IntN(256))
		}
		r.bookingID = hex.EncodeToString(id)
		at := start.Add(r.at)
		b := matchmaking.Booking{ID: r.bookingID, Start: r.req.At, DurationMin: r.req.DurationMin, Kind: r.req.Kind,
			State: matchmaking.StateSearching, Activity: r.req.Activity, Quiet: r.req.Quiet, CreatedAt: at, UpdatedAt: at}
		if b.Kind == matchmaking.KindNow {
			b.Start = at
		}
		x := &bk{req: i, b: b, events: []bookingEvent{{at, b}}}
		if r.cancelAt > 0 {
			x.cancelAt = start.Add(r.cancelAt)
		}
		bks = append(bks, x)
	}
	slices.SortStableFunc(bks, func(a, b *bk) int { return a.events[0].at.Compare(b.events[0].at) })
	set := func(x *bk, at time.Time, f func(*matchmaking.Booking)) {
		f(&x.b)
		x.b.UpdatedAt = at
		x.events = append(x.events, bookingEvent{at, x.b})
	}
	waiting := map[string][]*bk{} // by class
	for _, x := range bks {
		r := reqs[x.req]
		class := fmt.Sprintf("%s/%d/%v/%v", r.req.Kind, r.req.DurationMin, r.req.Quiet, r.req.At)
		at := x.events[0].at
		var partner *bk
		if rng.Float64() < matchShare {
			for k, y := range waiting[class] {
				if y.req != x.req && reqs[y.req].node != r.node && compatible(reqs[y.req].req, r.req) && y.b.State == matchmaking.StateSearching {
					partner = y
					waiting[class] = slices.Delete(waiting[class], k, k+1)
					break
				}
			}
		}
		if partner == nil {
			waiting[class] = append(waiting[class], x)
			continue
		}
		tm := at.Add(uniform(10*time.Millisecond, 8*time.Second))
		ta := tm.Add(uniform(2*time.Millisecond, 60*time.Millisecond))
		p, q := x, partner
		pn, qn := r.node, reqs[partner.req].node
		if (!p.cancelAt.IsZero() && p.cancelAt.Before(ta)) || (!q.cancelAt.IsZero() && q.cancelAt.Before(ta)) || !online(pn, ta) || !online(qn, ta) {
			waiting[class] = append(waiting[class], x, partner)
			continue
		}
		set(p, tm, func(b *matchmaking.Booking) {
			b.State, b.Partner, b.PartnerBooking = matchmaking.StateMatched, nodes[qn].id.String(), q.b.ID
		})
		if rng.Float64() < 0.05 {
			continue // the acceptor never stored it: one-sided
		}
		set(q, ta, func(b *matchmaking.Booking) {
			b.State, b.Partner, b.PartnerBooking = matchmaking.StateMatched, nodes[pn].id.String(), p.b.ID
		})
		set(p, ta.Add(uniform(time.Millisecond, 200*time.Millisecond)), func(b *matchmaking.Booking) { b.Confirmed = true })
		set(q, ta.Add(uniform(time.Millisecond, 200*time.Millisecond)), func(b *matchmaking.Booking) { b.Confirmed = true })
	}
	// Cancellations; a cancelled match frees the partner.
	byID := map[string]*bk{}
	for _, x := range bks {
		byID[x.b.ID] = x
	}
	for _, x := range bks {
		if x.cancelAt.IsZero() || x.b.State == matchmaking.StateCancelled {
			continue
		}
		partner := x.b.PartnerBooking
		set(x, x.cancelAt, func(b *matchmaking.Booking) { b.State = matchmaking.StateCancelled })
		if y := byID[partner]; y != nil && y.b.State == matchmaking.StateMatched && y.b.PartnerBooking == x.b.ID {
			set(y, x.cancelAt.Add(uniform(10*time.Millisecond, 500*time.Millisecond)), func(b *matchmaking.Booking) {
				b.State, b.Partner, b.PartnerBooking, b.Confirmed = matchmaking.StateSearching, "", "", false
			})
		}
	}
	for _, x := range bks {
		slices.SortStableFunc(x.events, func(a, b bookingEvent) int { return a.at.Compare(b.at) })
		node := &nodes[reqs[x.req].node]
		node.bookings = append(node.bookings, x.events...)
		if rng.Float64() < 0.99 { // else the node no longer lists it
			node.final[x.b.ID] = x.events[len(x.events)-1].b
		}
	}
	for i := range nodes {
		slices.SortStableFunc(nodes[i].bookings, func(a, b bookingEvent) int { return a.at.Compare(b.at) })
	}
	run.reqs = reqs

	// Shards: on a booking's shard while it searches and 30 s after,
	// joined (ready) a little after the start, with short drops.
	type rec struct {
		node     int
		topic    string
		at       time.Time
		id       string
		withdraw bool
		seq      uint64
	}
	var recs []rec
	for _, x := range bks {
		node := reqs[x.req].node
		n := &nodes[node]
		topic := matchmaking.ShardOf(x.b).Topic()
		searching := refOpenSpans(x.events, x.b.ID, []span{{start, end}}, end)
		var on []span
		for _, s := range searching {
			on = append(on, span{s.from, earlier(s.to.Add(30*time.Second), end)})
		}
		n.shards[topic] = union(n.shards[topic], intersect(on, n.online))
		// The records: one at each start of a search (online), again
		// every 24-30 s, and a withdrawal when it ends with the node up.
		for _, s := range intersect(searching, n.online) {
			t := s.from.Add(uniform(100*time.Millisecond, time.Second))
			for ; t.Before(s.to); t = t.Add(again()) {
				recs = append(recs, rec{node: node, topic: topic, at: t, id: x.b.ID})
			}
			if s.to.Before(end) && online(node, s.to) {
				recs = append(recs, rec{node: node, topic: topic, at: s.to.Add(uniform(time.Millisecond, 20*time.Millisecond)), id: x.b.ID, withdraw: true})
			}
		}
	}
	// A few records of bookings the analysis cannot place on a shard.
	for range max(1, n/100) {
		node := rng.IntN(n)
		recs = append(recs, rec{node: node, at: start.Add(uniform(0, work)), id: "feedfacefeedface"})
	}
	for i := range nodes {
		for topic, ss := range nodes[i].shards {
			var out []span
			for _, s := range ss {
				s.from = s.from.Add(uniform(50*time.Millisecond, 1500*time.Millisecond))
				for s.from.Before(s.to) {
					if rng.Float64() < 0.5 {
						out = append(out, s)
						break
					}
					// A drop: the topic's last peer went and another came.
					cut := s.from.Add(uniform(0, s.to.Sub(s.from)))
					out = append(out, span{s.from, cut})
					s.from = cut.Add(uniform(time.Second, 4*time.Second))
				}
			}
			out = slices.DeleteFunc(out, func(s span) bool { return !s.from.Before(s.to) })
			if len(out) == 0 {
				delete(nodes[i].shards, topic)
				continue
			}
			nodes[i].shards[topic] = out
		}
	}
	members := map[string][]int{}
	for i := range nodes {
		for topic := range nodes[i].shards {
			members[topic] = append(members[topic], i)
		}
	}
	for topic := range members {
		slices.Sort(members[topic])
	}

	// Sequence numbers, then delivery.
	slices.SortStableFunc(recs, func(a, b rec) int { return cmp.Or(cmp.Compare(a.node, b.node), a.at.Compare(b.at)) })
	for i := range recs {
		recs[i].seq = uint64(recs[i].at.UnixMicro())
		if i > 0 && recs[i-1].node == recs[i].node {
			recs[i].seq = max(recs[i].seq, recs[i-1].seq+1)
		}
	}
	next := make([]time.Time, len(recs)) // when the booking's next record was published
	lastOf := map[string]int{}
	for i := len(recs) - 1; i >= 0; i-- {
		next[i] = end.Add(time.Hour)
		if j, ok := lastOf[recs[i].id]; ok {
			next[i] = recs[j].at
		}
		lastOf[recs[i].id] = i
	}
	in := make([][]offerEvent, n)
	for i, r := range recs {
		owner := nodes[r.node].id
		ev := matchmaking.OfferEvent{Owner: owner, BookingID: r.id, Seq: r.seq, Withdrawn: r.withdraw, Source: matchmaking.OfferPublished}
		nodes[r.node].offers = append(nodes[r.node].offers, offerEvent{r.at, ev})
		run.published++
		for _, t := range members[r.topic] {
			if t == r.node {
				continue
			}
			ss := nodes[t].shards[r.topic]
			got := ev
			switch {
			case onlineAt(ss, r.at):
				if rng.Float64() < 0.003 {
					continue // lost
				}
				d := 5*time.Millisecond + time.Duration(rng.ExpFloat64()*float64(40*time.Millisecond))
				got.Source = matchmaking.OfferGossip
				switch x := rng.Float64(); {
				case x < 0.03:
					d, got.Source = uniform(500*time.Millisecond, 15*time.Second), matchmaking.OfferSync
				case x < 0.031:
					d = -time.Millisecond // stamped before the owner's own log entry
				}
				arr := r.at.Add(d)
				if onlineThroughout(ss, r.at, arr) || (rng.Float64() < 0.5 && onlineAt(ss, arr)) {
					in[t] = append(in[t], offerEvent{arr, got})
				}
			case !r.withdraw:
				// A board pull when the node joins before the next record.
				for _, s := range ss {
					if s.from.After(r.at) && s.from.Before(next[i]) {
						if arr := s.from.Add(uniform(50*time.Millisecond, 500*time.Millisecond)); arr.Before(next[i]) && arr.Before(end) {
							got.Source = matchmaking.OfferSync
							in[t] = append(in[t], offerEvent{arr, got})
						}
						break
					}
				}
			}
		}
	}
	// A board reports only records newer than what it holds.
	type okey struct {
		owner peer.ID
		id    string
	}
	for t := range nodes {
		if len(nodes[t].online) > 1 {
			// A restarted node's first board pull can hand it an older
			// record of a booking than it had before (the peer's board
			// was behind): its records of that booking then arrive out
			// of seq order.
			back := nodes[t].online[1].from
			prev := map[okey][]offerEvent{}
			var keys []okey // in order, for a run that is the same every time
			for _, e := range in[t] {
				if e.at.Before(back) {
					k := okey{e.e.Owner, e.e.BookingID}
					if prev[k] == nil {
						keys = append(keys, k)
					}
					prev[k] = append(prev[k], e)
				}
			}
			for _, k := range keys {
				if es := prev[k]; len(es) > 1 && rng.Float64() < 0.3 {
					stale := es[rng.IntN(len(es)-1)]
					stale.at, stale.e.Source = back.Add(uniform(200*time.Millisecond, time.Second)), matchmaking.OfferSync
					in[t] = append(in[t], stale)
				}
			}
		}
		slices.SortStableFunc(in[t], func(a, b offerEvent) int { return a.at.Compare(b.at) })
		best := map[okey]uint64{}
		restarted := len(nodes[t].online) < 2
		for _, e := range in[t] {
			if !restarted && !e.at.Before(nodes[t].online[1].from) {
				best, restarted = map[okey]uint64{}, true // a restart starts with an empty board
			}
			k := okey{e.e.Owner, e.e.BookingID}
			if s, ok := best[k]; ok && s >= e.e.Seq {
				continue
			}
			best[k] = e.e.Seq
			nodes[t].offers = append(nodes[t].offers, e)
			run.received++
		}
		slices.SortStableFunc(nodes[t].offers, func(a, b offerEvent) int { return a.at.Compare(b.at) })
	}
	run.nodes = nodes
	return run
}

// union merges two sorted lists of disjoint spans.
func union(a, b []span) []span {
	all := slices.Concat(a, b)
	slices.SortFunc(all, func(x, y span) int { return x.from.Compare(y.from) })
	var out []span
	for _, s := range all {
		if k := len(out); k > 0 && !s.from.After(out[k-1].to) {
			out[k-1].to = later(out[k-1].to, s.to)
			continue
		}
		out = append(out, s)
	}
	return out
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
