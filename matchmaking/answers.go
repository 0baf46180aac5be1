package matchmaking

import (
	"bufio"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Rounds of proposals that a silent owner does not hold up.
//
// An acceptor answers a Propose at once, from memory, so an answer takes a
// round trip and a signature check; an owner that takes the stream and
// says nothing is found out only when the proposer stops waiting
// (proposeReplyTimeout, 2 s), and each such owner used to cost every
// booking that met it those 2 s, one owner after another: in a swarm with
// ten silent Sybils in the honest classes, most of an honest booking's
// time to match (docs/benchmarks.md). A booking's round therefore does not
// wait for one proposal before making the next: when an answer has not
// come within the node's patience (a few times the answer delays it
// measured lately), it proposes to its next candidate as well, and keeps
// listening on the first stream until proposeReplyTimeout. Whichever
// Accept comes first is committed; any later one is released at once with
// a Cancel (the acceptor drops the hold: no lapse, up to a small
// allowance: releaseHoldLocked), never confirmed, so
// the booking is matched once. When the round has no candidate left and
// every answer still missing is past the patience, it ends: the booking
// is free again (it accepts proposals, and the next round proposes to
// others), and an Accept that comes later is taken only if the booking
// is still searching and free at that moment, else released the same way.
//
// What a silent owner costs a round is thus the patience, not the 2 s, and
// several of them cost their patiences in turn while the honest
// candidates behind them are already being asked. An owner can lengthen
// the patience only by answering, slowly, for most of the last
// answerSamples owners (one sample each); the most that buys is
// patienceCap, still well under the old wait. An owner with a proposal
// unanswered is proposed to by no other round (awaiting) until it answers
// or is found silent.

// ProposalEvent describes one proposal this node made (Config.OnProposal):
// which booking of ours, to whose offer, what came of it and how long the
// proposer spent on it, from opening the stream to the answer (or to
// giving up).
type ProposalEvent struct {
	Booking      string
	Owner        peer.ID
	OwnerBooking string
	// Outcome is "accepted", "silent" (no answer in time), "unreachable"
	// (no stream), "failed" (the Propose could not be sent) or the
	// reject reason.
	Outcome string
	Start   time.Time
	Took    time.Duration
}

// NoteEvent is something a booking of this node waits on (Config.OnNote):
// What is "held" (Peer holds it; Note gives the exclusive window),
// "plan waits" (for Peer, the plan partner; none: unpaired) or "plan
// falls back".
type NoteEvent struct {
	Booking string
	Peer    peer.ID
	What    string
	Note    string
	At      time.Time
}

func (s *Service) note(booking string, p peer.ID, what, note string) {
	if s.cfg.OnNote != nil {
		s.cfg.OnNote(NoteEvent{Booking: booking, Peer: p, What: what, Note: note, At: time.Now()})
	}
}

func (s *Service) observeProposal(booking string, e *boardEntry, outcome string, start time.Time) {
	if s.cfg.OnProposal == nil {
		return
	}
	s.cfg.OnProposal(ProposalEvent{Booking: booking, Owner: e.owner, OwnerBooking: e.offer.GetBookingId(),
		Outcome: outcome, Start: start, Took: time.Since(start)})
}

// answerSamples bounds the answer delays kept (one per owner, newest).
const answerSamples = 8

// Patience bounds: the least (scheduling noise of a loaded machine around
// a loopback round trip), the most (what an owner that answers slowly can
// stretch it to), and the patience before the node has measured anything.
const (
	patienceFloor   = 50 * time.Millisecond
	patienceCap     = 500 * time.Millisecond
	patienceDefault = 100 * time.Millisecond
)

// answerDelay is one answered proposal's Propose->answer delay.
type answerDelay struct {
	owner string
	d     time.Duration
}

// noteAnswerDelayLocked keeps d, owner's newest answer delay.
func (s *Service) noteAnswerDelayLocked(owner string, d time.Duration) {
	kept := slices.DeleteFunc(s.answerDelays, func(a answerDelay) bool { return a.owner == owner })
	if len(kept) >= answerSamples {
		kept = kept[len(kept)-answerSamples+1:]
	}
	s.answerDelays = append(kept, answerDelay{owner, max(d, 0)})
}

// patienceLocked is how long a round waits for an answer before it
// proposes to its next candidate too: four times the median of the
// recent answer delays, within [patienceFloor, patienceCap];
// patienceDefault with none. The median: an owner alone cannot move it.
func (s *Service) patienceLocked() time.Duration {
	n := len(s.answerDelays)
	if n == 0 {
		return patienceDefault
	}
	ds := make([]time.Duration, n)
	for i, a := range s.answerDelays {
		ds[i] = a.d
	}
	slices.Sort(ds)
	return min(max(4*ds[n/2], patienceFloor), patienceCap, proposeReplyTimeout)
}

// answeredFresh is how long an owner that answered a proposal of ours
// (anything: an Accept, a Reject, even "busy") counts as live: the
// fallback tries such owners before those never heard from. A silent
// owner never gets there, and one that answered once and then goes
// silent costs one patience, as any other.
const answeredFresh = 10 * time.Minute

// noteAnsweredLocked notes that owner answered a proposal now; past
// maxReach owners, those not heard from within answeredFresh are
// forgotten first.
func (s *Service) noteAnsweredLocked(owner peer.ID, now time.Time) {
	if _, ok := s.answered[owner]; !ok && len(s.answered) >= maxReach {
		for p, at := range s.answered {
			if now.Sub(at) > answeredFresh {
				delete(s.answered, p)
			}
		}
		if len(s.answered) >= maxReach {
			return
		}
	}
	s.answered[owner] = now
}

// answeredFirstLocked moves the offers of owners that answered a proposal
// of ours within answeredFresh to the front of es, keeping the order
// within each group.
func (s *Service) answeredFirstLocked(es []*boardEntry, now time.Time) {
	live := func(e *boardEntry) bool {
		at, ok := s.answered[e.owner]
		return ok && elapsed(now, at) < answeredFresh
	}
	slices.SortStableFunc(es, func(x, y *boardEntry) int {
		switch lx, ly := live(x), live(y); {
		case lx && !ly:
			return -1
		case ly && !lx:
			return 1
		}
		return 0
	})
}

// attempt is one proposal of a round: the stream it went out on and what
// came back.
type attempt struct {
	e        *boardEntry
	key      boardKey
	bk       Booking   // our booking as proposed
	start    time.Time // the session start proposed
	name     string
	st       network.Stream
	r        *bufio.Reader
	proposed time.Time // our clock, for the Accept->Confirm sample (holds.go)
	began    time.Time // real time, for OnProposal
	reply    *pb.MatchMessage
	err      error // no answer in time
}

// proposeRound runs one round of proposals for booking id: to cands in
// order, at most maxTries, each made when the one before it has been
// answered (and was no match) or has outlasted the patience. It holds the
// booking (inflight) while it proposes, and ends when the booking matched
// or nothing is left but answers past the patience, which are then
// handled as they come (late).
func (s *Service) proposeRound(ctx context.Context, id string, cands []*boardEntry) {
	now := s.now()
	s.mu.Lock()
	b, ok := s.bookings[id]
	if !ok || b.State != StateSearching || s.busyLocked(id, now) {
		s.mu.Unlock()
		return
	}
	s.inflight[id] = true
	delete(s.askedWhileBusy, id)
	bk := *b
	patience := s.patienceLocked()
	s.mu.Unlock()
	// asked: a peer proposed to the booking meanwhile (and heard
	// "busy"). It answered, so it is live, unlike the unproven owners a
	// round under attack chases: the round makes no new proposal, and
	// ends once the ones out are answered or past their patience.
	asked := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.askedWhileBusy[id]
	}

	results := make(chan *attempt, maxTries)
	var roundMu sync.Mutex
	listening := true // results go to the round; after it, to late
	deliver := func(a *attempt) {
		roundMu.Lock()
		if listening {
			results <- a // buffered for every attempt of the round
			roundMu.Unlock()
			return
		}
		roundMu.Unlock()
		s.late(ctx, a)
	}
	defer func() {
		roundMu.Lock()
		listening = false
		roundMu.Unlock()
		s.mu.Lock()
		delete(s.inflight, id)
		delete(s.askedWhileBusy, id)
		s.mu.Unlock()
		// Answers that came as the round ended: the booking is free now.
		for {
			select {
			case a := <-results:
				s.late(ctx, a)
			default:
				return
			}
		}
	}()

	limit := min(len(cands), maxTries)
	started := 0
	var newest *attempt
	var waitNewest <-chan time.Time // the newest attempt's patience
	outlasted := false              // an attempt outlasted its patience
	for ctx.Err() == nil {
		if newest == nil && started < limit && started > 0 && asked() {
			limit = started
		}
		if newest == nil && started < limit {
			e := cands[started]
			started++
			a := s.sendPropose(ctx, bk, e)
			if a == nil {
				continue // not sent (backed off): the next one
			}
			newest = a
			t := time.NewTimer(patience) // real time: the network's
			defer t.Stop()
			waitNewest = t.C
			if !s.goRun(func() { s.await(a); deliver(a) }) {
				a.st.Reset()
				return
			}
		}
		if newest == nil {
			break // every candidate tried, none waited for within its patience
		}
		select {
		case <-ctx.Done():
			return
		case <-waitNewest:
			// No answer yet: propose to the next one too, or end the
			// round if none is left (the answer is handled when it comes).
			newest, waitNewest = nil, nil
			outlasted = true
		case a := <-results:
			if a == newest {
				newest, waitNewest = nil, nil
			}
			if a.reply.GetAccept() == nil {
				s.finish(a)
				continue
			}
			if s.commit(ctx, a) {
				return
			}
		}
	}
	if started < len(cands) || outlasted {
		// The next round tries the others; and one that outlasted its
		// patience may have been the plan partner, which the booking
		// need not wait for any longer (partnerFailedLocked).
		s.wake()
	}
}

