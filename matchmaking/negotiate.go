package matchmaking

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// Protocol IDs.
const (
	MatchProtocol = "/tandem/match/1.0.0"
	BoardProtocol = "/tandem/board/1.0.0"
	// BoardProtocolV2 serves the board per shard (offer protocol version 2).
	BoardProtocolV2 = "/tandem/board/2.0.0"
	// MaxMatchMessage bounds one negotiation frame.
	MaxMatchMessage = 4 << 10
)

// Reject reasons on the wire.
const (
	reasonBusy        = "busy"
	reasonUnavailable = "not available"
	reasonMismatch    = "not compatible"
	reasonNoMatch     = "no such match"
	reasonStorage     = "storage error"
)

func writeMsg(w io.Writer, m *pb.MatchMessage) error {
	m.Version = protoVersion
	_, err := protodelim.MarshalTo(w, m)
	return err
}

func readMsg(r *bufio.Reader) (*pb.MatchMessage, error) {
	m := &pb.MatchMessage{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxMatchMessage}).UnmarshalFrom(r, m); err != nil {
		return nil, fmt.Errorf("reading match message: %w", err)
	}
	if m.GetVersion() != protoVersion {
		return nil, fmt.Errorf("match message version %d not supported", m.GetVersion())
	}
	if err := checkMatchText(m); err != nil {
		return nil, fmt.Errorf("match message: %w", err)
	}
	return m, nil
}

// checkMatchText applies the user text rules to the names and reasons a
// match message carries; a message that breaks them is refused whole.
func checkMatchText(m *pb.MatchMessage) error {
	switch {
	case m.GetPropose() != nil:
		return usertext.Name.Check(m.GetPropose().GetName())
	case m.GetAccept() != nil:
		return usertext.Name.Check(m.GetAccept().GetName())
	case m.GetConfirm() != nil:
		return usertext.Name.Check(m.GetConfirm().GetName())
	case m.GetCancel() != nil:
		return usertext.Reason.Check(m.GetCancel().GetReason())
	case m.GetReject() != nil:
		return usertext.Reason.Check(m.GetReject().GetReason())
	}
	return nil
}

func rejectMsg(reason string) *pb.MatchMessage {
	return &pb.MatchMessage{Body: &pb.MatchMessage_Reject{Reject: &pb.Reject{Reason: reason}}}
}

var confirmedMsg = func() *pb.MatchMessage {
	return &pb.MatchMessage{Body: &pb.MatchMessage_Confirmed{Confirmed: &pb.Confirmed{}}}
}

// compatible reports whether our booking b can pair with offer o by owner.
func (s *Service) compatible(b *Booking, o *pb.Offer, owner peer.ID) bool {
	if o.GetWithdrawn() || kindFromPB(o.GetKind()) != b.Kind || int(o.GetDurationMin()) != b.DurationMin {
		return false
	}
	if b.Kind == KindScheduled && o.GetStartUnix() != b.Start.Unix() {
		return false
	}
	if !compatibleActivity(b.Activity, activityFromPB(o.GetActivity())) || o.GetQuiet() != b.Quiet {
		return false
	}
	if b.With != "" && b.With != owner.String() {
		return false
	}
	return len(o.GetWith()) == 0 || peer.ID(o.GetWith()) == s.h.ID()
}

// matchLoop proposes to compatible offers whenever something changes.
func (s *Service) matchLoop(ctx context.Context) {
	for s.clk.wait(ctx, s.cfg.MatchInterval, s.kick) {
		s.matchOnce(ctx)
	}
}

// reconcileLoop re-confirms matches that are not settled yet, and every
// two minutes all matches. It runs apart from matchLoop, so a partner that
// is slow to answer never holds up matching.
func (s *Service) reconcileLoop(ctx context.Context) {
	lastFull := s.now()
	s.clk.every(ctx, s.cfg.MatchInterval, func() {
		now := s.now()
		full := elapsed(now, lastFull) > 2*time.Minute
		if full {
			lastFull = now
		}
		s.reconcileAll(ctx, full)
	})
}

// planGrace is how long a booking waits for the partner the class plan
// gives it (see planPartner) before it proposes to anyone compatible. It
// covers a negotiation and the withdrawals that follow it, with room for
// a loaded machine; a plan that went wrong (nodes saw different boards)
// costs no more than this.
const planGrace = 300 * time.Millisecond

// maxTries bounds the proposals one booking makes in one round (answers.go).
const maxTries = 3

// unreachableBackoff is how long a proposer leaves alone an offer whose
// owner it could not reach.
const unreachableBackoff = 30 * time.Second

// proposeReplyTimeout bounds the wait for the answer to a Propose (the
// stream timeout, if shorter).
const proposeReplyTimeout = 2 * time.Second

// busyBackoff is the least time before a proposer comes back to an offer
// whose owner answered "busy" (it waits up to twice that, at random).
const busyBackoff = 30 * time.Millisecond

// takeBusyHint is how long to wait before proposing again to offer e,
// whose owner answered "busy" with retry_ms (Reject.retry_ms): that, plus
// up to a quarter of it and a millisecond at random (proposers turned
// away together do not come back together), if it is shorter than the
// busy backoff; 0 to wait the busy backoff. The owner knows when its
// exclusive hold ends, and the backoff, sized for any path, kept an
// honest proposer that met a stranger's hold away for 30-60 ms where the
// hold had a few left. A hint is taken once per offer in two busy
// backoffs, so an owner that answers "busy, come back in 1 ms" to every
// proposal draws no more proposals than one that gives no hint.
func (s *Service) takeBusyHint(e *boardEntry, retryMs uint32) time.Duration {
	hint := time.Duration(retryMs) * time.Millisecond
	if hint <= 0 || hint >= busyBackoff {
		return 0
	}
	k := boardKey{e.owner, e.offer.GetBookingId()}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for bk, at := range s.busyHinted {
		if elapsed(now, at) >= 2*busyBackoff {
			delete(s.busyHinted, bk)
		}
	}
	if _, ok := s.busyHinted[k]; ok {
		return 0
	}
	s.busyHinted[k] = now
	return hint + time.Duration(rand.Int64N(int64(hint/4+time.Millisecond)))
}

// planWait remembers, per booking, which plan partner it waits for and
// since when.
type planWait struct {
	partner boardKey // zero: the plan leaves the booking unpaired
	since   time.Time
	// partnerSince is when the plan last gave the booking this partner.
	partnerSince time.Time
	// invited is the lower plan partner the booking's offer was pushed
	// to (invitePlanPartner).
	invited peer.ID
}

// spentGraceBackoff is how long a lower plan partner that let one of our
// bookings' grace run out (it neither proposed nor held it) gets no grace
// from any of our bookings: a peer the plan pairs us with that never
// proposes cost each booking the whole planGrace, once per booking. A
// match with it, from either side, forgives it at once.
const spentGraceBackoff = 2 * time.Minute

// maxSpentGrace bounds the peers remembered for spentGraceBackoff.
const maxSpentGrace = 4096

