package session

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"context"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
	"github.com/tandem-cowork/tandem/session/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

const maxChatLines = 500

// Session is one co-working session with one partner. Its methods are safe
// for concurrent use; they never wait for the network.
type Session struct {
	m          *Manager
	b          Booking
	log        *slog.Logger
	offerer    bool // the lower peer ID offers and dials
	relay      *media.Relay
	protectTag string

	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup // connector, links, closers
	wake    chan struct{}  // re-check whether a link is needed
	redial  chan struct{}  // the partner is reachable again: skip the backoff
	over    chan struct{}  // closed when the session is finished
	done    chan struct{}  // closed when everything is stopped

	// attachMu serialises AttachBrowser: the relay forwards the browser
	// bound last, so binding and keeping must happen in the same order.
	attachMu sync.Mutex
	// linkMu does the same for startLink and the partner's connection: two
	// signalling streams accepted at once must not leave the relay
	// forwarding a link that is not s.link.
	linkMu sync.Mutex

	mu             sync.Mutex
	closing        bool // teardown began: no new workers
	finished       bool
	phase          Phase
	link           *link
	browser        *webrtc.PeerConnection
	self, partner  Party
	partnerBooking string
	connected, met bool
	greeted        bool // a hello arrived since this Session began
	joinedAt       time.Time
	absentFrom     time.Time // the partner's lateness counts from here
	rematchOffered bool
	chat           []ChatLine
	selfEarly      bool      // we left before the end
	partnerEarly   bool      // the partner left before the end
	leaveBy        time.Time // after a leave, finish by then (real time)
	receipt        []byte    // ours, signed
	partnerReceipt []byte
	receiptAcked   bool
	record         *Record
	try            connTry         // connecting to the partner: what was tried
	peerICE        []PeerICEServer // the peer helpers the last connection attempt was given
	audioOnly      bool            // video paused for want of capacity was announced
	// The session clock (clock.go): clockOffset is added to our clock to
	// get the offerer's; clockKnown once measured (or restored).
	clockOffset  time.Duration
	clockKnown   bool
	clockSamples []clockSample
	probes       []int64   // sent_unix_ms of our unanswered clock probes
	lastProbe    time.Time // real time
}

func newSession(m *Manager, b Booking) (*Session, error) {
	relay, err := media.NewRelay(m.log.With("booking", b.ID))
	if err != nil {
		return nil, err
	}
	s := &Session{
		m: m, b: b, log: m.log.With("booking", b.ID, "partner", b.Partner),
		offerer: m.cfg.Host.ID() < b.Partner, relay: relay,
		protectTag: "tandem-session-" + b.ID,
		wake:       make(chan struct{}, 1), redial: make(chan struct{}, 1),
		over: make(chan struct{}), done: make(chan struct{}),
		self:           Party{Name: b.Name, Goal: b.Goal, Presence: PresenceHere},
		partner:        Party{Name: b.PartnerName, Presence: PresenceHere},
		partnerBooking: b.PartnerBooking,
	}
	// A node that restarts mid-session picks up where it was.
	live, ok, err := loadLive(m.cfg.DB, b)
	if err != nil {
		return nil, err
	}
	if ok {
		// A goal stored before the usertext rules would make the
		// partner refuse our hello.
		s.self.Goal = usertext.Goal.Clean(live.Goal)
		if !live.JoinedAt.IsZero() {
			s.met, s.joinedAt = true, live.JoinedAt
		}
		if !s.offerer && live.ClockOffsetMs != nil {
			s.clockOffset, s.clockKnown = time.Duration(*live.ClockOffsetMs)*time.Millisecond, true
		}
	}
	now := s.sessionNowLocked()
	s.phase = phaseAt(b, now)
	// Lateness counts from the start, or from when we came if we were
	// late ourselves: a node opening the session late does not call a
	// partner who waited for it a no-show.
	s.absentFrom = b.Start
	if now.After(b.Start) {
		s.absentFrom = now
	}
	s.ctx, s.cancel = context.WithCancel(m.ctx)
	// Keep the libp2p connection to the partner from being trimmed.
	m.cfg.Host.ConnManager().Protect(b.Partner, s.protectTag)
	return s, nil
}

// ID is the booking ID.
func (s *Session) ID() string { return s.b.ID }

// Partner is the partner's peer ID.
func (s *Session) Partner() peer.ID { return s.b.Partner }

// Booking is the booking the session was opened for, naming its match
// (partner and partner booking).
func (s *Session) Booking() Booking { return s.b }

// Done is closed when the session has ended and stopped (or its Manager
// closed).
func (s *Session) Done() <-chan struct{} { return s.done }

