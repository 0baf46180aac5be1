package matchmaking

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Holds are what an acceptor keeps for a proposer between Accept and
// Confirm. A stranger who proposes and never confirms must not keep a
// booking from matching (hold starvation), so:
//
//   - the first hold on a free booking is exclusive only for about a round
//     trip (exclusiveWindowLocked): other proposers hear "busy" and come
//     back in tens of milliseconds;
//   - after that, further proposals are accepted alongside it (at most
//     maxHoldsPerBooking, a newcomer replacing the oldest), each holding
//     until HoldTimeout; the first Confirm commits and the others are
//     answered "no such match";
//   - a peer holds at most one of our bookings at a time;
//   - a peer whose hold ran out unconfirmed while the booking was still
//     open is backed off (refused as a proposer and skipped as a partner),
//     and the backoff doubles with every lapse (peerStanding);
//   - a proposer may Cancel its hold instead of confirming (an honest one
//     releases an Accept it does not take: answers.go), which frees the
//     booking at once; but the booking grants no exclusive window until
//     the released hold would have run out, and past a small allowance a
//     release counts as a lapse (releaseHoldLocked).
//
// So however many identities an attacker has, an honest proposer waits at
// most one exclusive window plus its busy backoff.
//
// The exclusive window only spares honest concurrent proposers a
// collision (two Accepts, two synced writes, one loser searching again)
// for the first proposer's Accept->Confirm: a round trip and its synced
// write. It is sized from what this node has measured of exactly that on
// its own committed matches (confirmDelays): as acceptor, from the grant
// of the hold to the Confirm on the same stream; as proposer, from the
// Propose to the Confirm it sends (a round trip, the acceptor's checks and
// our write), counted once the partner answers Confirmed. The window is
// twice the upper quartile of those delays, at least holdWindowFloor and
// at most a quarter of HoldTimeout (maxExclusive). While the node has no
// samples (a fresh start) it is holdWindowFresh: it used to be the cap,
// sized for a slow internet path, and every stranger that proposed first
// to a fresh node's booking and never confirmed then kept it from its
// honest partners for 0.75 s, the largest part of an honest pair's time to
// match under attack (docs/benchmarks.md, Sybils). A fresh node's window
// too short for its proposer's path costs only a collision (below).
//
// Why not the proposer's own round trip (the QUIC connection's smoothed
// RTT, a ping)? Whoever proposes controls its end of the connection: a
// stranger that delays its ACKs or pongs inflates its own RTT for free,
// and with it the window it gets. The node's samples come only from
// matches that committed: to move them a stranger must confirm a match
// (slowly), which takes the victim's booking, earns a no-show record that
// removes its sample (RecordNoShow), and costs a stamped identity per
// sample (one sample per partner). That is the squat the threat model
// already prices, and worse for the victim than the window it would buy;
// and the most it buys is the old window (the cap). The window is fixed
// when the hold is granted, on the node's clock (s.now()), like the hold.
//
// A window too short for an honest proposer on a slower path than the
// node's usual partners only costs what the window exists to avoid: a
// second proposer may be held alongside, and the first Confirm wins.
type hold struct {
	peer        peer.ID
	peerBooking string
	peerName    string
	start       time.Time
	since       time.Time // when it was granted (the node's clock)
	until       time.Time
	// exclusiveFor is the exclusive window, fixed at the grant: others
	// wait it out. Only a hold on a free booking has one (0: none).
	exclusiveFor time.Duration
	// acceptSent: our Accept went out on the proposal's stream. Only
	// then can the proposer confirm, so only then is a hold that runs
	// out its lapse.
	acceptSent bool
}

// maxHoldsPerBooking bounds the proposals held at once for one booking.
const maxHoldsPerBooking = 4

// holdWindowFresh is the exclusive window of a node with no sample yet
// (at most maxExclusive): a loaded machine's loopback or LAN round trip
// and synced write (measured windows there are the floor to a few tens of
// milliseconds), with room to spare.
const holdWindowFresh = 50 * time.Millisecond

// holdWindowFloor is the least exclusive window, of the node's clock: it
// covers the scheduling noise of a loaded machine around a loopback or LAN
// round trip, where the samples themselves are a millisecond or two.
const holdWindowFloor = 20 * time.Millisecond

