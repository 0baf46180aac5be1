package matchmaking

import (
	"cmp"
	"context"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// Slot class topics and lanes (docs/protocol.md section 2.6).
//
// On a day shard, every member hears every offer of that day and
// duration: in `tandem bench swarm` the busiest day shard carried about
// half of all bookings, so a node's traffic grew with the network. A
// public scheduled booking therefore matches on the topic of its slot
// class (its start, duration and quiet flag), which no other class pays
// for. A crowded class (everyone books Monday 9am) splits further into
// lanes by a hash of the owner: a booking goes one lane deeper while the
// topic it is placed on already shows laneVolume bookings of its own
// share (open ones and the withdrawals still on the board, which is to
// say those of the last few minutes). So every topic carries a bounded
// number of bookings, and a crowd of n spreads over about n/laneVolume
// lanes, log2(n/laneVolume) levels deep.
//
// Lanes must not cost matches: a booking left unmatched on a lane for
// climbAfter climbs to the level above (and never descends again), so
// every booking that finds no partner in its lane ends on its class's
// topic, where all such leftovers meet and the class plan pairs them as
// before.
const (
	// laneVolume is how many bookings of its share a topic may show
	// before a new booking placed there goes one lane deeper.
	laneVolume = 32
	// settleWait is how long a booking waits for the first board pull of
	// the topic it was placed on (which tells how crowded it is) before
	// it takes the topic as empty.
	settleWait = 2 * time.Second
	// climbAfter is how long a booking stays unmatched on a lane before
	// it climbs to the level above.
	climbAfter = 3 * time.Second
	// climbAlone is how long a booking stays on a lane that shows nobody
	// it could pair with. Matching pairs a newcomer with whoever is
	// already waiting, and in a class that matches quickly few are ever
	// waiting: a booking alone in its lane mostly waits for a partner that
	// went into another lane. Climbing soon brings both to the level
	// above, where a waiting booking also stops newcomers from going
	// deeper (placeStep), so the next one to arrive pairs with it.
	climbAlone = 500 * time.Millisecond
	// classLinger is how long a node stays on a slot class or lane topic
	// after its booking there stopped searching. Its withdrawal went out
	// at once to every member it is connected to (flood publishing), and
	// their mesh peers forward it and repair lost copies by IHAVE: after
	// one gossipsub heartbeat, in which its own gossip about the
	// withdrawal goes out too, the node's stay only takes in the topic's
	// traffic. On a busy class that was most of a node's bytes, and it
	// grew with the class's rate, that is with the network: in `tandem
	// bench swarm` at N = 1000 (seed 1), 5.7 KiB per node per minute with
	// 2 s, 3.9 with 1 s, 2.6 with 300 ms.
	classLinger = 300 * time.Millisecond
	// partnerKeeps: a booking waiting on a topic keeps a newcomer that
	// could pair with it there while the topic shows fewer than
	// partnerKeeps lane volumes (placeStep).
	partnerKeeps = 2
	// placeCheck paces the placement loop.
	placeCheck = 100 * time.Millisecond
)

// placement is where one open booking of this node announces its offer.
type placement struct {
	key shard.Key
	// since is when the booking moved to key, or when it was first
	// announced there. Real time, not the node's clock: what it waits for
	// (a board pull, partners arriving) happens on the network's time.
	since time.Time
	// settled: the level is chosen and the offer announced there.
	settled bool
	// climbed: the booking has climbed once; it never descends again.
	climbed bool
	// done: the booking is no longer searching. It stays where it was
	// placed (its withdrawal goes there); opening it again places it
	// afresh (openPlace).
	done bool
}

// lanesOn reports whether public scheduled bookings match on slot class
// topics (Config.NoLanes turns it off; version 1's topic has no lanes).
func (s *Service) lanesOn() bool { return !s.cfg.NoLanes && !s.v1Only }

// classKeyOf is the finest topic key of an offer: its slot class
// (scheduled or focus now).
func classKeyOf(o *pb.Offer) shard.Key {
	return shard.ClassOf(o.GetKind() == pb.Kind_KIND_NOW, o.GetStartUnix(), int(o.GetDurationMin()), o.GetQuiet())
}

// classKeyOfBooking is classKeyOf for one of the node's bookings.
func classKeyOfBooking(b Booking) shard.Key {
	return shard.ClassOf(b.Kind == KindNow, b.Start.Unix(), b.DurationMin, b.Quiet)
}

// homeKey is where a booking starts: its slot class's topic (scheduled
// or focus now), or its day shard or the now shard (private bookings,
// which have one possible partner and travel sealed there; lanes off).
func (s *Service) homeKey(b Booking) shard.Key {
	if s.lanesOn() && b.With == "" {
		return classKeyOfBooking(b)
	}
	return ShardOf(b)
}

// openPlace places a booking that has just become open at its home, to
// settle there or go deeper (placeLoop).
func (s *Service) openPlace(b Booking) shard.Key {
	k := s.homeKey(b)
	s.placeMu.Lock()
	s.places[b.ID] = &placement{key: k, since: time.Now(), settled: !k.IsClass()}
	s.placeMu.Unlock()
	return k
}

// booksIn reports whether an open booking of the node is placed in slot
// class k, on the class's topic or any of its lanes.
func (s *Service) booksIn(k shard.Key) bool {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	for _, pl := range s.places {
		class := pl.key
		class.Lane = ""
		if !pl.done && class == k {
			return true
		}
	}
	return false
}

// placeOf is the topic key booking b announces on.
func (s *Service) placeOf(b Booking) shard.Key {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if p := s.places[b.ID]; p != nil {
		return p.key
	}
	return s.homeKey(b)
}

// travelsOn reports whether booking b's offer is published on topic k:
// the topic it is placed on, or a day shard (the calendar's) or version
// 1's topic that carries it.
func (s *Service) travelsOn(b Booking, k shard.Key) bool {
	return s.placeOf(b) == k || (!k.IsClass() && k.Contains(classKeyOfBooking(b), []byte(s.h.ID())))
}

// settledPlace reports whether booking id may announce its open offer:
// its level is chosen.
func (s *Service) settledPlace(id string) bool {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	p := s.places[id]
	return p == nil || p.settled
}

// placing reports whether some booking is still to be placed or is on a
// lane (it may climb): on most ticks of most nodes none is, and placeStep
// then need not take the service's lock.
func (s *Service) placing() bool {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	for _, p := range s.places {
		if !p.done && (!p.settled || p.key.Lane != "") {
			return true
		}
	}
	return false
}

// known reports whether the node knows what is on topic st, joined
// `joined` ago: it has pulled the topic's board, or the finder found
// nobody there and no peer has come, or wait (settleWait) has passed.
func (st *shardTopic) known(joined, wait time.Duration) bool {
	return st.lastPull.Load() != nil || joined >= wait ||
		st.foundNobody.Load() && len(st.topic.ListPeers()) == 0
}

// placeLoop settles open bookings on their topics: once the topic's board
// is known, a booking either goes one lane deeper (the topic is crowded)
// or announces there; an announced booking left unmatched on a lane
// climbs.
func (s *Service) placeLoop(ctx context.Context) {
	t := time.NewTicker(placeCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.placeStep(ctx)
		}
	}
}

