package matchmaking

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// peerStanding is what this node has seen a peer do that costs others:
// holds it let run out and matches it confirmed and never showed up for.
// It is stored (a restart must not clear a record), and while Until is
// ahead the peer's proposals are refused and its offers skipped.
type peerStanding struct {
	ID      string    `json:"id"`
	Lapses  int       `json:"lapses,omitempty"`
	NoShows int       `json:"no_shows,omitempty"`
	Until   time.Time `json:"until,omitzero"`
}

const standingPrefix = "mm/standing/"

// Backoffs for misbehaviour; each repeat doubles them, up to maxMisBackoff.
const (
	lapseBackoff  = 2 * time.Minute
	noShowBackoff = 24 * time.Hour
	maxMisBackoff = 30 * 24 * time.Hour
)

func doubled(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxMisBackoff; i++ {
		d *= 2
	}
	return min(d, maxMisBackoff)
}

// lapseLocked records that p let a hold run out.
func (s *Service) lapseLocked(p peer.ID, now time.Time) {
	st := s.standing[p]
	st.ID = p.String()
	st.Lapses++
	st.Until = maxTime(st.Until, now.Add(doubled(lapseBackoff, st.Lapses)))
	s.saveStandingLocked(p, st)
}

// RecordNoShow notes that p confirmed a match and never opened the
// session: its proposals are refused and its offers skipped for a day,
// doubling with every repeat.
func (s *Service) RecordNoShow(p peer.ID) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.standing[p]
	st.ID = p.String()
	st.NoShows++
	st.Until = maxTime(st.Until, now.Add(doubled(noShowBackoff, st.NoShows)))
	s.saveStandingLocked(p, st)
	s.forgetConfirmDelayLocked(p) // its match was no honest partner's round trip
}

// saveStandingLocked changes p's record in memory at once and stores it
// in the background: the caller holds s.mu, and disk writes stay out from
// under it.
func (s *Service) saveStandingLocked(p peer.ID, st peerStanding) {
	s.standing[p] = st
	s.standingDirty[p] = true
	s.goRun(s.flushStanding)
}

// flushStanding stores the records changed since the last flush. Flushes
// take turns, and each reads the newest records, so a slower flush never
// overwrites a newer record with an older one.
func (s *Service) flushStanding() {
	s.standingFlush.Lock()
	defer s.standingFlush.Unlock()
	s.mu.Lock()
	var todo []peerStanding
	for p := range s.standingDirty {
		todo = append(todo, s.standing[p])
	}
	clear(s.standingDirty)
	s.mu.Unlock()
	for _, st := range todo {
		if err := s.db.put(standingPrefix+st.ID, st); err != nil {
			// Kept in memory until a restart.
			s.log.Error("saving a peer's record", "peer", st.ID, "err", err)
		}
	}
}

// shunnedLocked reports whether p is backed off for misbehaviour.
func (s *Service) shunnedLocked(p peer.ID, now time.Time) bool {
	return now.Before(s.standing[p].Until)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// AddTrackRecord notes that p showed up to a session with this node and
// signed its attendance receipt (the node feeds these from its session
// history): p's offers then outrank strangers' on the board and in the
// order proposals are tried.
func (s *Service) AddTrackRecord(p peer.ID) {
	s.mu.Lock()
	s.shows[p]++
	s.mu.Unlock()
}

// Standing is p's standing with this node: -1 backed off for
// misbehaviour (a lapsed hold, a no-show), 1 a favourite or a partner
// with a track record, 0 a stranger.
func (s *Service) Standing(p peer.ID) int { return s.rank(p, s.now()) }

// rank is p's standing: -1 backed off for misbehaviour, 1 a favourite or a
// peer with a track record, 0 a stranger.
func (s *Service) rank(p peer.ID, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rankLocked(p, now)
}

func (s *Service) rankLocked(p peer.ID, now time.Time) int {
	switch {
	case s.shunnedLocked(p, now):
		return -1
	case s.shows[p] > 0 || s.people[p].Favourite:
		return 1
	}
	return 0
}
