package matchmaking

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Protocol IDs.
const (
	MatchProtocol = "/tandem/match/1.0.0"
	BoardProtocol = "/tandem/board/1.0.0"
	// MaxMatchMessage bounds one negotiation frame.
	MaxMatchMessage = 4 << 10
)

// Reject reasons on the wire.
const (
	reasonBusy        = "busy"
	reasonUnavailable = "not available"
	reasonMismatch    = "not compatible"
	reasonNoMatch     = "no such match"
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
	return m, nil
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

// matchLoop proposes to compatible offers whenever something changes, and
// re-confirms matches that are not settled yet.
func (s *Service) matchLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.MatchInterval)
	defer t.Stop()
	lastFull := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
			s.reconcileAll(ctx, time.Since(lastFull) > 2*time.Minute)
			if time.Since(lastFull) > 2*time.Minute {
				lastFull = time.Now()
			}
		}
		s.matchOnce(ctx)
	}
}

type attempt struct {
	booking Booking
	cands   []*boardEntry
}

// matchOnce tries each searching booking against the board. To keep two
// nodes from proposing to each other at once, only the lower peer ID of a
// compatible pair proposes; the higher one waits to be asked.
func (s *Service) matchOnce(ctx context.Context) {
	now := s.now()
	entries := s.board.open(now)
	self := s.h.ID()
	var work []attempt
	s.mu.Lock()
	for _, b := range s.bookings {
		if b.State != StateSearching || s.inflight[b.ID] || s.heldLocked(b.ID, now) {
			continue
		}
		var favs, others []*boardEntry
		for _, e := range entries {
			if e.owner <= self || !s.compatible(b, e.offer, e.owner) || !s.acceptablePeerLocked(e.owner, now) {
				continue
			}
			if until, ok := s.backoff[boardKey{e.owner, e.offer.GetBookingId()}]; ok && now.Before(until) {
				continue
			}
			if s.people[e.owner].Favourite {
				favs = append(favs, e)
			} else {
				others = append(others, e)
			}
		}
		rand.Shuffle(len(favs), func(i, j int) { favs[i], favs[j] = favs[j], favs[i] })
		rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		if c := append(favs, others...); len(c) > 0 {
			work = append(work, attempt{*b, c})
		}
	}
	s.mu.Unlock()
	sort.Slice(work, func(i, j int) bool { return work[i].booking.CreatedAt.Before(work[j].booking.CreatedAt) })
	for _, a := range work {
		for i, e := range a.cands {
			if i == 3 || ctx.Err() != nil {
				break // the next round tries others
			}
			if s.propose(ctx, a.booking.ID, e) {
				break
			}
		}
	}
}

func (s *Service) heldLocked(id string, now time.Time) bool {
	h, ok := s.holds[id]
	if ok && now.After(h.until) {
		delete(s.holds, id)
		return false
	}
	return ok
}

func (s *Service) setBackoff(k boardKey, d time.Duration) {
	s.mu.Lock()
	s.backoff[k] = s.now().Add(d)
	s.mu.Unlock()
}

// propose runs the proposer's side: Propose -> Accept -> persist -> Confirm
// -> Confirmed. It reports whether the booking got matched.
func (s *Service) propose(ctx context.Context, bookingID string, e *boardEntry) bool {
	now := s.now()
	key := boardKey{e.owner, e.offer.GetBookingId()}
	s.mu.Lock()
	b, ok := s.bookings[bookingID]
	if !ok || b.State != StateSearching || s.inflight[b.ID] || s.heldLocked(b.ID, now) {
		s.mu.Unlock()
		return false
	}
	start := b.Start
	if b.Kind == KindNow {
		start = now.Truncate(time.Second)
	}
	if s.overlappingLocked(start, start.Add(time.Duration(b.DurationMin)*time.Minute), b.ID, now) != nil {
		s.mu.Unlock()
		return false
	}
	s.inflight[b.ID] = true
	bk := *b
	name := s.name
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, bookingID)
		s.mu.Unlock()
	}()

	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(sctx, e.owner, MatchProtocol)
	if err != nil {
		s.setBackoff(key, 5*time.Second)
		return false
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(2 * s.cfg.StreamTimeout))
	r := bufio.NewReader(st)
	err = writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: bk.ID, ToBooking: key.booking, StartUnix: start.Unix(),
		DurationMin: uint32(bk.DurationMin), Kind: kindToPB(bk.Kind),
		Activity: activityToPB(bk.Activity), Quiet: bk.Quiet, Name: name,
	}}})
	if err != nil {
		s.setBackoff(key, 5*time.Second)
		return false
	}
	reply, err := readMsg(r)
	if err != nil {
		s.setBackoff(key, 5*time.Second)
		return false
	}
	acc := reply.GetAccept()
	if acc == nil {
		// Busy peers are usually settling another proposal: retry soon.
		d := time.Minute
		if reply.GetReject().GetReason() == reasonBusy {
			d = time.Duration(100+rand.IntN(400)) * time.Millisecond
		}
		s.setBackoff(key, d)
		return false
	}
	partnerName := acc.GetName()
	if partnerName == "" {
		partnerName = e.offer.GetName()
	}
	// Persist our side before confirming: if we crash now, the partner's
	// hold times out, or our reconcile settles it either way.
	s.mu.Lock()
	cur, ok := s.bookings[bookingID]
	if !ok || cur.State != StateSearching {
		s.mu.Unlock()
		return false // cancelled meanwhile: no Confirm, the hold expires
	}
	nb := *cur
	nb.State, nb.Partner, nb.PartnerName, nb.PartnerBooking = StateMatched, e.owner.String(), partnerName, key.booking
	nb.Start, nb.Confirmed, nb.Note = start, false, ""
	if err := s.saveLocked(&nb); err != nil {
		s.mu.Unlock()
		s.log.Error("saving match", "err", err)
		return false
	}
	s.mu.Unlock()
	s.at("proposer-persisted")
	go s.announce(ctx, nb)
	err = writeMsg(st, confirmFor(nb, name))
	if err == nil {
		reply, err = readMsg(r)
	}
	if err != nil {
		s.log.Debug("match not confirmed yet; will retry", "peer", e.owner, "err", err)
		return true
	}
	s.settle(ctx, nb, reply)
	return true
}

