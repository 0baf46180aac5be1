package bench

import (
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// debugOut is where diagnostics go when TANDEM_BENCH_DEBUG is set.
func debugOut() io.Writer {
	if os.Getenv("TANDEM_BENCH_DEBUG") == "" {
		return nil
	}
	return os.Stderr
}

// debugPropagation prints the slowest offer records: who published,
// who got them last, and how.
func debugPropagation(w io.Writer, nodes []nodeState, from, end time.Time) {
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
	ix := newOfferIndex(nodes)
	for o, n := range nodes {
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished || e.at.Before(from) {
				continue
			}
			r := rec{owner: o, last: -1, at: e.at, wd: e.e.Withdrawn, ownerUp: upFor(n, e.at)}
			ix.eachTarget(o, recordTopic(n, e), e, func(t int, _ []span, at time.Time, got int) {
				r.targets++
				if got < 0 {
					return
				}
				d := max(at.Sub(e.at), 0)
				if d < 100*time.Millisecond {
					r.within100++
				}
				if d > r.lat || r.last == -1 {
					r.lat, r.last, r.src = d, t, nodes[t].offers[got].e.Source
					r.lastUp = upFor(nodes[t], e.at)
				}
			})
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

// debugMatches prints, for the slowest pairs, where the time went: from
// both requests open (t0), to the proposer seeing the other's offer, to
// each side storing the match and the confirmation.
func debugMatches(w io.Writer, nodes []nodeState, pairs map[bkey]bkey, from, end time.Time) {
	type row struct {
		a, b  bkey
		total time.Duration
		line  string
	}
	var rows []row
	firstEvent := func(n nodeState, id string, pred func(matchmaking.Booking) bool) time.Time {
		for _, e := range n.bookings {
			if e.b.ID == id && pred(e.b) {
				return e.at
			}
		}
		return time.Time{}
	}
	seen := func(n nodeState, owner nodeState, id string, after time.Time) time.Time {
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished && e.e.Owner == owner.id && e.e.BookingID == id && !e.at.Before(after) {
				return e.at
			}
		}
		return time.Time{}
	}
	for a, b := range pairs {
		if a.node > b.node || (a.node == b.node && a.id > b.id) {
			continue
		}
		na, nb := nodes[a.node], nodes[b.node]
		a0, a1, ok1 := episode(na, a.id, b.id, end)
		b0, b1, ok2 := episode(nb, b.id, a.id, end)
		if !ok1 || !ok2 {
			continue
		}
		t0 := later(a0, b0)
		// The proposer is the lower peer ID.
		p, q, pk, qk := na, nb, a, b
		if nb.id < na.id {
			p, q, pk, qk = nb, na, b, a
		}
		saw := seen(p, q, qk.id, t0.Add(-time.Hour))
		pm := firstEvent(p, pk.id, func(x matchmaking.Booking) bool {
			return x.State == matchmaking.StateMatched && x.PartnerBooking == qk.id
		})
		qm := firstEvent(q, qk.id, func(x matchmaking.Booking) bool {
			return x.State == matchmaking.StateMatched && x.PartnerBooking == pk.id
		})
		rel := func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return fmt.Sprintf("%+.1fms", float64(t.Sub(t0).Microseconds())/1000)
		}
		total := later(a1, b1).Sub(t0)
		rows = append(rows, row{a, b, total, fmt.Sprintf("%8v at +%5.1fs: open a %s b %s; proposer %d saw offer %s, stored match %s; acceptor %d stored %s; both stored by a %s b %s",
			total.Truncate(100*time.Microsecond), t0.Sub(from).Seconds(), rel(a0), rel(b0), pk.node, rel(saw), rel(pm), qk.node, rel(qm), rel(a1), rel(b1))})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].total > rows[j].total })
	if len(rows) > 0 {
		r := rows[0]
		for _, k := range []bkey{r.a, r.b} {
			n := nodes[k.node]
			fmt.Fprintf(w, "  node %d (%s) online %v\n", k.node, n.id.String()[46:], spansRel(n.online, from))
			for _, e := range n.bookings {
				if e.b.ID == k.id {
					fmt.Fprintf(w, "    %+.3fs booking %s %s partner=%.6s confirmed=%v\n", e.at.Sub(from).Seconds(), k.id[:6], e.b.State, e.b.PartnerBooking, e.b.Confirmed)
				}
			}
			other := r.b
			if k == r.b {
				other = r.a
			}
			for _, e := range n.offers {
				if e.e.BookingID == other.id || e.e.BookingID == k.id {
					fmt.Fprintf(w, "    %+.3fs offer %.6s seq %d withdrawn=%v %s\n", e.at.Sub(from).Seconds(), e.e.BookingID, e.e.Seq%1000000, e.e.Withdrawn, e.e.Source)
				}
			}
		}
	}
	fmt.Fprintf(w, "time to match, slowest and median of %d pairs:\n", len(rows))
	for i, r := range rows {
		if i < 10 || i == len(rows)/2 {
			fmt.Fprintln(w, "  "+r.line)
		}
	}
}

