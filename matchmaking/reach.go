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
// A connection proves nothing of an owner that takes a proposal's stream
// and never answers (an acceptor answers a Propose without touching its
// disk): such an owner is *silent*, out of plans and proposals, all its
// offers and any it announces later, for unreachableBackoff, doubling with
// every silence up to maxReachBackoff, connected or not. What an owner
// that does answer may do is bounded by holds and standing (holds.go,
// standing.go).

// maxReachDials bounds the background dials to offer owners.
const maxReachDials = 16

// maxReachBackoff caps how long an unreachable owner is left alone.
const maxReachBackoff = 8 * time.Minute

// reachState is what the node knows about reaching one offer owner.
type reachState struct {
	dialing bool
	fails   int
	until   time.Time // no dial before this
	// silences counts proposals the owner took and never answered;
	// until silentUntil it is out of plans and proposals even while
	// connected (a connection proves nothing of an owner that answers
	// nothing on it).
	silences    int
	silentUntil time.Time
	// silentConn is the connection the last silence happened on. A node
	// killed mid-negotiation looks silent over QUIC (no reset reaches
	// us, the read times out); when it comes back on a new connection
	// with that one gone, its first silence is forgiven (restarted).
	silentConn string
}

// forgetDialsLocked drops p's failed dials (it is connected): its
// silences are kept, so the next one doubles.
func (s *Service) forgetDialsLocked(p peer.ID, st reachState) {
	if st.silences == 0 {
		delete(s.reach, p)
		return
	}
	s.reach[p] = reachState{silences: st.silences, silentUntil: st.silentUntil, silentConn: st.silentConn}
}

// maxReach bounds the owners whose reach the node remembers; past it,
// those it would not hold back any more are forgotten.
const maxReach = 10000

// markSilent notes that p took a proposal and never answered it: it is
// left alone for unreachableBackoff, doubling with every silence up to
// maxReachBackoff, whatever it announces meanwhile.
func (s *Service) markSilent(p peer.ID, conn network.Conn) {
	s.silences.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.reach) >= maxReach {
		for q, o := range s.reach {
			if !o.dialing && !now.Before(o.until) && !now.Before(o.silentUntil) {
				delete(s.reach, q)
			}
		}
	}
	st := s.reach[p]
	st.silences++
	st.silentUntil = now.Add(min(doubled(unreachableBackoff, st.silences), maxReachBackoff))
	st.silentConn = conn.ID()
	s.reach[p] = st
}

// restarted forgives p's silence if it was its first and p is back on a
// new connection, the one it kept silent on being closed: it most likely
// crashed or was killed while answering, and came back (with its
// bookings, from disk). The count stays, so a second silence is not
// forgiven and doubles: an identity buys one extra proposal timeout with
// a reconnection, which costs it a handshake, and no more.
func (s *Service) restarted(p peer.ID, conn network.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.reach[p]
	if !ok || st.silences != 1 || st.silentConn == "" || conn.ID() == st.silentConn || !s.now().Before(st.silentUntil) {
		return false
	}
	for _, c := range s.h.Network().ConnsToPeer(p) {
		if c.ID() == st.silentConn {
			return false // the silent connection is still up: no restart
		}
	}
	st.silentUntil, st.silentConn = time.Time{}, ""
	s.reach[p] = st
	s.log.Debug("forgave a silence: the peer came back on a new connection", "peer", p)
	return true
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
	st := s.reach[p]
	if now.Before(st.silentUntil) {
		return false
	}
	if s.connectedTo(p) {
		if !st.dialing {
			s.forgetDialsLocked(p, st)
		}
		return true
	}
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
			s.forgetDialsLocked(p, st)
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
		st.dialing = false
		s.reach[p] = st
	}
	return false
}