// sendPropose opens a stream to e's owner and sends our proposal for bk.
// It returns nil if it could not (backed off as need be).
func (s *Service) sendPropose(ctx context.Context, bk Booking, e *boardEntry) *attempt {
	now := s.now()
	start := bk.Start
	if bk.Kind == KindNow {
		start = now.Truncate(time.Second)
	}
	s.mu.Lock()
	b, ok := s.bookings[bk.ID]
	if !ok || b.State != StateSearching || s.overlappingLocked(start, start.Add(time.Duration(bk.DurationMin)*time.Minute), bk.ID, now) != nil {
		s.mu.Unlock()
		return nil
	}
	name := s.name
	s.mu.Unlock()
	// The proposal carries our own offer, signed: the acceptor checks that
	// we are what we propose.
	own, err := sealOffer(s.offerFor(bk, now), s.key)
	if err != nil {
		s.log.Error("signing the offer a proposal carries", "err", err)
		return nil
	}
	a := &attempt{e: e, key: boardKey{e.owner, e.offer.GetBookingId()}, bk: bk, start: start, name: name,
		began: time.Now()} // real time: an observation (OnProposal)
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(overAnyConn(sctx), e.owner, MatchProtocol)
	if err != nil {
		s.observeProposal(bk.ID, e, "unreachable", a.began)
		// Most likely gone offline, its offer lingering on boards until it
		// expires. If it comes back it announces the offer again, and the
		// newer record ends this backoff at once (forgetBackoff).
		s.setBackoff(e, unreachableBackoff)
		return nil
	}
	st.SetDeadline(time.Now().Add(2 * s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	a.st, a.r, a.proposed = st, bufio.NewReader(st), s.now()
	err = writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: bk.ID, ToBooking: a.key.booking, StartUnix: start.Unix(),
		DurationMin: uint32(bk.DurationMin), Kind: kindToPB(bk.Kind),
		Activity: activityToPB(bk.Activity), Quiet: bk.Quiet, Name: name, Offer: own,
	}}})
	if err != nil {
		st.Reset()
		s.observeProposal(bk.ID, e, "failed", a.began)
		s.setBackoff(e, 5*time.Second)
		return nil
	}
	s.mu.Lock()
	s.awaiting[e.owner]++
	s.mu.Unlock()
	return a
}