func (s *Service) placeStep(ctx context.Context) {
	if !s.placing() {
		return
	}
	now := time.Now()
	nodeNow := s.now()
	me := s.h.ID()
	joined := s.joinedNow()
	var ready []Booking
	moved := false
	// Under s.mu: a booking's state and its interest change together
	// (trackLocked), so a move never holds a topic for a booking that has
	// just matched.
	s.mu.Lock()
	s.placeMu.Lock()
	for id, p := range s.places {
		if p.done {
			continue
		}
		b := s.bookings[id]
		if b == nil {
			delete(s.places, id)
			continue
		}
		if b.State != StateSearching || !p.key.IsClass() {
			p.done = b.State != StateSearching
			continue
		}
		from := p.key
		switch {
		case !p.settled:
			if st := joined[p.key]; st == nil || !st.known(now.Sub(p.since), cmp.Or(s.cfg.settleWait, settleWait)) {
				continue
			}
			// A partner waiting keeps a newcomer here only up to twice the
			// lane volume: past that the topic's traffic would grow with
			// the class's rate again (every leftover climbs to it).
			st := joined[p.key]
			vol, claimed := s.topicVolume(st, nodeNow)
			limit := cmp.Or(s.cfg.LaneVolume, laneVolume)
			deeper := !p.climbed && len(p.key.Lane) < shard.MaxLaneBits && vol >= limit &&
				(vol >= cmp.Or(s.cfg.PartnerKeeps, partnerKeeps)*limit || !s.partnerOnLocked(p.key, b, nodeNow))
			if s.cfg.OnPlace != nil {
				s.cfg.OnPlace(PlaceEvent{Booking: id, Topic: p.key.Topic(), Deeper: deeper,
					Pulled: st.lastPull.Load() != nil, Volume: vol, Claimed: claimed, Climbed: p.climbed, After: now.Sub(p.since)})
			}
			if deeper {
				p.key, p.since = p.key.Child([]byte(me)), now
				break
			}
			p.settled, p.since = true, now
			ready = append(ready, *b)
		case p.key.Lane != "" && (now.Sub(p.since) >= climbAfter || now.Sub(p.since) >= cmp.Or(s.cfg.ClimbAlone, climbAlone) && !s.partnerOnLocked(p.key, b, nodeNow)):
			p.key, p.since, p.settled, p.climbed = p.key.Parent(), now, false, true
		}
		if p.key != from {
			// Nothing was announced on a topic a booking goes deeper
			// from, and one that climbs leaves its record valid on the
			// lane it leaves: no withdrawal to wait for, so no linger.
			s.interest.Hold(p.key, id)
			s.interest.Drop(from, id)
			moved = true
		}
	}
	s.placeMu.Unlock()
	s.mu.Unlock()
	if moved {
		s.syncShards(ctx)
	}
	for _, b := range ready {
		s.announce(ctx, b)
	}
}

