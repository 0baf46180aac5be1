package matchmaking

import (
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// peerStanding is what this node has seen a peer do that costs others:
// holds it let run out (or cancelled too often) and matches it confirmed
// and never showed up for. It is stored (a restart must not clear a
// record), and while Until is ahead the peer's proposals are refused and
// its offers skipped.
type peerStanding struct {
	ID      string    `json:"id"`
	Lapses  int       `json:"lapses,omitempty"`
	NoShows int       `json:"no_shows,omitempty"`
	Until   time.Time `json:"until,omitzero"`
	// Releases counts the holds the peer cancelled unconfirmed since
	// ReleasesFrom, within releaseWindow (releaseLocked).
	Releases     int       `json:"releases,omitempty"`
	ReleasesFrom time.Time `json:"releases_from,omitzero"`
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
	st.lapse(now)
	s.saveStandingLocked(p, st)
}

func (st *peerStanding) lapse(now time.Time) {
	st.Lapses++
	st.Until = maxTime(st.Until, now.Add(doubled(lapseBackoff, st.Lapses)))
}

// A peer may cancel freeReleases of its holds at a node within
// releaseWindow at no cost; each further one within the window counts as
// a lapse. An honest node releases a hold only for an Accept its booking
// does not take (answers.go, release): one that came after the booking
// matched another, at most once per Accept too many in a round that then
// matches, or one that came while the booking was busy with another
// negotiation, which the next round settles. Two at one acceptor within
// 10 minutes already takes two such rounds of its bookings meeting the
// same acceptor; a third costs it no more than a lost Cancel does (its
// hold runs out: a lapse, 2 minutes at that node). An identity that
// proposes and cancels in a loop gets freeReleases+1 holds, then is
// refused for 2 minutes, then 4 (each further release is a lapse until
// the window ends), and so on. The window is the time a node remembers a
// cancelled booking of the peer's (cancelledFor).
const (
	freeReleases  = 2
	releaseWindow = cancelledFor
)

// releaseLocked records that p cancelled a hold of its own, unconfirmed,
// on an open booking of ours (releaseHoldLocked).
func (s *Service) releaseLocked(p peer.ID, now time.Time) {
	st := s.standing[p]
	st.ID = p.String()
	if now.Before(st.ReleasesFrom) || now.Sub(st.ReleasesFrom) > releaseWindow {
		st.Releases, st.ReleasesFrom = 0, now // a new window (or the clock went back)
	}
	st.Releases++
	if st.Releases > freeReleases {
		st.lapse(now)
	}
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

// admitRank is the standing a record of owner enters a board with
// (boardadmit.go): twice the owner's standing, and 1 for a stranger the
// node is connected to when live says such a stranger counts: on the
// public board, one whose record is of a slot class one of the node's open
// bookings is placed in (a peer it may pair with now); on the sealed
// board, which a node holds for others, any. A flood with an identity
// (and a stamp) per record fills a board with strangers of one record
// each, which the per-owner quota cannot tell apart, and used to keep
// every new honest record out until records expired, the node's own
// partners' included. A connected stranger now takes the place of one
// the node is not connected to; a peer with a track record still
// outranks it. An attacker gets the same only with a live connection to
// the node per identity, as well as the identity's stamp.
func (s *Service) admitRank(owner peer.ID, now time.Time, live bool) int {
	r := 2 * s.rank(owner, now)
	if r == 0 && live && s.h.Network().Connectedness(owner) == network.Connected {
		return 1
	}
	return r
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