// await reads the answer to a's Propose. An acceptor answers from memory
// (no disk write), so its answer takes a round trip: waiting the whole
// stream timeout for it only served owners that never answer.
func (s *Service) await(a *attempt) {
	a.st.SetReadDeadline(time.Now().Add(min(s.cfg.StreamTimeout, proposeReplyTimeout))) // real time: a socket bound
	a.reply, a.err = readMsg(a.r)
	took := time.Since(a.began)
	a.st.SetReadDeadline(time.Now().Add(2 * s.cfg.StreamTimeout))
	s.mu.Lock()
	if s.awaiting[a.e.owner]--; s.awaiting[a.e.owner] <= 0 {
		delete(s.awaiting, a.e.owner)
	}
	if a.err == nil {
		s.noteAnswerDelayLocked(string(a.e.owner), took)
		s.noteAnsweredLocked(a.e.owner, s.now())
	}
	s.mu.Unlock()
	if a.err != nil {
		a.reply = nil
	}
}

// finish handles an attempt that brought no Accept: silence or a Reject.
func (s *Service) finish(a *attempt) {
	defer a.st.Close()
	if a.err != nil {
		// No answer to a Propose: the owner took the stream and kept
		// silent (or broke it off). It stays out of plans and proposals,
		// all its offers, for a while (reach.go).
		s.observeProposal(a.bk.ID, a.e, "silent", a.began)
		s.setBackoff(a.e, 5*time.Second)
		s.markSilent(a.e.owner, a.st.Conn())
		return
	}
	s.observeProposal(a.bk.ID, a.e, a.reply.GetReject().GetReason(), a.began)
	// A busy peer is settling another proposal, which takes a round
	// trip and a write: by the time we come back it has either matched
	// (and withdrawn the offer) or is free again.
	d := time.Minute
	if a.reply.GetReject().GetReason() == reasonBusy {
		d = busyBackoff + time.Duration(rand.Int64N(int64(busyBackoff)))
		if hint := s.takeBusyHint(a.e, a.reply.GetReject().GetRetryMs()); hint > 0 {
			d = hint
		}
	}
	s.setBackoff(a.e, d)
}

