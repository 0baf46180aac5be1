package matchmaking

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reaching offer owners before planning with them.
//
// An offer is a claim anyone can make: an owner that never answers (an
// address that accepts a connection and then says nothing costs one
// socket for any number of identities) costs a proposer a whole dial
// timeout, and the class plan used to pick such owners as partners one
// per round, each time waiting out that timeout. So the matcher plans and
// proposes only with owners it is connected to, and reaches the others
// in the background: dials run apart from the negotiations, at most
// maxReachDials at once, each bounded by StreamTimeout. An owner whose
// dial failed is left alone for unreachableBackoff, doubling with every
// failure up to maxReachBackoff; re-announcing its offers does not shorten
// that (a newer record used to end the backoff at once, so an attacker
// re-announcing every few seconds kept its silent identities in every
// plan). Any connection to the owner, from either side, counts at once.
// An owner that answers is connected, whatever else it does; what it may
// do then is bounded by holds and standing (holds.go, standing.go).

// maxReachDials bounds the background dials to offer owners.
const maxReachDials = 16

// maxReachBackoff caps how long an unreachable owner is left alone.
const maxReachBackoff = 8 * time.Minute

// reachState is what the node knows about reaching one offer owner.
type reachState struct {
	dialing bool
	fails   int
	until   time.Time // no dial before this
}

// connectedTo reports whether the node has a connection to p now (a relayed,
// limited one carries the matcher's messages too).
func (s *Service) connectedTo(p peer.ID) bool {
	c := s.h.Network().Connectedness(p)
	return c == network.Connected || c == network.Limited
}

// reachableLocked reports whether the matcher may plan and propose with p
// now: it is connected. If it is not, a dial to it starts in the
// background (unless one is under way, p failed recently, or all dial
// slots are taken: the next round asks again), and the matcher is woken
// when it ends.
func (s *Service) reachableLocked(p peer.ID, now time.Time) bool {
	if s.connectedTo(p) {
		if st, ok := s.reach[p]; ok && !st.dialing {
			delete(s.reach, p)
		}
		return true
	}
	st := s.reach[p]
	if st.dialing || now.Before(st.until) || s.reachDials >= maxReachDials {
		return false
	}
	st.dialing = true
	s.reach[p] = st
	s.reachDials++
	ok := s.goRun(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StreamTimeout)
		err := s.h.Connect(overAnyConn(ctx), peer.AddrInfo{ID: p})
		cancel()
		s.mu.Lock()
		s.reachDials--
		st := s.reach[p]
		st.dialing = false
		if err == nil || s.connectedTo(p) {
			delete(s.reach, p)
		} else {
			st.fails++
			st.until = s.now().Add(min(doubled(unreachableBackoff, st.fails), maxReachBackoff))
			s.reach[p] = st
		}
		s.mu.Unlock()
		s.wake()
	})
	if !ok {
		s.reachDials--
		delete(s.reach, p)
	}
	return false
}