// Record returns the history record once the session has ended.
func (s *Session) Record() (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.record == nil {
		return Record{}, false
	}
	return *s.record, true
}

// State returns a snapshot of the session.
func (s *Session) State() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b
	b.PartnerBooking, b.PartnerName = s.partnerBooking, s.partner.Name
	snap := Snapshot{
		Booking: b, Phase: s.phase,
		// On our clock, which is what the user's countdown runs on.
		NextPhaseAt:   nextPhaseAt(s.b, s.sessionNowLocked()).Add(-s.clockOffset),
		ClockOffsetMs: s.clockOffset.Milliseconds(),
		Connected:     s.connected, Met: s.met, JoinedAt: s.joinedAt, Browser: s.browser != nil,
		Self: s.self, Partner: s.partner, Chat: slices.Clone(s.chat),
		Connect: s.connectReportLocked(s.m.cfg.Now()),
	}
	if s.finished {
		snap.NextPhaseAt = time.Time{}
	}
	return snap
}

// SetGoal replaces our goal; the partner sees it at once, or on reconnect.
func (s *Session) SetGoal(goal string) error {
	if err := checkText(usertext.Goal, goal); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrEnded
	}
	s.self.Goal = goal
	s.saveLiveLocked()
	s.sendLocked(&pb.Message{Body: &pb.Message_Goal{Goal: &pb.Goal{Text: goal}}})
	s.emitLocked(Event{Type: EventGoal, From: FromSelf, Text: goal})
	return nil
}

// Chat sends a chat line. It fails with ErrNotConnected while the partner
// is away: chat is not stored and forwarded.
func (s *Session) Chat(text string) error {
	if text == "" {
		return fmt.Errorf("%w: empty chat line", ErrInvalid)
	}
	if err := checkText(usertext.Chat, text); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrEnded
	}
	now := s.m.cfg.Now()
	err := s.sendLocked(&pb.Message{Body: &pb.Message_Chat{Chat: &pb.Chat{Text: text, SentAtUnixMs: now.UnixMilli()}}})
	if err != nil {
		return err
	}
	s.addChatLocked(ChatLine{From: FromSelf, Text: text, At: now})
	s.emitLocked(Event{Type: EventChat, From: FromSelf, Text: text})
	return nil
}

// SetPresence shows the partner whether we are here, away or have the
// camera off.
func (s *Session) SetPresence(p Presence) error {
	if p != PresenceHere && p != PresenceAway && p != PresenceCameraOff {
		return fmt.Errorf("%w: presence %q", ErrInvalid, p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrEnded
	}
	s.self.Presence = p
	s.sendLocked(&pb.Message{Body: &pb.Message_Presence{Presence: &pb.Presence{State: presenceToPB(p)}}})
	s.emitLocked(Event{Type: EventPresence, From: FromSelf, Presence: p})
	return nil
}

// CheckIn records our check-in, from the start on. It may be changed until
// the end; from the end on it is final, and our signed receipt goes out.
func (s *Session) CheckIn(o Outcome, note string) error {
	if !validOutcome(o) {
		return fmt.Errorf("%w: outcome %q", ErrInvalid, o)
	}
	if err := checkText(usertext.Note, note); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrEnded
	}
	if s.phase == PhaseUpcoming || s.phase == PhaseLobby || s.receipt != nil {
		return ErrWrongPhase
	}
	c := &CheckIn{Outcome: o, Note: note}
	s.self.CheckIn = c
	s.sendLocked(&pb.Message{Body: &pb.Message_CheckIn{CheckIn: checkInToPB(c)}})
	s.emitLocked(Event{Type: EventCheckIn, From: FromSelf, CheckIn: c})
	if s.phase == PhaseCheckin {
		now := s.m.cfg.Now()
		s.sendReceiptLocked(now)
		s.maybeFinishLocked(now)
	}
	return nil
}

// Leave ends the session early (or without a check-in). The reason
// reaches the partner at once; the session then waits briefly for the
// partner's receipt and ends.
func (s *Session) Leave(reason string) error {
	if err := checkText(usertext.Reason, reason); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrEnded
	}
	now := s.m.cfg.Now()
	s.self.Left, s.self.Reason = true, reason
	s.selfEarly = s.sessionNowLocked().Before(s.b.End())
	s.sendLocked(&pb.Message{Body: &pb.Message_Leave{Leave: &pb.Leave{Reason: reason}}})
	if s.receipt == nil {
		s.sendReceiptLocked(now)
	}
	s.leaveBy = time.Now().Add(s.m.cfg.LeaveLinger)
	s.maybeFinishLocked(now)
	return nil
}