// matchOnce starts a round of proposals for each searching booking that is
// free (no proposal of ours under way, none of another node held), each
// round in its own goroutine: bookings are for different times, so their
// negotiations are independent. To keep two nodes from proposing to each
// other at once, only the lower peer ID of a compatible pair proposes; the
// higher one waits to be asked.
//
// Nothing is proposed until the identity stamp is ready: a proposal
// carries our own stamped offer (prepareStamp wakes the matcher then).
func (s *Service) matchOnce(ctx context.Context) {
	if s.stamp.Load() == nil {
		return
	}
	now := s.now()
	var mine []Booking
	s.mu.Lock()
	for id := range s.plans {
		if b, ok := s.bookings[id]; !ok || b.State != StateSearching {
			delete(s.plans, id)
		}
	}
	for id, b := range s.bookings {
		if b.State == StateSearching && !s.proposing[id] && !s.busyLocked(id, now) {
			mine = append(mine, *b)
		}
	}
	s.mu.Unlock()
	sort.Slice(mine, func(i, j int) bool { return mine[i].CreatedAt.Before(mine[j].CreatedAt) })
	for _, b := range mine {
		cands := s.candidates(&b, now)
		if len(cands) == 0 {
			continue
		}
		s.mu.Lock()
		if s.proposing[b.ID] {
			s.mu.Unlock()
			continue
		}
		s.proposing[b.ID] = true
		s.mu.Unlock()
		s.goRun(func() {
			defer func() {
				s.mu.Lock()
				delete(s.proposing, b.ID)
				s.mu.Unlock()
			}()
			s.proposeRound(ctx, b.ID, cands) // answers.go
		})
	}
}

// candidates orders the offers booking b should propose to now; none
// means wait. Favourites come first, in random order. Otherwise the class
// plan decides: every node computes the same pairing of the offers it
// sees in b's slot class (planPartner), and the lower peer ID of each
// planned pair proposes to the other, so a storm of bookings for one slot
// pairs up in one round instead of colliding on "busy". A booking whose
// planned partner is lower waits to be asked; one the plan leaves
// unpaired waits too. If that has not led to a match within planGrace
// (the nodes saw different boards, or a private choice such as a block
// got in the way), the booking proposes to every compatible higher peer,
// in random order, those that answered a proposal of ours lately first.
func (s *Service) candidates(b *Booking, now time.Time) []*boardEntry {
	self := s.h.ID()
	class := s.classOf(b, now)
	var favs, others []*boardEntry
	s.mu.Lock()
	defer s.mu.Unlock()
	if restricted(b, now) {
		// Only members of the booking's circle, for the plan too.
		in := class[:0:0]
		for _, e := range class {
			if s.scopeAllowsLocked(b, e.owner, now) {
				in = append(in, e)
			}
		}
		class = in
	}
	// Only owners the node is connected to take part, in the plan and as
	// candidates; others are dialled in the background (reach.go), so an
	// owner that never answers costs no negotiation a timeout.
	reachable := s.reachClassLocked(b, class, now)
	in := class[:0:0]
	for _, e := range class {
		if reachable[e.owner] {
			in = append(in, e)
		}
	}
	class = in
	// Offers we could not reach, or that their owner said are not
	// available, are most likely gone (a node that went offline leaves its
	// offers on boards until they expire): the plan leaves them out.
	planned := class[:0:0]
	for _, e := range class {
		if s.shunnedLocked(e.owner, now) {
			continue
		}
		if bo, ok := s.backoff[boardKey{e.owner, e.offer.GetBookingId()}]; !ok || !bo.hard || !now.Before(bo.until) {
			planned = append(planned, e)
		}
	}
	for _, e := range class {
		if e.owner <= self || !s.compatible(b, e.offer, e.owner) || !s.acceptablePeerLocked(e.owner, now) || s.shunnedLocked(e.owner, now) {
			continue
		}
		if bo, ok := s.backoff[boardKey{e.owner, e.offer.GetBookingId()}]; ok && now.Before(bo.until) {
			continue
		}
		if s.awaiting[e.owner] > 0 {
			continue // a proposal of ours waits for its answer (answers.go)
		}
		if s.people[e.owner].Favourite {
			favs = append(favs, e)
		} else {
			others = append(others, e)
		}
	}
	shuffle := func(es []*boardEntry) {
		rand.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
	}
	if len(favs) > 0 {
		shuffle(favs)
		shuffle(others)
		return append(favs, others...)
	}
	if b.With != "" {
		// A private booking has one possible partner, and the plan
		// leaves private offers out: nothing to wait for.
		return others
	}
	var want boardKey
	var partner *boardEntry
	if partner = planPartner(self, b, planned); partner != nil {
		want = boardKey{partner.owner, partner.offer.GetBookingId()}
	}
	// The grace runs from when the booking first had a plan partner, not
	// from every change of plan: in a storm the plan shifts as offers
	// arrive, and restarting the wait each time would stall the whole
	// class.
	w, ok := s.plans[b.ID]
	if !ok || (w.partner == boardKey{} && want != boardKey{}) {
		w.since = now
	}
	if !ok || w.partner != want {
		w.partnerSince = now
	}
	w.partner = want
	invite := partner != nil && partner.owner < self && w.invited != partner.owner
	if invite {
		w.invited = partner.owner
	}
	s.plans[b.ID] = w
	if invite {
		s.goRun(func() { s.invitePlanPartner(*b, partner.owner) })
	}
	if partner != nil && partner.owner > self {
		for _, e := range others {
			if e == partner {
				return []*boardEntry{partner}
			}
		}
		// Not proposable now (backoff, or a private choice): wait, then
		// fall back.
	}
	if waited := elapsed(now, w.since); waited < planGrace && !s.partnerFailedLocked(b, partner, now) {
		s.wakeAfter(planGrace - waited)
		if s.cfg.OnNote != nil {
			var p peer.ID
			side := "unpaired"
			if partner != nil {
				p, side = partner.owner, fmt.Sprintf("lower=%v awaiting=%d", partner.owner < self, s.awaiting[partner.owner])
			}
			s.note(b.ID, p, "plan waits", side)
		}
		return nil
	}
	if partner != nil && partner.owner < self && elapsed(now, w.partnerSince) >= planGrace {
		if _, held := s.holdOfLocked(b.ID, partner.owner); !held {
			// The plan's proposer let the whole grace pass without a
			// word: the next booking the plan pairs with it does not
			// wait for it.
			s.spendGraceLocked(partner.owner, now)
		}
	}
	if s.cfg.OnNote != nil {
		var p peer.ID
		if partner != nil {
			p = partner.owner
		}
		s.note(b.ID, p, "plan falls back", fmt.Sprintf("waited %v, %d candidates", elapsed(now, w.since), len(others)))
	}
	others = onePerOwner(others)
	shuffle(others)
	s.answeredFirstLocked(others, now) // answers.go
	return others
}