// confirmDelaySamples bounds the samples kept (one per partner, newest).
const confirmDelaySamples = 8

// confirmDelay is one committed match's Accept->Confirm delay, as this
// node measured it on its clock.
type confirmDelay struct {
	peer peer.ID
	d    time.Duration
}

// maxExclusive is the longest exclusive window: a quarter of HoldTimeout,
// sized for a slow internet path.
func (s *Service) maxExclusive() time.Duration { return s.cfg.HoldTimeout / 4 }

// exclusiveWindowLocked is how long a hold granted now keeps a free
// booking to its proposer: twice the upper quartile of the recent
// Accept->Confirm delays, within [holdWindowFloor, maxExclusive]; with no
// samples, holdWindowFresh.
func (s *Service) exclusiveWindowLocked() time.Duration {
	limit := s.maxExclusive()
	n := len(s.confirmDelays)
	if n == 0 {
		return min(holdWindowFresh, limit)
	}
	ds := make([]time.Duration, n)
	for i, c := range s.confirmDelays {
		ds[i] = c.d
	}
	slices.Sort(ds)
	q := ds[(3*n+3)/4-1] // the upper quartile: ceil(3n/4)-th smallest
	return min(max(2*q, holdWindowFloor), limit)
}

// noteConfirmDelayLocked keeps d, the Accept->Confirm delay of a match
// with p that committed, replacing p's earlier sample (a partner counts
// once) and, once there are confirmDelaySamples, the oldest.
func (s *Service) noteConfirmDelayLocked(p peer.ID, d time.Duration) {
	d = min(max(d, 0), s.maxExclusive()) // a clock step counts no more than the cap
	kept := s.confirmDelays[:0:0]
	for _, c := range s.confirmDelays {
		if c.peer != p {
			kept = append(kept, c)
		}
	}
	if len(kept) >= confirmDelaySamples {
		kept = kept[len(kept)-confirmDelaySamples+1:]
	}
	s.confirmDelays = append(kept, confirmDelay{p, d})
}

// forgetConfirmDelayLocked drops p's sample: p did not show up, so its
// match says nothing about honest partners.
func (s *Service) forgetConfirmDelayLocked(p peer.ID) {
	s.confirmDelays = slices.DeleteFunc(s.confirmDelays, func(c confirmDelay) bool { return c.peer == p })
}