// run is the session's own goroutine: it follows the schedule and, once
// the session is over or its Manager closes, stops everything.
func (s *Session) run() {
	defer s.m.wg.Done()
	s.mu.Lock()
	s.emitLocked(Event{Type: EventPhase, Phase: s.phase})
	s.mu.Unlock()
	if s.offerer {
		s.goWorker(s.connectLoop)
	}
	t := time.NewTicker(s.m.cfg.Tick)
	defer t.Stop()
	s.evaluate()
	for {
		select {
		case <-s.ctx.Done():
			s.teardown()
			return
		case <-s.over:
			s.teardown()
			return
		case <-t.C:
			s.evaluate()
		}
	}
}

// evaluate applies the schedule at the current time.
func (s *Session) evaluate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evaluateLocked()
}

// evaluateLocked applies the schedule at the current time of the session
// clock; what it records (receipts, when the session ended) is on ours.
func (s *Session) evaluateLocked() {
	if s.finished {
		return
	}
	now, snow := s.m.cfg.Now(), s.sessionNowLocked()
	if ph := phaseAt(s.b, snow); ph != s.phase {
		s.phase = ph
		s.emitLocked(Event{Type: EventPhase, Phase: ph})
		s.poke()
	}
	s.probeClockLocked(false)
	if !s.met && !s.rematchOffered && !snow.Before(s.absentFrom.Add(RematchAfter)) {
		s.rematchOffered = true
		s.emitLocked(Event{Type: EventRematchOffered})
	}
	if !s.met && !snow.Before(s.absentFrom.Add(NoShowAfter)) {
		s.emitLocked(Event{Type: EventNoShow})
		if s.receipt == nil {
			s.sendReceiptLocked(now)
		}
		s.finishLocked(now, true)
		return
	}
	if s.phase == PhaseCheckin && s.self.CheckIn != nil && s.receipt == nil {
		s.sendReceiptLocked(now)
	}
	if !snow.Before(s.b.End().Add(CheckinWindow)) || (!s.leaveBy.IsZero() && time.Now().After(s.leaveBy)) {
		if s.receipt == nil {
			s.sendReceiptLocked(now)
		}
		s.finishLocked(now, false)
		return
	}
	s.maybeFinishLocked(now)
	s.checkConnectLocked(now)
}

// maybeFinishLocked ends the session once there is nothing left to wait
// for: both receipts are exchanged (and ours acknowledged, or the partner
// gone), or someone left and the partner is gone.
func (s *Session) maybeFinishLocked(now time.Time) {
	if s.finished {
		return
	}
	up := s.link != nil && s.link.open
	switch {
	case s.receipt != nil && s.partnerReceipt != nil && (s.receiptAcked || !up):
	case (s.self.Left || s.partner.Left) && !up:
	default:
		return
	}
	s.finishLocked(now, false)
}

func (s *Session) finishLocked(now time.Time, noShow bool) {
	if s.finished {
		return
	}
	s.finished = true
	s.phase = PhaseDone
	s.connected = false
	s.emitLocked(Event{Type: EventPhase, Phase: PhaseDone})
	// Leaving before the start without ever meeting is a cancellation,
	// not a session: nothing to record.
	if s.met || !s.self.Left || !s.sessionNowLocked().Before(s.b.Start) {
		s.record = &Record{
			BookingID: s.b.ID, PartnerBooking: s.partnerBooking, Partner: s.b.Partner,
			PartnerName: s.partner.Name, Kind: s.b.Kind, Start: s.b.Start, DurationMin: s.b.DurationMin,
			Met: s.met, JoinedAt: s.joinedAt, LeftAt: now,
			Goal: s.self.Goal, PartnerGoal: s.partner.Goal,
			CheckIn: s.self.CheckIn, PartnerCheckIn: s.partner.CheckIn, NoShow: noShow,
			LeftEarly: s.self.Left && s.selfEarly, LeaveReason: s.self.Reason,
			PartnerLeftEarly: s.partner.Left && s.partnerEarly, PartnerLeaveReason: s.partner.Reason,
			Receipt: s.receipt, PartnerReceipt: s.partnerReceipt,
		}
	}
	close(s.over)
}