// planPartnerJoinsLocked reports whether a proposal of remote's booking
// from may be held alongside an exclusive hold on our booking id: remote
// is the partner the class plan gives id, and the exclusive hold is
// another peer's (our booking is neither proposing nor being written).
// The window keeps out honest proposers that would collide with its
// holder; but the plan's pair is the one both sides look for, and a
// stranger outside the plan (a Sybil proposes to every offer it sees,
// first, and never confirms) used to keep a fresh booking from its
// planned partner for the whole window. Whichever Confirm comes first
// commits; the other is answered "no such match".
func (s *Service) planPartnerJoinsLocked(id string, remote peer.ID, from string, now time.Time) bool {
	if _, writing := s.pending[id]; writing || s.inflight[id] {
		return false
	}
	if w, ok := s.plans[id]; !ok || w.partner != (boardKey{remote, from}) {
		return false
	}
	_, again := s.holdOfLocked(id, remote)
	return !again
}

// partnerFailedLocked reports whether booking b's plan partner has
// already failed its part, so that waiting out the rest of planGrace
// would only serve an owner that is not coming: we proposed to it and it
// has not answered within our patience (the proposal is still out:
// awaiting), or it was found silent; or it proposed to b and holds it
// past the exclusive window without confirming, which an honest proposer
// does within a round trip (a hold held alongside another has no window
// of its own: the one a hold granted now would get), and past our
// patience too: a loaded honest partner's Confirm may outlast a window of
// 20 ms, and falling back then would start a round of ours that answers
// its Confirm "no such match". A silent Sybil that the plan pairs with a
// fresh booking used to cost the booking the whole grace (300 ms) after
// the patience it had already spent on it (docs/benchmarks.md, Sybils).
func (s *Service) partnerFailedLocked(b *Booking, partner *boardEntry, now time.Time) bool {
	if partner == nil {
		return false
	}
	if s.awaiting[partner.owner] > 0 || now.Before(s.reach[partner.owner].silentUntil) {
		return true
	}
	if partner.owner < s.h.ID() && now.Before(s.graceSpent[partner.owner]) {
		if _, held := s.holdOfLocked(b.ID, partner.owner); !held {
			return true // it let another booking's grace run out lately
		}
	}
	h, ok := s.holdOfLocked(b.ID, partner.owner)
	return ok && elapsed(now, h.since) >= max(h.exclusiveFor, s.exclusiveWindowLocked(), s.patienceLocked())
}

// spendGraceLocked records that p, a lower plan partner, let a booking's
// grace run out (spentGraceBackoff).
func (s *Service) spendGraceLocked(p peer.ID, now time.Time) {
	if _, ok := s.graceSpent[p]; !ok && len(s.graceSpent) >= maxSpentGrace {
		for q, until := range s.graceSpent {
			if !now.Before(until) {
				delete(s.graceSpent, q)
			}
		}
		if len(s.graceSpent) >= maxSpentGrace {
			return // those remembered stay; a new one gets its grace
		}
	}
	s.graceSpent[p] = now.Add(spentGraceBackoff)
}

// onePerOwner keeps the first offer of each owner: a round asks an owner
// once (an owner that does not answer one of its offers answers none, and
// each offer of a silent owner asked in turn cost the round a patience).
func onePerOwner(es []*boardEntry) []*boardEntry {
	seen := make(map[peer.ID]bool, len(es))
	out := es[:0:0]
	for _, e := range es {
		if !seen[e.owner] {
			seen[e.owner] = true
			out = append(out, e)
		}
	}
	return out
}

// classReach is how many owners in a slot class a searching booking
// wants to be connected to, counting only those it could propose to or
// be asked by (compatible, not backed off, not shunned). A booking needs
// one partner: dialling every owner of a crowded slot ("everyone books
// Monday 9am") made a node's connections, and with them its handshakes,
// heartbeats and flood-published copies, grow with the slot's size, that
// is with the network. Owners that match leave the class and others are
// dialled in their place, so two compatible bookings left searching still
// meet: each keeps dialling while it has fewer than classReach usable
// owners, and any connection between them, from either side, puts both
// in each other's plan.
const classReach = 8

// reachClassLocked says which owners of booking b's class the node can
// plan with now (connected, not silent: true in the map, which holds
// only connected owners), and starts background dials to more of the
// others, in random order, while fewer than classReach usable owners are
// connected or being dialled.
//
// It runs on every plan of a searching booking, and a class may hold
// thousands of owners of which a node is connected to a handful (1,000
// ground Sybils re-announcing in an honest pair's class, whose dials all
// fail): so it asks the swarm once for the connected peers, not once per
// owner, and keeps in memory only the connected owners and those it may
// dial now, not the whole class (a map and a list of every owner on
// every plan kept the collector running through the pair's match).
func (s *Service) reachClassLocked(b *Booking, class []*boardEntry, now time.Time) map[peer.ID]bool {
	conns := s.h.Network().Peers() // any connection, a relayed one included (connectedTo)
	connected := make(map[peer.ID]bool, len(conns))
	for _, p := range conns {
		connected[p] = true
	}
	reachable := map[peer.ID]bool{}
	dialing := map[peer.ID]bool{}
	usable := 0
	var far []peer.ID
	for _, e := range class {
		if s.shunnedLocked(e.owner, now) {
			continue
		}
		if !connected[e.owner] {
			switch st := s.reach[e.owner]; {
			case st.dialing:
				dialing[e.owner] = true // counted as it will be, so dials stay bounded
			case now.Before(st.until) || now.Before(st.silentUntil):
				// Failed or silent lately: left alone (reachableLocked).
			default:
				far = append(far, e.owner)
			}
			continue
		}
		if _, seen := reachable[e.owner]; seen {
			continue
		}
		ok := s.reachableLocked(e.owner, now)
		reachable[e.owner] = ok
		if ok && s.usableLocked(b, e, now) {
			usable++
		}
	}
	usable += len(dialing)
	rand.Shuffle(len(far), func(i, j int) { far[i], far[j] = far[j], far[i] })
	for _, p := range far {
		if usable >= classReach {
			break
		}
		if s.reach[p].dialing {
			continue // an owner with two offers in the class: dialled once
		}
		s.reachableLocked(p, now) // starts a dial unless all dial slots are taken
		if s.reach[p].dialing {
			usable++
		}
	}
	return reachable
}

// usableLocked reports whether booking b could pair with e's offer now,
// as far as this node's own records go.
func (s *Service) usableLocked(b *Booking, e *boardEntry, now time.Time) bool {
	if !s.compatible(b, e.offer, e.owner) || !s.acceptablePeerLocked(e.owner, now) {
		return false
	}
	bo, ok := s.backoff[boardKey{e.owner, e.offer.GetBookingId()}]
	return !ok || !bo.hard || !now.Before(bo.until)
}