func confirmFor(b Booking, name string) *pb.MatchMessage {
	return &pb.MatchMessage{Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{
		FromBooking: b.ID, ToBooking: b.PartnerBooking, StartUnix: b.Start.Unix(),
		DurationMin: uint32(b.DurationMin), Name: name,
	}}}
}

// settle applies the partner's answer to a Confirm for our matched booking.
func (s *Service) settle(ctx context.Context, sent Booking, reply *pb.MatchMessage) {
	s.mu.Lock()
	cur, ok := s.bookings[sent.ID]
	if !ok || cur.State != StateMatched || cur.Partner != sent.Partner || cur.PartnerBooking != sent.PartnerBooking {
		s.mu.Unlock()
		return
	}
	nb := *cur
	if reply.GetConfirmed() != nil {
		if !nb.Confirmed {
			nb.Confirmed = true
			s.saveLocked(&nb)
		}
		s.mu.Unlock()
		return
	}
	s.revertLocked(&nb, "the partner no longer holds this match", s.now())
	s.mu.Unlock()
	s.announce(ctx, nb)
	s.wake()
}

// revertLocked frees a matched booking: back to searching while its time
// is still ahead, else cancelled.
func (s *Service) revertLocked(b *Booking, note string, now time.Time) {
	b.Partner, b.PartnerName, b.PartnerBooking, b.Confirmed, b.Note = "", "", "", false, note
	switch {
	case b.Kind == KindNow:
		b.State, b.Start = StateSearching, now.Truncate(time.Second)
	case now.Before(b.Start):
		b.State = StateSearching
	default:
		b.State = StateCancelled
	}
	s.saveLocked(b)
}

// reconcileAll re-confirms unconfirmed matches, and all matches when full.
func (s *Service) reconcileAll(ctx context.Context, full bool) {
	peers := map[peer.ID]bool{}
	s.mu.Lock()
	for _, b := range s.bookings {
		if b.State == StateMatched && (full || !b.Confirmed) {
			if id, err := peer.Decode(b.Partner); err == nil {
				peers[id] = true
			}
		}
	}
	s.mu.Unlock()
	for p := range peers {
		if s.h.Network().Connectedness(p) == network.Connected {
			s.reconcile(ctx, p, full)
		}
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
		if err != nil {
			continue
		}
		s.settle(ctx, b, reply)
	}
}

// roundTrip sends one message on a new stream and reads the answer.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, m *pb.MatchMessage) (*pb.MatchMessage, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(sctx, p, MatchProtocol)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout))
	if err := writeMsg(st, m); err != nil {
		return nil, err
	}
	return readMsg(bufio.NewReader(st))
}

func (s *Service) sendCancel(ctx context.Context, p peer.ID, from, to, reason string) error {
	_, err := s.roundTrip(ctx, p, &pb.MatchMessage{Body: &pb.MatchMessage_Cancel{Cancel: &pb.Cancel{
		FromBooking: from, ToBooking: to, Reason: reason,
	}}})
	return err
}

// handleMatchStream serves the receiving side of the negotiation.
func (s *Service) handleMatchStream(st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
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
		writeMsg(st, s.onConfirm(remote, m.GetConfirm()))
	case m.GetCancel() != nil:
		s.onCancel(remote, m.GetCancel())
		writeMsg(st, confirmedMsg())
	default:
		writeMsg(st, rejectMsg("unexpected message"))
	}
}