// PlaceEvent tells Config.OnPlace how a booking's level was chosen on a
// slot class or lane topic (benchmarks: where a class topic's traffic
// comes from).
type PlaceEvent struct {
	Booking string
	Topic   string
	// Deeper: the booking went a lane deeper; otherwise it settled on
	// Topic.
	Deeper bool
	// Pulled: a board pull of the topic had completed (otherwise the
	// wait for one, settleWait, ran out).
	Pulled bool
	// Climbed: the booking came up from a lane; it settles whatever the
	// volume (it never goes deeper again).
	Climbed bool
	// Volume is the topic's volume the decision saw, Claimed how much of
	// it were withdrawals known only by expiry (gone.go); After how long
	// after joining the topic it was made.
	Volume, Claimed int
	After           time.Duration
}

// partnerOnLocked reports whether topic k shows an open offer of another
// owner that booking b could pair with now. Such a booking stays where it
// is: it does not go deeper, away from that partner, nor climb from it
// early. An owner that has not answered it, or is shunned, is no partner
// (usableLocked), so such offers keep nobody anywhere for long.
func (s *Service) partnerOnLocked(k shard.Key, b *Booking, now time.Time) bool {
	me := s.h.ID()
	for _, e := range s.board.class(classOfBooking(b), now) {
		if e.owner != me && !e.opaque && !e.withdrawn && k.Contains(e.shard, []byte(e.owner)) && s.usableLocked(b, e, now) {
			return true
		}
	}
	return false
}

// topicVolume is how crowded shard st has been over the last few minutes:
// the records of others on the board that travel on it, open or
// withdrawn, and the withdrawals claimed by the first pull's responder
// (gone.go) that are not among them; claimed is how many of the volume
// are such claims.
func (s *Service) topicVolume(st *shardTopic, now time.Time) (vol, claimed int) {
	onBoard, gone := s.board.volumeIn(st.key, s.h.ID(), now)
	claimed = len(newClaims(st.gone.live(now), gone))
	return onBoard + claimed, claimed
}