// planPartner computes the class plan: a maximum matching of the open
// offers in b's slot class as this node sees them (b included; offers
// naming a peer in `with` left out), built the same way on every node so
// that nodes seeing the same board agree on it. Members are ordered by
// planKey, a hash of the slot and owner: every node computes the same
// order, yet it is a fresh random order for every slot, so who meets whom
// stays random and no peer ID sorts well everywhere. "desk" requests pair with each other
// in that order, "moving" ones likewise, an odd one out of each takes the
// first free "anything", and the remaining "anything" requests pair in
// order. No other pairing of the class matches more bookings. It returns
// the offer planned as b's partner, or nil.
func planPartner(self peer.ID, b *Booking, class []*boardEntry) *boardEntry {
	slot := classOfBooking(b)
	type member struct {
		owner   peer.ID
		booking string
		act     Activity
		e       *boardEntry // nil for b itself
		key     string      // planKey, computed once: a class can hold thousands
	}
	byOwner := map[peer.ID]member{}
	for _, e := range class {
		if len(e.offer.GetWith()) > 0 || e.owner == self {
			continue
		}
		m := member{e.owner, e.offer.GetBookingId(), activityFromPB(e.offer.GetActivity()), e, ""}
		// One offer per owner (a node holds one live booking per slot);
		// should a stale one linger, the newest counts.
		if old, ok := byOwner[e.owner]; !ok || old.e.seq < e.seq {
			byOwner[e.owner] = m
		}
	}
	byOwner[self] = member{self, b.ID, b.Activity, nil, ""}
	salt := planSaltOf(slot)
	var desk, moving, anything []member
	for _, m := range byOwner {
		if m.e != nil && m.e.planKey != "" && m.e.class == slot {
			m.key = m.e.planKey
		} else {
			m.key = salt.key(m.owner)
		}
		switch m.act {
		case ActivityDesk:
			desk = append(desk, m)
		case ActivityMoving:
			moving = append(moving, m)
		default:
			anything = append(anything, m)
		}
	}
	for _, ms := range [][]member{desk, moving, anything} {
		sort.Slice(ms, func(i, j int) bool { return ms[i].key < ms[j].key })
	}
	var pairs [][2]member
	pairUp := func(ms []member) []member {
		for len(ms) >= 2 {
			pairs = append(pairs, [2]member{ms[0], ms[1]})
			ms = ms[2:]
		}
		return ms
	}
	restD, restM := pairUp(desk), pairUp(moving)
	for _, odd := range [][]member{restD, restM} {
		if len(odd) == 1 && len(anything) > 0 {
			pairs = append(pairs, [2]member{odd[0], anything[0]})
			anything = anything[1:]
		}
	}
	pairUp(anything)
	for _, p := range pairs {
		switch {
		case p[0].e == nil:
			return p[1].e
		case p[1].e == nil:
			return p[0].e
		}
	}
	return nil
}

// planKey orders class members: SHA-256 of a salt every node derives from
// the slot class, followed by the owner's binary peer ID. Booking IDs
// are the owner's free choice, so a key that hashed them let a stranger
// grind one until it sorted next to a victim's; a peer ID costs an
// identity stamp per try, and the salt changes with every slot, so one
// ground ID does not serve every slot.
func planKey(c slotClass, owner peer.ID) string {
	return planSaltOf(c).key(owner)
}

// planSalt is the salt planKey derives from slot class c.
type planSalt []byte

func planSaltOf(c slotClass) planSalt {
	return fmt.Appendf(nil, "tandem-plan/1|%d|%d|%d|%t|", c.kind, c.start, c.dur, c.quiet)
}

// key is owner's planKey under this salt.
func (salt planSalt) key(owner peer.ID) string {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(owner))
	return string(h.Sum(nil))
}

// busyLocked: booking id is in a negotiation (ours, or another node's
// proposal held exclusively) or a change of it is being written.
func (s *Service) busyLocked(id string, now time.Time) bool {
	_, writing := s.pending[id]
	return writing || s.inflight[id] || s.heldLocked(id, now)
}

// backoffEntry: do not propose to an offer again before until. hard
// marks offers that failed for more than being busy (unreachable, not
// available, not compatible).
type backoffEntry struct {
	until time.Time
	hard  bool
}

// forgetBackoff drops a hard backoff from an offer when a newer record of
// it arrives: its owner announced it again, so it is (still or again)
// open, for instance after its partner cancelled, and a "not available"
// from a minute ago no longer says anything.
func (s *Service) forgetBackoff(owner peer.ID, booking string) (forgot bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := boardKey{owner, booking}
	if bo, ok := s.backoff[k]; ok && bo.hard {
		delete(s.backoff, k)
		return true
	}
	return false
}

// setBackoff keeps the proposer away from offer e for d, unless a newer
// record of the offer has arrived since e: the answer (or silence) was
// about the old record, and the newer one says the offer is open (again),
// for instance because its match was cancelled while we were proposing.
// The check and the write happen under s.mu, and forgetBackoff runs under
// it after every newer record is on the board, so a record arriving at any
// moment of a negotiation is never outlived by that negotiation's backoff.
func (s *Service) setBackoff(e *boardEntry, d time.Duration) {
	k := boardKey{e.owner, e.offer.GetBookingId()}
	s.mu.Lock()
	if cur := s.board.get(k.owner, k.booking); cur != nil && cur.seq > e.seq {
		s.mu.Unlock()
		s.wake()
		return
	}
	now := s.now()
	for bk, bo := range s.backoff {
		if now.After(bo.until) {
			delete(s.backoff, bk)
		}
	}
	s.backoff[k] = backoffEntry{until: now.Add(d), hard: d >= time.Second}
	s.mu.Unlock()
	s.wakeAfter(d)
}

// wakeAfter runs the matcher again after d of the clock (a backoff, a
// grace period or a hold's exclusive window ends), rather than at the
// next tick. One goroutine (wakeLoop) serves all: it keeps every time
// asked for within a tick, earliest first, so an earlier request does not
// replace a later one (a booking freed by an exclusive window ending must
// not make the matcher miss the end of a busy backoff a moment later).
func (s *Service) wakeAfter(d time.Duration) {
	if d <= 0 || d > s.cfg.MatchInterval {
		return // the tick comes first
	}
	at := s.now().Add(d)
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	i, found := slices.BinarySearchFunc(s.wakeAts, at, time.Time.Compare)
	if found {
		return
	}
	if len(s.wakeAts) >= maxWakes {
		if i == len(s.wakeAts) {
			return // the latest of many: an earlier wake's round or the tick serves it
		}
		s.wakeAts = s.wakeAts[:len(s.wakeAts)-1]
	}
	s.wakeAts = slices.Insert(s.wakeAts, i, at)
	if i == 0 {
		select {
		case s.wakeSet <- struct{}{}:
		default:
		}
	}
}

// maxWakes bounds the wake times kept; they all fall within a tick.
const maxWakes = 64

// wakeLoop wakes the matcher at the times wakeAfter asks for.
func (s *Service) wakeLoop(ctx context.Context) {
	for {
		s.wakeMu.Lock()
		var at time.Time
		if len(s.wakeAts) > 0 {
			at = s.wakeAts[0]
		}
		s.wakeMu.Unlock()
		wait := time.Duration(1<<63 - 1) // until asked
		if !at.IsZero() {
			// At most a tick: a clock set back must not push it out.
			wait = min(at.Sub(s.now()), s.cfg.MatchInterval)
		}
		if !s.clk.wait(ctx, wait, s.wakeSet) {
			return
		}
		s.wakeMu.Lock()
		now, due := s.now(), 0
		// Due: passed, or more than a tick ahead (asked for before the
		// clock was set back; the tick serves it).
		for due < len(s.wakeAts) && (!now.Before(s.wakeAts[due]) || s.wakeAts[due].Sub(now) > s.cfg.MatchInterval) {
			due++
		}
		s.wakeAts = s.wakeAts[due:]
		s.wakeMu.Unlock()
		if due > 0 {
			s.wake()
		}
	}
}