// debugGossip prints what gossipsub rejected or dropped, summed over nodes.
func debugGossip(w io.Writer, nodes []*swarmNode) {
	sum := map[string]int64{}
	for _, n := range nodes {
		n.gossip.mu.Lock()
		for k, v := range n.gossip.rejects {
			sum[k] += v
		}
		n.gossip.mu.Unlock()
	}
	fmt.Fprintf(w, "gossipsub rejects and drops: %v\n", sum)
}

func spansRel(ss []span, from time.Time) string {
	var b []string
	for _, s := range ss {
		b = append(b, fmt.Sprintf("[%.2f, %.2f)", s.from.Sub(from).Seconds(), s.to.Sub(from).Seconds()))
	}
	return fmt.Sprint(b)
}

// debugMissed lists, for the classes where the swarm made fewer pairs than
// the exact maximum, the requests still wanted and what each node knows.
func debugMissed(w io.Writer, reqs []request, nodes []nodeState, pairs map[bkey]bkey, end time.Time, opportunity time.Duration, from time.Time) {
	byClass := map[string][]request{}
	for _, r := range reqs {
		if r.bookingID == "" {
			continue
		}
		if b, ok := nodes[r.node].final[r.bookingID]; !ok || !b.Live() {
			continue
		}
		key := fmt.Sprintf("%s/%d/%v/%s", r.req.Kind, r.req.DurationMin, r.req.Quiet, r.req.At.UTC().Format("Mon15:04"))
		byClass[key] = append(byClass[key], r)
	}
	for key, rs := range byClass {
		one := map[bkey]bool{}
		for _, r := range rs {
			one[bkey{r.node, r.bookingID}] = true
		}
		exact, _ := exactMax(rs, nodes, pairs, end, opportunity)
		made := 0
		for a, b := range pairs {
			if one[a] && one[b] && (a.node < b.node || (a.node == b.node && a.id < b.id)) {
				made++
			}
		}
		if made >= exact {
			continue
		}
		fmt.Fprintf(w, "class %s: %d pairs made, %d possible\n", key, made, exact)
		for _, r := range rs {
			b := nodes[r.node].final[r.bookingID]
			if b.State != matchmaking.StateSearching {
				continue
			}
			open := openSpans(nodes[r.node].bookings, r.bookingID, nodes[r.node].online, end)
			fmt.Fprintf(w, "  node %3d %.6s %s %s open %s online %s\n", r.node, nodes[r.node].id.String()[46:], r.bookingID[:6], r.req.Activity,
				spansRel(open, from), spansRel(nodes[r.node].online, from))
		}
	}
}