// teardown stops the session's goroutines, stores the record and
// unregisters the session.
func (s *Session) teardown() {
	s.mu.Lock()
	s.closing = true
	l, br, rec, finished := s.link, s.browser, s.record, s.finished
	s.link, s.browser = nil, nil
	s.mu.Unlock()
	s.cancel()
	if l != nil {
		l.stop()
	}
	if br != nil {
		br.Close()
	}
	s.workers.Wait()
	s.relay.Close()
	s.m.cfg.Host.ConnManager().Unprotect(s.b.Partner, s.protectTag)
	if finished {
		if rec != nil {
			if err := saveRecord(s.m.cfg.DB, s.b, rec); err != nil {
				s.log.Error("storing session record", "err", err)
			}
		} else if err := deleteLive(s.m.cfg.DB, s.b); err != nil {
			s.log.Error("dropping session state", "err", err)
		}
		s.emit(Event{Type: EventEnded, Record: rec})
	}
	s.m.remove(s)
	close(s.done)
}

// sendReceiptLocked signs what we saw and sends it to the partner (again
// after a reconnect, until acknowledged).
func (s *Session) sendReceiptLocked(now time.Time) {
	a := Attendance{
		Signer: s.m.cfg.Host.ID(), Partner: s.b.Partner,
		BookingID: s.b.ID, PartnerBookingID: s.partnerBooking,
		Start: s.b.Start, Duration: time.Duration(s.b.DurationMin) * time.Minute,
		JoinedAt: s.joinedAt, LeftAt: now, CheckIn: s.self.CheckIn,
		LeftEarly: s.self.Left && s.selfEarly,
	}
	env, err := signReceipt(s.m.key, a)
	if err != nil {
		s.log.Error("signing receipt", "err", err)
		return
	}
	s.receipt = env
	s.sendLocked(&pb.Message{Body: &pb.Message_Receipt{Receipt: &pb.Receipt{Envelope: env}}})
}

// sendLocked sends one message on the data channel.
func (s *Session) sendLocked(m *pb.Message) error {
	l := s.link
	if l == nil || !l.open {
		return ErrNotConnected
	}
	data, err := encodeMessage(m)
	if err != nil {
		return err
	}
	if err := l.dc.Send(data); err != nil {
		return fmt.Errorf("sending on data channel: %w: %v", ErrNotConnected, err)
	}
	return nil
}

func (s *Session) helloLocked() *pb.Message {
	return &pb.Message{Body: &pb.Message_Hello{Hello: &pb.Hello{
		Name: s.self.Name, BookingId: s.b.ID, PartnerBookingId: s.partnerBooking,
		Goal: s.self.Goal, Presence: presenceToPB(s.self.Presence),
		Media:   &pb.Media{Video: s.self.Media.Video, Audio: s.self.Media.Audio},
		CheckIn: checkInToPB(s.self.CheckIn),
	}}}
}

func (s *Session) addChatLocked(c ChatLine) {
	s.chat = append(s.chat, c)
	if len(s.chat) > maxChatLines {
		s.chat = slices.Delete(s.chat, 0, len(s.chat)-maxChatLines)
	}
}