func confirmFor(b Booking, name string) *pb.MatchMessage {
	return &pb.MatchMessage{Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{
		FromBooking: b.ID, ToBooking: b.PartnerBooking, StartUnix: b.Start.Unix(),
		DurationMin: uint32(b.DurationMin), Name: name,
	}}}
}

// settle applies the partner's answer to a Confirm for our matched booking.
// If the change cannot be stored, the booking stays as it was, in memory
// and on disk, and the next re-check of the match tries again.
func (s *Service) settle(ctx context.Context, sent Booking, reply *pb.MatchMessage) {
	if c := reply.GetCancel(); c != nil && c.GetToBooking() == sent.ID && c.GetFromBooking() == sent.PartnerBooking {
		// The partner cancelled the match: apply its Cancel, reason and all.
		if pid, err := peer.Decode(sent.Partner); err == nil {
			if err := s.onCancel(pid, c); err != nil && !errors.Is(err, errNoMatch) {
				s.log.Error("applying the partner's cancel; will re-check", "booking", sent.ID, "err", err)
			}
			return
		}
	}
	freed, adopted, orphaned := false, false, false
	why := "matched elsewhere"
	nb, err := s.update(sent.ID, func(cur *Booking) (*Booking, error) {
		same := cur != nil && cur.State == StateMatched && cur.Partner == sent.Partner && cur.PartnerBooking == sent.PartnerBooking
		if !same && cur != nil && reply.GetConfirmed() != nil {
			// The partner holds the match, which we had let go: an
			// earlier answer said "no such match" (its own proposal was
			// under way) and this Confirm, a re-check's, crossed it and
			// committed. Take it back if the booking is still free; if it
			// has matched elsewhere or was cancelled, tell the partner.
			// Before, the partner kept a match we did not hold until its
			// re-check two minutes later.
			switch {
			case cur.State == StateSearching:
				cur.State, cur.Partner, cur.PartnerName, cur.PartnerBooking = StateMatched, sent.Partner, sent.PartnerName, sent.PartnerBooking
				cur.Start, cur.Confirmed, cur.Note, cur.PartnerAddrs = sent.Start, true, "", sent.PartnerAddrs
				adopted = true
				return cur, nil
			case cur.State == StateMatched:
				orphaned = true
			case cur.State == StateCancelled:
				// Our user cancelled: the partner hears the reason, as
				// from the Cancel the cancel itself sends (whichever of
				// the two comes first is the one it applies).
				orphaned, why = true, cur.Note
			}
			return nil, nil
		}
		if !same {
			return nil, nil
		}
		if reply.GetConfirmed() != nil {
			if cur.Confirmed {
				return nil, nil
			}
			cur.Confirmed = true
			return cur, nil
		}
		now := s.now()
		if !now.Before(cur.End().Add(-peerSlack)) {
			// The booked end is less than MaxClockSkew (and a minute for
			// rounding) away: the partner's clock may be past it already,
			// and its booking done. The match is over, not undone; a "now"
			// booking must not search again while its session checks in.
			cur.State = StateDone
			return cur, nil
		}
		free(cur, "the partner no longer holds this match", now)
		freed = true
		return cur, nil
	})
	if err != nil {
		// Announcing the offer now would reopen it to the swarm while this
		// node still holds it matched.
		s.log.Error("settling match; will re-check", "booking", sent.ID, "err", err)
		return
	}
	if (freed || adopted) && nb != nil {
		s.announce(ctx, *nb) // open again, or withdrawn again
		s.wake()
	}
	if pid, err := peer.Decode(sent.Partner); orphaned && err == nil {
		if err := s.sendCancel(ctx, pid, sent.ID, sent.PartnerBooking, why); err != nil {
			s.log.Debug("cancelling a match we no longer hold; the partner's re-check will", "peer", pid, "err", err)
		}
	}
}

// free releases a matched booking: back to searching while its time is
// still ahead, else cancelled.
func free(b *Booking, note string, now time.Time) {
	b.Partner, b.PartnerName, b.PartnerBooking, b.Confirmed, b.Note = "", "", "", false, note
	b.PartnerAddrs, b.CancelUnsent = nil, false
	switch {
	case b.Kind == KindNow:
		b.State, b.Start = StateSearching, now.Truncate(time.Second)
	case now.Before(b.Start):
		b.State = StateSearching
	default:
		b.State = StateCancelled
	}
}

// reconcileAll re-confirms unconfirmed matches with connected partners,
// and when full all matches, dialling partners that are not connected at
// the addresses kept with the booking. It also re-checks matches whose
// last re-check got no answer, and re-sends Cancels the partner has not
// acknowledged yet, each when its retry is due (retry).
func (s *Service) reconcileAll(ctx context.Context, full bool) {
	type check struct{ all, dial bool }
	peers := map[peer.ID]check{}
	now := s.now()
	s.mu.Lock()
	for id, r := range s.recheckRetries {
		if b, ok := s.bookings[id]; !ok || b.State != StateMatched || b.Partner != r.partner {
			delete(s.recheckRetries, id)
		}
	}
	for _, b := range s.bookings {
		if b.State != StateMatched {
			continue
		}
		id, err := peer.Decode(b.Partner)
		if err != nil {
			continue
		}
		c := peers[id]
		r, failed := s.recheckRetries[b.ID]
		switch {
		case full:
			c = check{all: true, dial: true}
		case failed && r.due(now):
			// Its last re-check got no answer: again now, dialling if
			// need be, whether confirmed or not.
			s.recheckRetries[b.ID] = r.next(now, s.connectedTo(id))
			c = check{all: true, dial: true}
		case failed || b.Confirmed:
			continue
		case !s.connectedTo(id):
			// Unconfirmed (its Confirm or the answer was lost) and the
			// partner is not connected: dial it now, and on a retry
			// until answered, not only at the next full re-check.
			s.recheckRetries[b.ID] = retry{partner: b.Partner}.next(now, false)
			c.dial = true
		}
		peers[id] = c
	}
	s.mu.Unlock()
	for p, c := range peers {
		if c.dial || s.connectedTo(p) {
			s.reconcile(ctx, p, c.all)
		}
	}
	s.resendCancels(ctx, now, false, "")
}