// late handles an answer that came after its round ended (or as it
// ended): an Accept is taken if the booking is still searching and free,
// else released.
func (s *Service) late(ctx context.Context, a *attempt) {
	if a.reply.GetAccept() == nil {
		s.finish(a)
		return
	}
	now := s.now()
	s.mu.Lock()
	b, ok := s.bookings[a.bk.ID]
	free := ok && b.State == StateSearching && !s.busyLocked(b.ID, now)
	if free {
		s.inflight[b.ID] = true
	}
	s.mu.Unlock()
	if !free {
		s.release(ctx, a)
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.inflight, a.bk.ID)
		delete(s.askedWhileBusy, a.bk.ID)
		s.mu.Unlock()
	}()
	s.commit(ctx, a)
}

// release gives back an Accept the booking does not take (it matched
// another, or is busy with another negotiation): a Cancel of the hold,
// which the acceptor drops at once (no lapse, but for the third within
// 10 minutes at one acceptor: releaseHoldLocked), and the stream closed
// without a Confirm.
func (s *Service) release(ctx context.Context, a *attempt) {
	s.observeProposal(a.bk.ID, a.e, "accepted, released", a.began)
	a.st.Close()
	s.goRun(func() {
		if err := s.sendRelease(ctx, a.e.owner, a.bk.ID, a.key.booking); err != nil {
			s.log.Debug("releasing a hold we do not take; it lapses", "peer", a.e.owner, "err", err)
		}
	})
}

// commit takes a's Accept: persist our side, Confirm, settle. It reports
// whether the booking got matched. The caller holds the booking
// (inflight).
func (s *Service) commit(ctx context.Context, a *attempt) bool {
	defer a.st.Close()
	s.observeProposal(a.bk.ID, a.e, "accepted", a.began)
	e, key, bookingID := a.e, a.key, a.bk.ID
	partnerName := a.reply.GetAccept().GetName()
	if partnerName == "" {
		partnerName = e.offer.GetName()
	}
	// Persist our side before confirming: if we crash now, the partner's
	// hold times out, or our reconcile settles it either way.
	stored, err := s.update(bookingID, func(cur *Booking) (*Booking, error) {
		if cur == nil || cur.State != StateSearching {
			return nil, nil // cancelled meanwhile: no Confirm, the hold expires
		}
		delete(s.holds, bookingID) // their Confirms get "no such match"
		cur.State, cur.Partner, cur.PartnerName, cur.PartnerBooking = StateMatched, e.owner.String(), partnerName, key.booking
		cur.Start, cur.Confirmed, cur.Note = a.start, false, ""
		cur.PartnerAddrs = s.partnerAddrs(e.owner, offerAddrs(e.offer))
		return cur, nil
	})
	if err != nil {
		s.log.Error("saving match", "err", err)
		return false
	}
	if stored == nil {
		return false
	}
	nb := *stored
	s.at("proposer-persisted")
	s.goRun(func() { s.announce(ctx, nb) })
	// What the acceptor waits for between its Accept and our Confirm: a
	// round trip, its checks and our write.
	delay := elapsedOrZero(s.now(), a.proposed)
	err = writeMsg(a.st, confirmFor(nb, a.name))
	var reply *pb.MatchMessage
	if err == nil {
		reply, err = readMsg(a.r)
	}
	if err != nil {
		s.log.Debug("match not confirmed yet; will retry", "peer", e.owner, "err", err)
		return true
	}
	if reply.GetConfirmed() != nil {
		s.mu.Lock()
		s.noteConfirmDelayLocked(e.owner, delay)
		s.mu.Unlock()
	}
	s.settle(ctx, nb, reply)
	return true
}
