package matchmaking

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Holds are what an acceptor keeps for a proposer between Accept and
// Confirm. A stranger who proposes and never confirms must not keep a
// booking from matching (hold starvation), so:
//
//   - the first hold on a free booking is exclusive only for a round trip
//     (holdExclusive: a quarter of HoldTimeout): other proposers hear
//     "busy" and come back in tens of milliseconds;
//   - after that, further proposals are accepted alongside it (at most
//     maxHoldsPerBooking, a newcomer replacing the oldest), each holding
//     until HoldTimeout; the first Confirm commits and the others are
//     answered "no such match";
//   - a peer holds at most one of our bookings at a time;
//   - a peer whose hold ran out unconfirmed while the booking was still
//     open is backed off (refused as a proposer and skipped as a partner),
//     and the backoff doubles with every lapse (peerStanding).
//
// So however many identities an attacker has, an honest proposer waits at
// most holdExclusive plus its busy backoff.
type hold struct {
	peer        peer.ID
	peerBooking string
	peerName    string
	start       time.Time
	since       time.Time // when it was granted (the node's clock)
	until       time.Time
	exclusive   bool // granted to a free booking: others wait holdExclusive
}

// maxHoldsPerBooking bounds the proposals held at once for one booking.
const maxHoldsPerBooking = 4

func (s *Service) holdExclusive() time.Duration { return s.cfg.HoldTimeout / 4 }

// pruneHoldsLocked drops holds that ran out; one that ran out while its
// booking was still open is a lapse of its proposer.
func (s *Service) pruneHoldsLocked(now time.Time) {
	for id, hs := range s.holds {
		kept := hs[:0]
		for _, h := range hs {
			if now.After(h.until) {
				if b, ok := s.bookings[id]; ok && b.State == StateSearching {
					s.lapseLocked(h.peer, now)
				}
				continue
			}
			kept = append(kept, h)
		}
		if len(kept) == 0 {
			delete(s.holds, id)
		} else {
			s.holds[id] = kept
		}
	}
}

// heldLocked reports whether booking id is held exclusively right now:
// it then neither proposes nor accepts another proposal.
func (s *Service) heldLocked(id string, now time.Time) bool {
	s.pruneHoldsLocked(now)
	for _, h := range s.holds[id] {
		if h.exclusive && now.Before(h.since.Add(s.holdExclusive())) {
			return true
		}
	}
	return false
}

// holdOfLocked returns the hold remote has on booking id.
func (s *Service) holdOfLocked(id string, remote peer.ID) (hold, bool) {
	for _, h := range s.holds[id] {
		if h.peer == remote {
			return h, true
		}
	}
	return hold{}, false
}

// peerHoldsOtherLocked reports whether remote holds one of our bookings
// other than id.
func (s *Service) peerHoldsOtherLocked(remote peer.ID, id string) bool {
	for bid, hs := range s.holds {
		if bid == id {
			continue
		}
		for _, h := range hs {
			if h.peer == remote {
				return true
			}
		}
	}
	return false
}

// addHoldLocked grants remote a hold on booking id (replacing one it had).
func (s *Service) addHoldLocked(id string, h hold) {
	hs := s.holds[id][:0:0]
	for _, o := range s.holds[id] {
		if o.peer != h.peer {
			hs = append(hs, o)
		}
	}
	h.exclusive = len(hs) == 0
	if len(hs) >= maxHoldsPerBooking {
		// The oldest goes: an honest proposer confirms within a round
		// trip, so a hold that old is most likely a stranger's that
		// would only keep the newcomer out.
		hs = hs[1:]
	}
	s.holds[id] = append(hs, h)
}

// dropHoldLocked removes remote's hold on booking id.
func (s *Service) dropHoldLocked(id string, remote peer.ID) {
	hs := s.holds[id][:0:0]
	for _, o := range s.holds[id] {
		if o.peer != remote {
			hs = append(hs, o)
		}
	}
	if len(hs) == 0 {
		delete(s.holds, id)
	} else {
		s.holds[id] = hs
	}
}

// checkProposalOffer opens the offer a proposal carries: the proposer's own
// live, signed offer for from_booking, so a proposal costs an identity
// with an offer (and its stamp), not just a peer ID. The offer's fields
// must agree with the proposal's.
func (s *Service) checkProposalOffer(remote peer.ID, p *pb.Propose, now time.Time) (*pb.Offer, error) {
	if len(p.GetOffer()) == 0 {
		return nil, fmt.Errorf("proposal carries no offer")
	}
	o, owner, err := s.openOffer(p.GetOffer(), now)
	if err != nil {
		return nil, fmt.Errorf("proposal's offer: %w", err)
	}
	switch {
	case owner != remote:
		return nil, fmt.Errorf("proposal carries the offer of %s", owner)
	case o.GetBookingId() != p.GetFromBooking():
		return nil, fmt.Errorf("proposal's offer is for another booking")
	case o.GetWithdrawn():
		return nil, fmt.Errorf("proposal's offer is withdrawn")
	case o.GetKind() != p.GetKind() || o.GetDurationMin() != p.GetDurationMin() ||
		o.GetActivity() != p.GetActivity() || o.GetQuiet() != p.GetQuiet():
		return nil, fmt.Errorf("proposal disagrees with its offer")
	case o.GetKind() == pb.Kind_KIND_SCHEDULED && o.GetStartUnix() != p.GetStartUnix():
		return nil, fmt.Errorf("proposal's start disagrees with its offer")
	}
	return o, nil
}