// debugProposals prints where the nodes' proposals went: per outcome and
// kind of owner (attacker or honest), how many and the time the proposer
// spent on them; then, for each matched pair (slowest first), what both
// bookings' proposals did between both being open and the match.
func debugProposals(w io.Writer, sn []*swarmNode, nodes []nodeState, pairs map[bkey]bkey, attackers map[peer.ID]bool, from, end time.Time) {
	logs := make([][]matchmaking.ProposalEvent, len(sn))
	type agg struct {
		n    int
		took time.Duration
	}
	sum := map[string]*agg{}
	kind := func(p peer.ID) string {
		if attackers[p] {
			return "attacker"
		}
		return "honest"
	}
	for i, n := range sn {
		logs[i] = n.rec.proposalLog()
		for _, e := range logs[i] {
			if e.Start.Before(from) {
				continue
			}
			k := e.Outcome + " from " + kind(e.Owner)
			if sum[k] == nil {
				sum[k] = &agg{}
			}
			sum[k].n++
			sum[k].took += e.Took
		}
	}
	keys := make([]string, 0, len(sum))
	for k := range sum {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "proposals by outcome (count, proposer time in all, mean):\n")
	for _, k := range keys {
		a := sum[k]
		fmt.Fprintf(w, "  %-34s %5d %9v %8v\n", k, a.n, a.took.Truncate(time.Millisecond), (a.took / time.Duration(a.n)).Truncate(time.Millisecond))
	}
	// Per pair: what each side's booking proposed within [t0, t1].
	during := func(node int, id string, t0, t1 time.Time) string {
		c := map[string]*agg{}
		var order []string
		for _, e := range logs[node] {
			if e.Booking != id || e.Start.Before(t0.Add(-5*time.Second)) || e.Start.After(t1) {
				continue
			}
			k := e.Outcome + "/" + kind(e.Owner)
			if c[k] == nil {
				c[k] = &agg{}
				order = append(order, k)
			}
			c[k].n++
			c[k].took += e.Took
		}
		var out string
		for _, k := range order {
			out += fmt.Sprintf(" %s x%d %v;", k, c[k].n, c[k].took.Truncate(time.Millisecond))
		}
		if out == "" {
			return " none"
		}
		return out
	}
	type row struct {
		total time.Duration
		line  string
		t0    time.Time
		a, b  bkey
	}
	var rows []row
	for a, b := range pairs {
		if a.node > b.node || (a.node == b.node && a.id > b.id) {
			continue
		}
		a0, a1, ok1 := episode(nodes[a.node], a.id, b.id, end)
		b0, b1, ok2 := episode(nodes[b.node], b.id, a.id, end)
		if !ok1 || !ok2 {
			continue
		}
		t0, t1 := later(a0, b0), later(a1, b1)
		p, q := a, b
		if nodes[b.node].id < nodes[a.node].id {
			p, q = b, a
		}
		rows = append(rows, row{total: t1.Sub(t0), t0: t0, a: p, b: q, line: fmt.Sprintf("%8v at +%5.1fs: lower %d:%s | higher %d:%s",
			t1.Sub(t0).Truncate(time.Millisecond), t0.Sub(from).Seconds(), p.node, during(p.node, p.id, t0, t1), q.node, during(q.node, q.id, t0, t1))})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].total > rows[j].total })
	fmt.Fprintf(w, "pairs, slowest first: each booking's proposals from 5 s before both were open to the match:\n")
	for i, r := range rows {
		fmt.Fprintln(w, "  "+r.line)
		if i < 3 {
			for _, k := range []bkey{r.a, r.b} {
				for _, e := range logs[k.node] {
					if e.Booking == k.id && !e.Start.Before(r.t0.Add(-5*time.Second)) && !e.Start.After(r.t0.Add(r.total)) {
						fmt.Fprintf(w, "      node %d %+8.1fms %-8s %-20s took %v\n", k.node, float64(e.Start.Sub(r.t0).Microseconds())/1000, kind(e.Owner), e.Outcome, e.Took.Truncate(100*time.Microsecond))
					}
				}
				last := ""
				for _, e := range sn[k.node].rec.noteLog() {
					if e.Booking != k.id || e.At.Before(r.t0.Add(-5*time.Second)) || e.At.After(r.t0.Add(r.total)) {
						continue
					}
					who := "-"
					if e.Peer != "" {
						who = kind(e.Peer)
					}
					line := fmt.Sprintf("%-8s %s (%s)", who, e.What, e.Note)
					if line == last {
						continue // plan waits repeat on every wake
					}
					last = line
					fmt.Fprintf(w, "      node %d %+8.1fms note %s\n", k.node, float64(e.At.Sub(r.t0).Microseconds())/1000, line)
				}
			}
		}
	}
}