func (s *Service) onPropose(st network.Stream, r *bufio.Reader, remote peer.ID, p *pb.Propose) {
	reason := s.tryHold(remote, p)
	if reason != "" {
		writeMsg(st, rejectMsg(reason))
		return
	}
	s.at("acceptor-held")
	if err := writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: s.Name()}}}); err != nil {
		return // the hold times out
	}
	m, err := readMsg(r)
	if err != nil || m.GetConfirm() == nil {
		return // the hold times out, or a reconcile Confirm settles it
	}
	reply := s.onConfirm(remote, m.GetConfirm())
	s.at("acceptor-committed")
	writeMsg(st, reply)
}

// tryHold checks a proposal against our booking and holds the booking for
// the proposer; it returns a reject reason or "".
func (s *Service) tryHold(remote peer.ID, p *pb.Propose) string {
	now := s.now()
	start := time.Unix(p.GetStartUnix(), 0).UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acceptablePeerLocked(remote, now) {
		return reasonUnavailable
	}
	b, ok := s.bookings[p.GetToBooking()]
	if !ok || b.State != StateSearching {
		return reasonUnavailable
	}
	if s.inflight[b.ID] || s.heldLocked(b.ID, now) {
		return reasonBusy
	}
	if len(p.GetFromBooking()) == 0 || len(p.GetFromBooking()) > maxIDLen || len(p.GetName()) > MaxNameLen {
		return reasonMismatch
	}
	if kindFromPB(p.GetKind()) != b.Kind || p.GetKind() == pb.Kind_KIND_UNSPECIFIED || int(p.GetDurationMin()) != b.DurationMin ||
		!compatibleActivity(b.Activity, activityFromPB(p.GetActivity())) || p.GetQuiet() != b.Quiet ||
		(b.With != "" && b.With != remote.String()) {
		return reasonMismatch
	}
	switch b.Kind {
	case KindScheduled:
		if !start.Equal(b.Start) {
			return reasonMismatch
		}
	case KindNow:
		if start.Before(now.Add(-clockSkew)) || start.After(now.Add(clockSkew)) {
			return reasonMismatch
		}
	}
	if s.overlappingLocked(start, start.Add(time.Duration(b.DurationMin)*time.Minute), b.ID, now) != nil {
		return reasonUnavailable
	}
	s.holds[b.ID] = hold{peer: remote, peerBooking: p.GetFromBooking(), peerName: p.GetName(), start: start, until: now.Add(s.cfg.HoldTimeout)}
	return ""
}

// onConfirm commits a held match, or answers from the stored state when the
// match is already settled (a reconcile).
func (s *Service) onConfirm(remote peer.ID, c *pb.Confirm) *pb.MatchMessage {
	now := s.now()
	s.mu.Lock()
	b, ok := s.bookings[c.GetToBooking()]
	if !ok {
		s.mu.Unlock()
		return rejectMsg(reasonNoMatch)
	}
	if b.State == StateMatched && b.Partner == remote.String() && b.PartnerBooking == c.GetFromBooking() {
		if !b.Confirmed {
			nb := *b
			nb.Confirmed = true
			s.saveLocked(&nb)
		}
		s.mu.Unlock()
		return confirmedMsg()
	}
	h, held := s.holds[b.ID]
	if !held || h.peer != remote || h.peerBooking != c.GetFromBooking() || now.After(h.until) || b.State != StateSearching {
		s.mu.Unlock()
		return rejectMsg(reasonNoMatch)
	}
	delete(s.holds, b.ID)
	nb := *b
	nb.State, nb.Partner, nb.PartnerBooking, nb.Start = StateMatched, remote.String(), h.peerBooking, h.start
	nb.PartnerName = h.peerName
	if c.GetName() != "" && len(c.GetName()) <= MaxNameLen {
		nb.PartnerName = c.GetName()
	}
	nb.Confirmed, nb.Note = true, ""
	if err := s.saveLocked(&nb); err != nil {
		s.mu.Unlock()
		s.log.Error("saving match", "err", err)
		return rejectMsg("storage error")
	}
	s.mu.Unlock()
	go s.announce(context.Background(), nb)
	return confirmedMsg()
}

// onCancel frees our booking when its partner cancels.
func (s *Service) onCancel(remote peer.ID, c *pb.Cancel) {
	now := s.now()
	s.mu.Lock()
	b, ok := s.bookings[c.GetToBooking()]
	if h, held := s.holds[c.GetToBooking()]; held && h.peer == remote {
		delete(s.holds, c.GetToBooking())
	}
	if !ok || b.State != StateMatched || b.Partner != remote.String() || b.PartnerBooking != c.GetFromBooking() {
		s.mu.Unlock()
		return
	}
	nb := *b
	note := "partner cancelled"
	if r := c.GetReason(); r != "" && len(r) <= MaxGoalLen {
		note += ": " + r
	}
	s.revertLocked(&nb, note, now)
	s.mu.Unlock()
	go s.announce(context.Background(), nb)
	s.wake()
}