// recheckAll re-confirms every match and re-sends every unacknowledged
// Cancel once, at start: while the node was down a partner may have
// cancelled, or a Cancel of ours may never have arrived. Partners are
// dialled at the addresses kept with the booking.
func (s *Service) recheckAll(ctx context.Context) {
	peers := map[peer.ID]bool{}
	s.mu.Lock()
	for _, b := range s.bookings {
		if b.State == StateMatched || b.CancelUnsent {
			if id, err := peer.Decode(b.Partner); err == nil {
				s.rememberAddrsLocked(id, b.PartnerAddrs)
				if b.State == StateMatched {
					peers[id] = true
				}
			}
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for p := range peers {
		wg.Go(func() { s.reconcile(ctx, p, true) })
	}
	wg.Wait()
	s.resendCancels(ctx, s.now(), true, "")
	s.at("rechecked")
}

// retry paces the re-sending of one message the partner has not answered
// or acknowledged: a Cancel (cancelRetries) or the Confirm of a re-check
// (recheckRetries). The delay starts at 1 s and doubles to 30 s while the
// partner is not connected (each try may cost a dial); while it is
// connected, a try costs a stream, and the delay stays at most
// connectedRetry, so a partner that was only slow to answer (loaded) or
// could not store the change learns it within seconds.
type retry struct {
	at      time.Time // the next try is due
	delay   time.Duration
	partner string // for a re-check: the partner the match was with
}

// connectedRetry bounds the delay of a retry while the partner is
// connected.
const connectedRetry = 2 * time.Second

// firstRetry is the retry of a message sent (and failed) at now.
func firstRetry(now time.Time) retry { return retry{at: now.Add(time.Second), delay: time.Second} }

// due reports whether the next try is due at now. One more than a delay
// ahead was set before the clock went back: due.
func (r retry) due(now time.Time) bool {
	return !now.Before(r.at) || r.at.Sub(now) > r.delay
}

// next is the retry after a try at now.
func (r retry) next(now time.Time, connected bool) retry {
	r.delay = min(max(2*r.delay, time.Second), 30*time.Second)
	if connected {
		r.delay = min(r.delay, connectedRetry)
	}
	r.at = now.Add(r.delay)
	return r
}

// resendCancels re-sends the Cancels whose partner has not acknowledged
// them (only those to partner, if set), each on its own retry (all at
// once when all is set), until acknowledged or the booked time is over.
func (s *Service) resendCancels(ctx context.Context, now time.Time, all bool, partner string) {
	type notice struct {
		b       Booking
		partner peer.ID
	}
	var due []notice
	var over []string
	s.mu.Lock()
	for id, b := range s.bookings {
		if !b.CancelUnsent {
			delete(s.cancelRetries, id)
			continue
		}
		if partner != "" && b.Partner != partner {
			continue
		}
		if now.After(b.End()) {
			over = append(over, id)
			continue
		}
		pid, err := peer.Decode(b.Partner)
		if err != nil {
			continue
		}
		r, ok := s.cancelRetries[id]
		if ok && !all && !r.due(now) {
			continue
		}
		s.cancelRetries[id] = r.next(now, s.connectedTo(pid))
		due = append(due, notice{*b, pid})
	}
	s.mu.Unlock()
	for _, id := range over {
		_, err := s.update(id, func(b *Booking) (*Booking, error) {
			if b == nil || !b.CancelUnsent {
				return nil, nil
			}
			b.CancelUnsent = false // nothing left to free
			return b, nil
		})
		if err != nil {
			s.log.Error("dropping an expired cancel", "booking", id, "err", err)
		}
	}
	for _, n := range due {
		if err := s.sendCancel(ctx, n.partner, n.b.ID, n.b.PartnerBooking, n.b.Note); err == nil {
			s.cancelDelivered(n.b.ID)
		}
	}
}

// cancelDelivered clears a booking's unsent-Cancel mark; it returns the
// booking as stored, or nil if nothing changed.
func (s *Service) cancelDelivered(id string) *Booking {
	nb, err := s.update(id, func(b *Booking) (*Booking, error) {
		delete(s.cancelRetries, id)
		if b == nil || !b.CancelUnsent {
			return nil, nil
		}
		b.CancelUnsent = false
		return b, nil
	})
	if err != nil {
		// Sent again later; the partner answers a repeat as before.
		s.log.Error("marking cancel delivered", "booking", id, "err", err)
	}
	return nb
}

// partnerAddrs lists where partner can be reached: what the peerstore
// knows (identify fills it for a connected peer) and the addresses its
// offer carried, public first, at most maxOfferAddrs.
func (s *Service) partnerAddrs(partner peer.ID, fromOffer []multiaddr.Multiaddr) []string {
	seen := map[string]bool{}
	var all []multiaddr.Multiaddr
	for _, a := range append(s.h.Peerstore().Addrs(partner), fromOffer...) {
		if !seen[string(a.Bytes())] {
			seen[string(a.Bytes())] = true
			all = append(all, a)
		}
	}
	var out []string
	for _, a := range dialOrder(all) {
		if len(out) == maxOfferAddrs {
			break
		}
		out = append(out, a.String())
	}
	return out
}

// rememberAddrsLocked puts a partner's kept addresses in the peerstore.
func (s *Service) rememberAddrsLocked(id peer.ID, addrs []string) {
	var mas []multiaddr.Multiaddr
	for _, a := range addrs {
		if m, err := multiaddr.NewMultiaddr(a); err == nil {
			mas = append(mas, m)
		}
	}
	if len(mas) > 0 {
		s.h.Peerstore().AddAddrs(id, mas, time.Hour)
	}
}

// reconcile re-sends Confirm for matches with p; the partner answers from
// its own stored state, so both sides converge after crashes or lost
// messages.
func (s *Service) reconcile(ctx context.Context, p peer.ID, all bool) {
	var todo []Booking
	s.mu.Lock()
	name := s.name
	for _, b := range s.bookings {
		if b.State == StateMatched && b.Partner == p.String() && (all || !b.Confirmed) {
			todo = append(todo, *b)
		}
	}
	s.mu.Unlock()
	for _, b := range todo {
		reply, err := s.roundTrip(ctx, p, confirmFor(b, name))
		s.mu.Lock()
		if err != nil {
			// No answer (the partner is offline, loaded, or elsewhere
			// than we know): the match is re-checked again on a retry,
			// not only at the next full re-check (reconcileAll).
			if _, ok := s.recheckRetries[b.ID]; !ok {
				s.recheckRetries[b.ID] = retry{partner: b.Partner}.next(s.now(), s.connectedTo(p))
			}
		} else {
			delete(s.recheckRetries, b.ID)
		}
		s.mu.Unlock()
		if err != nil {
			continue
		}
		s.settle(ctx, b, reply)
	}
}

// roundTrip sends one message to a partner of a match on a new stream and
// reads the answer. When the partner cannot be reached at any address we
// know, and the finder can locate peers (PeerLocator), it asks where the
// partner is now and tries once more there: both sides of a match may
// have been offline at overlapping times and come back on new addresses,
// and then neither learns the other's from a re-check, so a Cancel would
// be re-sent to a stale address until the booked time is over (a
// one-sided booking). Callers pace their retries, so a lookup is made at
// most once per retry.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, m *pb.MatchMessage) (*pb.MatchMessage, error) {
	reply, err := s.roundTripOnce(ctx, p, m)
	if err == nil || s.connectedTo(p) || !s.locate(ctx, p) {
		return reply, err
	}
	return s.roundTripOnce(ctx, p, m)
}

// locate asks the finder where p is now and keeps what it finds in the
// peerstore; it reports whether that gave an address we did not have.
func (s *Service) locate(ctx context.Context, p peer.ID) bool {
	loc, ok := s.cfg.Finder.(PeerLocator)
	if !ok {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	ai, err := loc.FindPeer(lctx, p)
	if err != nil || ai.ID != p {
		s.log.Debug("locating a partner", "peer", p, "err", err)
		return false
	}
	known := map[string]bool{}
	for _, a := range s.h.Peerstore().Addrs(p) {
		known[string(a.Bytes())] = true
	}
	fresh := false
	for _, a := range ai.Addrs {
		fresh = fresh || !known[string(a.Bytes())]
	}
	if fresh {
		s.h.Peerstore().AddAddrs(p, ai.Addrs, time.Hour)
	}
	return fresh
}

// roundTripOnce sends one message on a new stream and reads the answer.
func (s *Service) roundTripOnce(ctx context.Context, p peer.ID, m *pb.MatchMessage) (*pb.MatchMessage, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(overAnyConn(sctx), p, MatchProtocol)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	if err := writeMsg(st, m); err != nil {
		return nil, err
	}
	return readMsg(bufio.NewReader(st))
}

func (s *Service) sendCancel(ctx context.Context, p peer.ID, from, to, reason string) error {
	return s.sendCancelMsg(ctx, p, &pb.Cancel{FromBooking: from, ToBooking: to, Reason: reason})
}

// sendRelease gives back the hold p granted our booking from on its
// booking to: a Cancel marked as a release, so p does not take our
// booking for cancelled (it still searches, and may propose to p again).
func (s *Service) sendRelease(ctx context.Context, p peer.ID, from, to string) error {
	return s.sendCancelMsg(ctx, p, &pb.Cancel{FromBooking: from, ToBooking: to, Release: true})
}

func (s *Service) sendCancelMsg(ctx context.Context, p peer.ID, c *pb.Cancel) error {
	reply, err := s.roundTrip(ctx, p, &pb.MatchMessage{Body: &pb.MatchMessage_Cancel{Cancel: c}})
	if err != nil {
		return err
	}
	if reply.GetReject().GetReason() == reasonNoMatch {
		// The partner holds no match with us: an earlier copy was applied
		// (its acknowledgement lost), or it had freed the booking anyway.
		return nil
	}
	if reply.GetConfirmed() == nil {
		// The partner could not store it (or answers something else):
		// not delivered, so it is sent again.
		return fmt.Errorf("partner did not acknowledge the cancel: %q", reply.GetReject().GetReason())
	}
	return nil
}

// handleMatchStream serves the receiving side of the negotiation.
func (s *Service) handleMatchStream(st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
	// Real time, a socket bound (clock.go): the hold itself ends on the
	// node's clock (tryHold), and a Confirm this stream no longer carries
	// comes again on a new one with the proposer's re-check.
	st.SetDeadline(time.Now().Add(s.cfg.HoldTimeout + s.cfg.StreamTimeout))
	r := bufio.NewReader(st)
	m, err := readMsg(r)
	if err != nil {
		s.log.Debug("bad match message", "peer", remote, "err", err)
		st.Reset()
		return
	}
	switch {
	case m.GetPropose() != nil:
		s.onPropose(st, r, remote, m.GetPropose())
	case m.GetConfirm() != nil:
		writeMsg(st, s.onConfirm(remote, m.GetConfirm(), false))
	case m.GetCancel() != nil:
		switch err := s.onCancel(remote, m.GetCancel()); {
		case errors.Is(err, errNoMatch):
			writeMsg(st, rejectMsg(reasonNoMatch))
		case err != nil:
			writeMsg(st, rejectMsg(reasonStorage))
		default:
			writeMsg(st, confirmedMsg())
		}
	default:
		writeMsg(st, rejectMsg("unexpected message"))
	}
}

func (s *Service) onPropose(st network.Stream, r *bufio.Reader, remote peer.ID, p *pb.Propose) {
	reason := s.tryHold(remote, p)
	if reason != "" {
		msg := rejectMsg(reason)
		if reason == reasonBusy {
			msg.GetReject().RetryMs = uint32(s.busyRetry(p.GetToBooking(), remote).Milliseconds())
		}
		writeMsg(st, msg)
		return
	}
	s.at("acceptor-held")
	err := writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: s.Name()}}})
	s.acceptWritten(p.GetToBooking(), remote, err == nil)
	if err != nil {
		return
	}
	m, err := readMsg(r)
	if err != nil || m.GetConfirm() == nil {
		return // the hold times out, or a reconcile Confirm settles it
	}
	reply := s.onConfirm(remote, m.GetConfirm(), true)
	s.at("acceptor-committed")
	writeMsg(st, reply)
}