// pruneHoldsLocked drops holds that ran out; one that ran out while its
// booking was still open is a lapse of its proposer.
func (s *Service) pruneHoldsLocked(now time.Time) {
	for id, hs := range s.holds {
		kept := hs[:0]
		for _, h := range hs {
			if now.After(h.until) {
				if b, ok := s.bookings[id]; ok && b.State == StateSearching && h.acceptSent {
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
	for id, until := range s.releasedUntil {
		if now.After(until) {
			delete(s.releasedUntil, id)
		}
	}
}

// heldLocked reports whether booking id is held exclusively right now:
// it then neither proposes nor accepts another proposal.
func (s *Service) heldLocked(id string, now time.Time) bool {
	return s.exclusiveLeftLocked(id, now) > 0
}

// exclusiveLeftLocked is how long booking id stays held exclusively from
// now; 0 or less if it is not.
func (s *Service) exclusiveLeftLocked(id string, now time.Time) time.Duration {
	s.pruneHoldsLocked(now)
	var left time.Duration
	for _, h := range s.holds[id] {
		left = max(left, h.since.Add(h.exclusiveFor).Sub(now))
	}
	return left
}

// busyRetry is when booking id, which just answered remote "busy", takes
// proposals again (Reject.retry_ms): when its exclusive hold ends, if
// that is what keeps it; 0 when it is busy for another reason (a write,
// our own round, a hold of remote's on another booking), whose end it
// cannot tell.
func (s *Service) busyRetry(id string, remote peer.ID) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if _, writing := s.pending[id]; writing || s.inflight[id] || s.peerHoldsOtherLocked(remote, id) {
		return 0
	}
	left := s.exclusiveLeftLocked(id, now)
	if left <= 0 {
		return 0
	}
	return max(left, time.Millisecond) // rounded up: never 0 while held
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

// addHoldLocked grants remote a hold on booking id (replacing one it had);
// it reports the hold's exclusive window, 0 if it is not exclusive.
func (s *Service) addHoldLocked(id string, h hold) time.Duration {
	hs := s.holds[id][:0:0]
	for _, o := range s.holds[id] {
		if o.peer != h.peer {
			hs = append(hs, o)
		}
	}
	if len(hs) == 0 && !h.since.Before(s.releasedUntil[id]) {
		h.exclusiveFor = s.exclusiveWindowLocked()
	}
	if len(hs) >= maxHoldsPerBooking {
		// The oldest goes: an honest proposer confirms within a round
		// trip, so a hold that old is most likely a stranger's that
		// would only keep the newcomer out.
		hs = hs[1:]
	}
	s.holds[id] = append(hs, h)
	return h.exclusiveFor
}

// acceptWritten records whether our Accept of remote's proposal for
// booking id went out. If it did not (the stream broke, or we were
// stopped before it), the proposer cannot confirm: its hold goes at
// once, and is nobody's lapse.
func (s *Service) acceptWritten(id string, remote peer.ID, sent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sent {
		s.dropHoldLocked(id, remote)
		return
	}
	for i, h := range s.holds[id] {
		if h.peer == remote {
			s.holds[id][i].acceptSent = true
		}
	}
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

// releaseHoldLocked handles h, a hold on our open booking id that its
// proposer cancelled (onCancel has dropped it). An honest proposer does
// this when an Accept came after its booking matched or while it was busy
// (answers.go, release), and then the booking should be free at once, so
// the hold ends now and a single release costs its proposer nothing.
// Without more, though, a Cancel is a way out of the hold-starvation
// defence: propose, hold for less than the exclusive window, Cancel, and
// at once propose again from a new booking ID. The booking never lapsed a
// hold, and every new hold on it found it free and was exclusive again,
// so one identity kept it (and the busy answers others got) nearly all
// the time. Two things close that:
//
//   - The hold time still counts for exclusivity: until h would have run
//     out, a new hold on the booking gets no exclusive window (it is held
//     alongside others, and the first Confirm wins), as if h were still
//     there. So a Cancel buys no identity, nor K identities taking turns,
//     more exclusive time than letting the hold run out: one window while
//     the booking has been free of holds for a whole hold time. The cost
//     to honest proposers after an honest release: for one hold time two
//     of them may both be accepted, and the later Confirm is answered "no
//     such match" (what a window too short costs anyway).
//   - The release is counted against the proposer (releaseLocked): the
//     first freeReleases within releaseWindow are free, every further one
//     is a lapse, so a propose-cancel loop costs an identity what letting
//     its holds run out does (a 2 minute backoff, doubling).
func (s *Service) releaseHoldLocked(id string, h hold, now time.Time) {
	s.releasedUntil[id] = maxTime(s.releasedUntil[id], h.until)
	s.releaseLocked(h.peer, now)
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

// cancelledFor is how long a node remembers another peer's booking that
// was cancelled while it held or was matched with one of the node's own
// (rememberCancelledLocked).
const cancelledFor = 10 * time.Minute

// maxCancelled bounds the cancelled bookings remembered.
const maxCancelled = 1024

// rememberCancelledLocked notes that remote's booking was cancelled while
// it held, or was matched with, one of ours. A cancelled booking never
// searches again, so a Propose of it that arrives after its Cancel was
// sent before it and served late: streams are served concurrently, and a
// loaded node can serve a later one first. tryHold refuses such a
// Propose; before, it took a fresh hold on the booking the Cancel had
// just freed, and a late Confirm of the same match committed it, matching
// us with a booking its owner has dropped (its Cancel already
// acknowledged). A hold granted before the Cancel is dropped by it
// (onCancel). Only a Cancel from a peer that held or matched the booking
// is remembered, so a stranger cannot fill the list.
func (s *Service) rememberCancelledLocked(remote peer.ID, booking string, now time.Time) {
	for k, until := range s.cancelled {
		if now.After(until) {
			delete(s.cancelled, k)
		}
	}
	if len(s.cancelled) < maxCancelled {
		s.cancelled[boardKey{remote, booking}] = now.Add(cancelledFor)
	}
}

// cancelledLocked reports whether remote's booking was cancelled lately
// (rememberCancelledLocked).
func (s *Service) cancelledLocked(remote peer.ID, booking string, now time.Time) bool {
	until, ok := s.cancelled[boardKey{remote, booking}]
	return ok && !now.After(until)
}
