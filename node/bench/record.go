package bench

import (
	"sync"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// nodeLog records, with the wall-clock time of each, every booking change
// and every offer event of one node, and when the node was online.
type nodeLog struct {
	mu       sync.Mutex
	bookings []bookingEvent
	offers   []offerEvent
	// proposals are the node's proposals (kept for the debug timeline).
	proposals []matchmaking.ProposalEvent
	// notes are why the node's bookings waited (debug timeline).
	notes []matchmaking.NoteEvent
	// places are the level decisions of the node's bookings on slot
	// class and lane topics (the busiest topics' report).
	places []placeEvent
	online []span // closed spans, and the open one with a zero end
	// ready are the online spans from the moment the node was connected
	// again after a start.
	ready []span
	// shards are, per offer topic, the spans the node was on it with at
	// least one peer there (gossip could reach it): offer propagation
	// counts the nodes on a record's shard.
	shards map[string][]span
}

type bookingEvent struct {
	at time.Time
	b  matchmaking.Booking
}

type placeEvent struct {
	at time.Time
	e  matchmaking.PlaceEvent
}

type offerEvent struct {
	at time.Time
	e  matchmaking.OfferEvent
}

// span is a time interval; a zero end means "still going".
type span struct{ from, to time.Time }

func (l *nodeLog) booking(b matchmaking.Booking) {
	l.mu.Lock()
	l.bookings = append(l.bookings, bookingEvent{time.Now(), b})
	l.mu.Unlock()
}

func (l *nodeLog) offer(e matchmaking.OfferEvent) {
	l.mu.Lock()
	l.offers = append(l.offers, offerEvent{time.Now(), e})
	l.mu.Unlock()
}

func (l *nodeLog) place(e matchmaking.PlaceEvent) {
	l.mu.Lock()
	l.places = append(l.places, placeEvent{time.Now(), e})
	l.mu.Unlock()
}

// placeLog copies the node's level decisions.
func (l *nodeLog) placeLog() []placeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]placeEvent(nil), l.places...)
}

func (l *nodeLog) proposal(e matchmaking.ProposalEvent) {
	l.mu.Lock()
	l.proposals = append(l.proposals, e)
	l.mu.Unlock()
}

func (l *nodeLog) note(e matchmaking.NoteEvent) {
	l.mu.Lock()
	l.notes = append(l.notes, e)
	l.mu.Unlock()
}

// noteLog copies the node's notes.
func (l *nodeLog) noteLog() []matchmaking.NoteEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]matchmaking.NoteEvent(nil), l.notes...)
}

// proposalLog copies the node's proposals.
func (l *nodeLog) proposalLog() []matchmaking.ProposalEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]matchmaking.ProposalEvent(nil), l.proposals...)
}

// shard records a join ("ready": the topic's first peer appeared) or a
// leave of an offer topic.
func (l *nodeLog) shard(e matchmaking.ShardEvent) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shards == nil {
		l.shards = map[string][]span{}
	}
	ss := l.shards[e.Topic]
	open := len(ss) > 0 && ss[len(ss)-1].to.IsZero()
	switch {
	case e.State == "ready" && !open:
		l.shards[e.Topic] = append(ss, span{from: now})
	case e.State == "left" && open:
		ss[len(ss)-1].to = now
	}
}

func (l *nodeLog) up(at time.Time) {
	l.mu.Lock()
	l.online = append(l.online, span{from: at})
	l.mu.Unlock()
}

// meshed marks the node ready from at, within its current online span.
func (l *nodeLog) meshed(at time.Time) {
	l.mu.Lock()
	l.ready = append(l.ready, span{from: at})
	l.mu.Unlock()
}

func (l *nodeLog) down(at time.Time) {
	l.mu.Lock()
	for _, ss := range []*[]span{&l.online, &l.ready} {
		if k := len(*ss); k > 0 && (*ss)[k-1].to.IsZero() {
			(*ss)[k-1].to = at
		}
	}
	for _, ss := range l.shards {
		if k := len(ss); k > 0 && ss[k-1].to.IsZero() {
			ss[k-1].to = at
		}
	}
	l.mu.Unlock()
}

// snapshot copies the logs (the offer log only when asked), closing
// open spans at end.
func (l *nodeLog) snapshot(end time.Time, withOffers bool) (bookings []bookingEvent, offers []offerEvent, online, ready []span, shards map[string][]span) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bookings = append([]bookingEvent(nil), l.bookings...)
	if withOffers {
		offers = append([]offerEvent(nil), l.offers...)
	}
	closeAt := func(ss []span) []span {
		var out []span
		for _, s := range ss {
			if s.to.IsZero() || s.to.After(end) {
				s.to = end
			}
			out = append(out, s)
		}
		return out
	}
	shards = map[string][]span{}
	for t, ss := range l.shards {
		shards[t] = closeAt(ss)
	}
	return bookings, offers, closeAt(l.online), closeAt(l.ready), shards
}

// onlineThroughout reports whether the spans cover [from, to].
func onlineThroughout(spans []span, from, to time.Time) bool {
	for _, s := range spans {
		if !s.from.After(from) && !s.to.Before(to) {
			return true
		}
	}
	return false
}

// onlineAt reports whether some span contains t.
func onlineAt(spans []span, t time.Time) bool { return onlineThroughout(spans, t, t) }

// intersect returns the parts of a that lie within b; both sorted and
// disjoint.
func intersect(a, b []span) []span {
	var out []span
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		from, to := a[i].from, a[i].to
		if b[j].from.After(from) {
			from = b[j].from
		}
		if b[j].to.Before(to) {
			to = b[j].to
		}
		if from.Before(to) {
			out = append(out, span{from, to})
		}
		if a[i].to.Before(b[j].to) {
			i++
		} else {
			j++
		}
	}
	return out
}

// total is the summed length of disjoint spans.
func total(ss []span) time.Duration {
	var d time.Duration
	for _, s := range ss {
		d += s.to.Sub(s.from)
	}
	return d
}