// tryHold checks a proposal against our booking and holds the booking for
// the proposer; it returns a reject reason or "".
func (s *Service) tryHold(remote peer.ID, p *pb.Propose) string {
	now := s.now()
	start := time.Unix(p.GetStartUnix(), 0).UTC()
	offer, err := s.checkProposalOffer(remote, p, now)
	if err != nil {
		s.log.Debug("refusing proposal", "peer", remote, "err", err)
		return reasonMismatch
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acceptablePeerLocked(remote, now) || s.shunnedLocked(remote, now) || s.cancelledLocked(remote, p.GetFromBooking(), now) {
		return reasonUnavailable
	}
	b, ok := s.bookings[p.GetToBooking()]
	if !ok || b.State != StateSearching || !s.scopeAllowsLocked(b, remote, now) ||
		(b.With != "" && b.With != remote.String()) {
		// A private booking answers anyone but its invited peer as if it
		// did not exist: its ID tells a stranger nothing.
		return reasonUnavailable
	}
	if (s.busyLocked(b.ID, now) && !s.planPartnerJoinsLocked(b.ID, remote, p.GetFromBooking(), now)) || s.peerHoldsOtherLocked(remote, b.ID) {
		if s.inflight[b.ID] {
			// Our own round is under way: it makes no new proposal
			// once this one is settled or past its patience, so the
			// proposer, back after its busy backoff, finds the
			// booking free (answers.go).
			s.askedWhileBusy[b.ID] = true
		}
		return reasonBusy
	}
	if _, again := s.holdOfLocked(b.ID, remote); again {
		// A proposer that holds the booking already confirms or lets it
		// run out; proposing again would only renew its hold.
		return reasonBusy
	}
	if !s.compatible(b, offer, remote) {
		return reasonMismatch
	}
	if len(p.GetFromBooking()) == 0 || len(p.GetFromBooking()) > maxIDLen || len(p.GetName()) > MaxNameLen {
		return reasonMismatch
	}
	if kindFromPB(p.GetKind()) != b.Kind || p.GetKind() == pb.Kind_KIND_UNSPECIFIED || int(p.GetDurationMin()) != b.DurationMin ||
		!compatibleActivity(b.Activity, activityFromPB(p.GetActivity())) || p.GetQuiet() != b.Quiet ||
		(b.With != "" && b.With != remote.String()) {
		return reasonMismatch
	}
	// The time the session takes on our clock: a scheduled one its slot;
	// a "now" one starts at once, whatever the proposer's clock says.
	from := start
	switch b.Kind {
	case KindScheduled:
		if !start.Equal(b.Start) {
			return reasonMismatch
		}
	case KindNow:
		// The proposer took start from its own clock, which may be up to
		// MaxClockSkew off ours; both sides keep that start, and the
		// session runs on the proposer's clock (docs/protocol.md, Schedule).
		if start.Before(now.Add(-peerSlack)) || start.After(now.Add(peerSlack)) {
			return reasonMismatch
		}
		from = now
	}
	if s.overlappingLocked(from, from.Add(time.Duration(b.DurationMin)*time.Minute), b.ID, now) != nil {
		return reasonUnavailable
	}
	w := s.addHoldLocked(b.ID, hold{peer: remote, peerBooking: p.GetFromBooking(), peerName: p.GetName(), start: start,
		since: now, until: now.Add(s.cfg.HoldTimeout)})
	if w > 0 {
		// The booking may propose itself again when the window ends,
		// not at the next tick.
		s.wakeAfter(w)
	}
	if s.cfg.OnHold != nil {
		s.cfg.OnHold()
	}
	if s.cfg.OnNote != nil {
		s.note(b.ID, remote, "held", fmt.Sprintf("exclusive %v", w))
	}
	return ""
}

// onConfirm commits a held match, or answers from the stored state when the
// match is already settled (a reconcile). onStream: the Confirm came on the
// stream of its Propose, so the time since the hold was granted is a
// sample of the Accept->Confirm delay (holds.go); one re-sent on a new
// stream after a lost message is not.
func (s *Service) onConfirm(remote peer.ID, c *pb.Confirm, onStream bool) *pb.MatchMessage {
	now := s.now()
	reply, committing := rejectMsg(reasonNoMatch), false
	var heldSince time.Time
	nb, err := s.update(c.GetToBooking(), func(b *Booking) (*Booking, error) {
		if b == nil {
			return nil, nil
		}
		if b.State == StateMatched && b.Partner == remote.String() && b.PartnerBooking == c.GetFromBooking() {
			reply = confirmedMsg()
			if b.Confirmed {
				return nil, nil
			}
			b.Confirmed = true
			return b, nil
		}
		if b.State == StateDone && now.Before(b.End()) && b.Partner == remote.String() && b.PartnerBooking == c.GetFromBooking() {
			// The match happened and its session ended early (Finish): it
			// stands. "No such match" would free the partner's booking to
			// search again in the middle of the session that just ended,
			// racing its own Finish. (Past the end, "no such match" makes
			// the partner end its booking too: settle's peerSlack.)
			reply = confirmedMsg()
			return nil, nil
		}
		if b.State == StateCancelled && b.Partner == remote.String() && b.PartnerBooking == c.GetFromBooking() {
			// Our user cancelled this match and the partner's Confirm
			// crossed our Cancel: answer with the Cancel itself, so the
			// partner learns it was cancelled and why, not just that the
			// match is gone. (Older nodes treat any answer but Confirmed
			// as "no such match".)
			reply = &pb.MatchMessage{Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{
				FromBooking: b.ID, ToBooking: b.PartnerBooking, Reason: b.Note,
			}}}
			return nil, nil
		}
		h, held := s.holdOfLocked(b.ID, remote)
		if !held || h.peerBooking != c.GetFromBooking() || now.After(h.until) || b.State != StateSearching {
			return nil, nil
		}
		if s.inflight[b.ID] {
			// Our own proposal for this booking is under way (holds after
			// the exclusive round trip do not stop it); it may commit any
			// moment. The proposer frees its side and searches again.
			return nil, nil
		}
		delete(s.holds, b.ID) // the other holders' Confirms get "no such match"
		heldSince = h.since
		b.State, b.Partner, b.PartnerBooking, b.Start = StateMatched, remote.String(), h.peerBooking, h.start
		b.PartnerName = h.peerName
		if c.GetName() != "" && len(c.GetName()) <= MaxNameLen {
			b.PartnerName = c.GetName()
		}
		b.Confirmed, b.Note = true, ""
		var fromOffer []multiaddr.Multiaddr
		if e := s.board.get(remote, h.peerBooking); e != nil {
			fromOffer = offerAddrs(e.offer)
		}
		b.PartnerAddrs = s.partnerAddrs(remote, fromOffer)
		reply, committing = confirmedMsg(), true
		return b, nil
	})
	switch {
	case err != nil && committing:
		s.log.Error("saving match", "err", err)
		return rejectMsg(reasonStorage)
	case err != nil:
		// The match stands on disk either way; only the mark is
		// missing, and the next Confirm retries it.
		s.log.Error("marking match confirmed", "booking", c.GetToBooking(), "err", err)
	case committing:
		s.mu.Lock()
		if onStream {
			s.noteConfirmDelayLocked(remote, elapsedOrZero(now, heldSince))
		}
		delete(s.graceSpent, remote) // it came after all
		s.mu.Unlock()
		s.goRun(func() { s.announce(s.ctx, *nb) })
	}
	return reply
}

