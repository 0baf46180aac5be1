package bench

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// The workload is generated up front from the seed, so two runs with the
// same seed and node count ask for the same things at the same offsets.
//
//   - Each user books 0-4 scheduled sessions (mean 1.75) over the next four
//     days (10/50/30/10%), skewed to popular hours (09-11 and 14-16 UTC
//     carry two thirds), mostly on the hour (70%) or half hour (20%). A
//     share of them (hotShare) all go for the same hot slot (tomorrow
//     09:00, 50 minutes), the "everyone books Monday 9am" storm that
//     stresses negotiation.
//   - 10% of users ask for "focus now" once.
//   - Durations 25/50/75 (25/65/10%), activity anything/desk/moving
//     (50/35/15%), quiet 10%.
//   - Requests arrive uniformly over the first 80% of the run; 10% of
//     them are cancelled later (matched or not: a cancelled match frees the
//     partner, who is rematched).
//   - 10% of nodes go offline once, for 10-25% of the run, and come back
//     before 85% of it; what their user would have done meanwhile happens
//     when they are back.

const (
	hotShare      = 0.20
	nowShare      = 0.10
	cancelShare   = 0.10
	offlineShare  = 0.10
	arrivalWindow = 0.80
	minLead       = 2 * time.Hour // scheduled slots start at least this far ahead
)

// request is one booking request of the workload and, once made, what
// became of it.
type request struct {
	node      int
	req       matchmaking.BookRequest
	at        time.Duration // planned offset from the workload start
	cancelAt  time.Duration // 0: never cancelled
	bookingID string        // set when booked
	err       error         // the node refused it (clash with its own booking)
}

type evKind int

const (
	evBook evKind = iota
	evCancel
	evOffline
	evOnline
)

func (k evKind) String() string {
	return [...]string{"book", "cancel", "offline", "online"}[k]
}

type planEvent struct {
	at   time.Duration
	node int
	kind evKind
	req  int // index into requests, for book and cancel
}

type workload struct {
	requests []request
	events   []planEvent
	offline  int // nodes that go offline once
}

var hourWeights = [24]float64{
	0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 10, 8, 5, 1, 3, 8, 6, 4, 2, 1, 1, 1, 0.5, 0.3, 0.2,
}

func pick[T any](rng *rand.Rand, items []T, weights []float64) T {
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	x := rng.Float64() * sum
	for i, w := range weights {
		if x < w {
			return items[i]
		}
		x -= w
	}
	return items[len(items)-1]
}

// genWorkload plans the run for n nodes starting at start.
func genWorkload(seed uint64, n int, d time.Duration, start time.Time) *workload {
	rng := rand.New(rand.NewPCG(seed, seed^0x7a6e64656d)) // "tandem"
	w := &workload{}
	day := start.UTC().Truncate(24 * time.Hour)
	hot := day.Add(24*time.Hour + 9*time.Hour)
	if hot.Before(start.Add(minLead)) {
		hot = hot.Add(24 * time.Hour)
	}
	hours := make([]int, 24)
	for i := range hours {
		hours[i] = i
	}
	prefs := func(r *matchmaking.BookRequest) {
		r.DurationMin = pick(rng, []int{25, 50, 75}, []float64{25, 65, 10})
		r.Activity = pick(rng, []matchmaking.Activity{matchmaking.ActivityAnything, matchmaking.ActivityDesk, matchmaking.ActivityMoving}, []float64{50, 35, 15})
		r.Quiet = rng.Float64() < 0.10
	}
	arrival := func() time.Duration { return time.Duration(rng.Float64() * arrivalWindow * float64(d)) }

	for node := range n {
		var mine []matchmaking.BookRequest
		count := pick(rng, []int{0, 1, 2, 3, 4}, []float64{15, 30, 30, 15, 10})
		for range count {
			for try := 0; try < 10; try++ {
				r := matchmaking.BookRequest{Kind: matchmaking.KindScheduled}
				prefs(&r)
				if rng.Float64() < hotShare {
					r.At, r.DurationMin = hot, 50
				} else {
					dd := pick(rng, []int{0, 1, 2, 3}, []float64{10, 50, 30, 10})
					h := pick(rng, hours, hourWeights[:])
					m := pick(rng, []int{0, 30, 15, 45}, []float64{70, 20, 5, 5})
					r.At = day.Add(time.Duration(dd)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
					for r.At.Before(start.Add(minLead)) {
						r.At = r.At.Add(24 * time.Hour)
					}
				}
				if !clashes(mine, r) {
					mine = append(mine, r)
					break
				}
			}
		}
		if rng.Float64() < nowShare {
			r := matchmaking.BookRequest{Kind: matchmaking.KindNow}
			prefs(&r)
			mine = append(mine, r)
		}
		for _, r := range mine {
			w.requests = append(w.requests, request{node: node, req: r, at: arrival()})
		}
	}
	for i := range w.requests {
		r := &w.requests[i]
		if rng.Float64() < cancelShare {
			lo, hi := float64(r.at+time.Second), 0.9*float64(d)
			if hi > lo {
				r.cancelAt = time.Duration(lo + rng.Float64()*(hi-lo))
			}
		}
	}
	// Offline episodes, and the user actions they push back.
	type episode struct{ from, to time.Duration }
	away := map[int]episode{}
	if n >= 4 {
		k := max(1, int(offlineShare*float64(n)+0.5))
		for _, node := range rng.Perm(n)[:k] {
			from := time.Duration((0.1 + 0.5*rng.Float64()) * float64(d))
			length := time.Duration((0.1 + 0.15*rng.Float64()) * float64(d))
			to := min(from+length, time.Duration(0.85*float64(d)))
			away[node] = episode{from, to}
			w.events = append(w.events, planEvent{at: from, node: node, kind: evOffline}, planEvent{at: to, node: node, kind: evOnline})
		}
		w.offline = k
	}
	defer100 := func(node int, at time.Duration) time.Duration {
		if e, ok := away[node]; ok && at >= e.from && at < e.to {
			return e.to + 100*time.Millisecond
		}
		return at
	}
	for i := range w.requests {
		r := &w.requests[i]
		r.at = defer100(r.node, r.at)
		w.events = append(w.events, planEvent{at: r.at, node: r.node, kind: evBook, req: i})
		if r.cancelAt > 0 {
			r.cancelAt = max(defer100(r.node, r.cancelAt), r.at+time.Second)
			w.events = append(w.events, planEvent{at: r.cancelAt, node: r.node, kind: evCancel, req: i})
		}
	}
	slices.SortStableFunc(w.events, func(a, b planEvent) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return 0
	})
	return w
}

// clashes reports whether r overlaps one of a user's scheduled requests.
func clashes(mine []matchmaking.BookRequest, r matchmaking.BookRequest) bool {
	end := r.At.Add(time.Duration(r.DurationMin) * time.Minute)
	for _, o := range mine {
		if o.Kind != matchmaking.KindScheduled {
			continue
		}
		oe := o.At.Add(time.Duration(o.DurationMin) * time.Minute)
		if r.At.Before(oe) && o.At.Before(end) {
			return true
		}
	}
	return false
}