// onMessage handles one data channel message from the partner on l.
func (s *Session) onMessage(l *link, data []byte) {
	m, err := decodeMessage(data)
	if err != nil {
		s.log.Debug("dropping partner message", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link != l || s.finished {
		return
	}
	now := s.m.cfg.Now()
	switch b := m.GetBody().(type) {
	case *pb.Message_Hello:
		s.onHelloLocked(l, b.Hello, now)
	case *pb.Message_Goal:
		s.partner.Goal = b.Goal.GetText()
		s.emitLocked(Event{Type: EventGoal, From: FromPartner, Text: s.partner.Goal})
	case *pb.Message_Chat:
		s.addChatLocked(ChatLine{From: FromPartner, Text: b.Chat.GetText(), At: now})
		s.emitLocked(Event{Type: EventChat, From: FromPartner, Text: b.Chat.GetText()})
	case *pb.Message_Presence:
		s.partner.Presence, _ = presenceFromPB(b.Presence.GetState(), false)
		s.emitLocked(Event{Type: EventPresence, From: FromPartner, Presence: s.partner.Presence})
	case *pb.Message_Media:
		s.partner.Media = Media{Video: b.Media.GetVideo(), Audio: b.Media.GetAudio()}
		md := s.partner.Media
		s.emitLocked(Event{Type: EventMedia, From: FromPartner, Media: &md})
	case *pb.Message_CheckIn:
		s.partner.CheckIn = checkInFromPB(b.CheckIn)
		s.emitLocked(Event{Type: EventCheckIn, From: FromPartner, CheckIn: s.partner.CheckIn})
	case *pb.Message_Leave:
		s.partner.Left, s.partner.Reason = true, b.Leave.GetReason()
		s.partnerEarly = s.sessionNowLocked().Before(s.b.End())
		s.emitLocked(Event{Type: EventPartnerLeft, From: FromPartner, Text: s.partner.Reason})
		if s.receipt == nil {
			s.sendReceiptLocked(now)
		}
		if s.leaveBy.IsZero() {
			s.leaveBy = time.Now().Add(s.m.cfg.LeaveLinger)
		}
		s.maybeFinishLocked(now)
	case *pb.Message_Receipt:
		s.onReceiptLocked(b.Receipt.GetEnvelope(), now)
	case *pb.Message_ReceiptAck:
		if s.receipt != nil {
			s.receiptAcked = true
			s.maybeFinishLocked(now)
		}
	case *pb.Message_Clock:
		s.onClockLocked(b.Clock, now)
	}
}

func (s *Session) onHelloLocked(l *link, h *pb.Hello, now time.Time) {
	if (h.GetPartnerBookingId() != "" && h.GetPartnerBookingId() != s.b.ID) ||
		(s.partnerBooking != "" && h.GetBookingId() != s.partnerBooking) {
		s.log.Warn("partner's hello names another booking", "theirs", h.GetBookingId(), "ours", h.GetPartnerBookingId())
		l.kill()
		return
	}
	if s.partnerBooking == "" {
		s.partnerBooking = h.GetBookingId()
	}
	if h.GetName() != "" {
		s.partner.Name = h.GetName()
	}
	s.partner.Goal = h.GetGoal()
	s.partner.Presence, _ = presenceFromPB(h.GetPresence(), true)
	s.partner.Media = Media{Video: h.GetMedia().GetVideo(), Audio: h.GetMedia().GetAudio()}
	if c := checkInFromPB(h.GetCheckIn()); c != nil {
		s.partner.CheckIn = c
	}
	l.hello = true
	s.connected = true
	first := !s.greeted
	s.greeted = true
	path := l.pathCopy()
	switch {
	case !s.met:
		s.met, s.joinedAt = true, now
		s.saveLiveLocked()
		s.emitLocked(Event{Type: EventPartnerJoined, From: FromPartner, Text: s.partner.Name, Path: path})
	case first: // met before this node restarted
		s.emitLocked(Event{Type: EventPartnerJoined, From: FromPartner, Text: s.partner.Name, Path: path})
	default:
		s.emitLocked(Event{Type: EventPartnerReconnected, From: FromPartner, Path: path})
	}
	if s.receipt != nil && !s.receiptAcked {
		s.sendLocked(&pb.Message{Body: &pb.Message_Receipt{Receipt: &pb.Receipt{Envelope: s.receipt}}})
	}
}

func (s *Session) onReceiptLocked(env []byte, now time.Time) {
	a, err := VerifyReceipt(env, s.b.Partner)
	if err == nil {
		switch {
		case a.Partner != s.m.cfg.Host.ID():
			err = fmt.Errorf("%w: names %s as partner", ErrBadReceipt, a.Partner)
		case a.PartnerBookingID != "" && a.PartnerBookingID != s.b.ID:
			err = fmt.Errorf("%w: for booking %q", ErrBadReceipt, a.PartnerBookingID)
		case s.partnerBooking != "" && a.BookingID != s.partnerBooking:
			err = fmt.Errorf("%w: signer's booking %q", ErrBadReceipt, a.BookingID)
		}
	}
	if err != nil {
		s.log.Warn("partner's receipt rejected", "err", err)
		return
	}
	first := s.partnerReceipt == nil
	s.partnerReceipt = env
	s.sendLocked(&pb.Message{Body: &pb.Message_ReceiptAck{ReceiptAck: &pb.ReceiptAck{}}})
	if first {
		s.emitLocked(Event{Type: EventReceipt, From: FromPartner})
	}
	s.maybeFinishLocked(now)
}

// saveLiveLocked stores what must survive a node restart.
func (s *Session) saveLiveLocked() {
	l := liveState{JoinedAt: s.joinedAt, Goal: s.self.Goal}
	if s.clockKnown {
		ms := s.clockOffset.Milliseconds()
		l.ClockOffsetMs = &ms
	}
	if err := saveLive(s.m.cfg.DB, s.b, l); err != nil {
		s.log.Error("storing session state", "err", err)
	}
}

func (s *Session) emitLocked(e Event) { s.emit(e) }

func (s *Session) emit(e Event) {
	e.Booking, e.PartnerBooking = s.b.ID, s.b.PartnerBooking
	e.At = s.m.cfg.Now()
	s.m.events.push(e)
}

// poke asks the connector to look again whether a link is needed.
func (s *Session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// goWorker runs f as a session goroutine unless teardown has begun.
func (s *Session) goWorker(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.goWorkerLocked(f)
}

func (s *Session) goWorkerLocked(f func()) bool {
	if s.closing {
		return false
	}
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		f()
	}()
	return true
}