// elapsedOrZero is now - t, or 0 when the clock was set back past t.
func elapsedOrZero(now, t time.Time) time.Duration { return max(now.Sub(t), 0) }

// errNoMatch: a Cancel names no match we hold with its sender (a third
// party's, or a repeat of one already applied).
var errNoMatch = errors.New("no such match")

// onCancel frees our booking when its partner cancels. errNoMatch means
// there was nothing of the sender's to cancel (answered "no such match",
// never Confirmed: a third party must not learn that it can cancel, nor
// be told it did); any other error means the change could not be stored:
// the Cancel is not acknowledged, and the partner sends it again.
func (s *Service) onCancel(remote peer.ID, c *pb.Cancel) error {
	now := s.now()
	nb, err := s.update(c.GetToBooking(), func(b *Booking) (*Booking, error) {
		h, held := s.holdOfLocked(c.GetToBooking(), remote)
		s.dropHoldLocked(c.GetToBooking(), remote)
		if held && b != nil && b.State == StateSearching {
			// The proposer released its hold: free, but not for nothing
			// (holds.go).
			s.releaseHoldLocked(b.ID, h, now)
		}
		matched := b != nil && b.State == StateMatched && b.Partner == remote.String() && b.PartnerBooking == c.GetFromBooking()
		// A release gives back a hold, not the booking: the proposer's
		// booking still searches and may propose again. Remembered as
		// cancelled, it was refused here for 10 minutes, and in a storm
		// the last two bookings could be exactly such a pair.
		if matched || (b != nil && held && h.peerBooking == c.GetFromBooking() && !c.GetRelease()) {
			s.rememberCancelledLocked(remote, c.GetFromBooking(), now)
		}
		if !matched {
			return nil, errNoMatch
		}
		note := "partner cancelled"
		if r := c.GetReason(); r != "" && len(r) <= MaxGoalLen {
			note += ": " + r
		}
		free(b, note, now)
		return b, nil
	})
	if errors.Is(err, errNoMatch) {
		return err
	}
	if err != nil {
		s.log.Error("freeing booking", "booking", c.GetToBooking(), "err", err)
		return err
	}
	s.goRun(func() { s.announce(s.ctx, *nb) })
	s.wake()
	return nil
}
