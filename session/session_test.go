package session

import (
	"bufio"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/session/pb"
)

// TestMeet runs a whole scheduled session between two nodes: lobby, goals,
// chat and presence both ways, the phases, check-ins, and both histories
// holding the session with both receipts verifiable.
func TestMeet(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	start := clk.Now().Add(2 * time.Minute) // the lobby is open
	ba, bb := bookings(a, b, "meet", start, 25*time.Minute, KindScheduled)
	sa, sb := open(t, a, ba), open(t, b, bb)
	a.rec.wait(t, "a in the lobby", isPhase(ba.ID, PhaseLobby))
	a.rec.wait(t, "a sees b join", is(EventPartnerJoined, ba.ID))
	b.rec.wait(t, "b sees a join", is(EventPartnerJoined, bb.ID))

	// Hello carried names, goals and "no camera".
	if st := sa.State(); st.Partner.Name != "Bea" || st.Partner.Goal != "read the paper" || st.Partner.Media.Video || !st.Connected {
		t.Fatalf("a's view of b after hello: %+v", st.Partner)
	}
	if st := sb.State(); st.Partner.Goal != "write the tests" {
		t.Fatalf("b's view of a's goal: %q", st.Partner.Goal)
	}

	// Goals, chat and presence cross both ways.
	if err := sa.SetGoal("finish chapter 3"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "a's new goal", isFrom(EventGoal, bb.ID, FromPartner, func(e Event) bool { return e.Text == "finish chapter 3" }))
	if err := sb.SetGoal("review two PRs"); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "b's new goal", isFrom(EventGoal, ba.ID, FromPartner, func(e Event) bool { return e.Text == "review two PRs" }))
	if err := sa.Chat("hi Bea!"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "a's chat", isFrom(EventChat, bb.ID, FromPartner, func(e Event) bool { return e.Text == "hi Bea!" }))
	if err := sb.Chat("hi Ada, let's go"); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "b's chat", isFrom(EventChat, ba.ID, FromPartner, func(e Event) bool { return e.Text == "hi Ada, let's go" }))
	if err := sb.SetPresence(PresenceAway); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "b away", isFrom(EventPresence, ba.ID, FromPartner, func(e Event) bool { return e.Presence == PresenceAway }))
	if err := sb.SetPresence(PresenceHere); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "b back", isFrom(EventPresence, ba.ID, FromPartner, func(e Event) bool { return e.Presence == PresenceHere }))
	if err := sa.CheckIn(OutcomeDone, ""); !errors.Is(err, ErrWrongPhase) {
		t.Fatalf("check-in in the lobby: %v, want ErrWrongPhase", err)
	}

	// The schedule follows the clock, on both sides.
	for _, step := range []struct {
		at    time.Time
		phase Phase
	}{{start, PhaseFocus}, {start.Add(24 * time.Minute), PhaseWarning}, {start.Add(25 * time.Minute), PhaseCheckin}} {
		clk.Set(step.at)
		a.rec.wait(t, "a "+string(step.phase), isPhase(ba.ID, step.phase))
		b.rec.wait(t, "b "+string(step.phase), isPhase(bb.ID, step.phase))
	}

	if err := sa.CheckIn(OutcomeDone, "all of it"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "a's check-in", isFrom(EventCheckIn, bb.ID, FromPartner, func(e Event) bool { return e.CheckIn.Outcome == OutcomeDone }))
	if err := sb.CheckIn(OutcomePartly, "one PR left"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sa)
	waitDone(t, sb)
	a.rec.wait(t, "a done", isPhase(ba.ID, PhaseDone))
	a.rec.wait(t, "a's record", is(EventEnded, ba.ID))
	b.rec.wait(t, "b's record", is(EventEnded, bb.ID))

	checkHistory(t, a, ba, b.h.ID(), CheckIn{OutcomeDone, "all of it"}, CheckIn{OutcomePartly, "one PR left"})
	checkHistory(t, b, bb, a.h.ID(), CheckIn{OutcomePartly, "one PR left"}, CheckIn{OutcomeDone, "all of it"})

	st, err := a.m.Stats(start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 1 || st.ThisWeek != 1 || st.CheckIns != 1 || st.Done != 1 || st.MinutesFocused != 25 || st.Streak != 1 {
		t.Fatalf("a's stats: %+v", st)
	}
	if _, err := a.m.Open(ba); !errors.Is(err, ErrEnded) {
		t.Fatalf("reopening a finished session: %v, want ErrEnded", err)
	}
}

func checkHistory(t *testing.T, n *node, b Booking, partner peer.ID, mine, theirs CheckIn) {
	t.Helper()
	hist, err := n.m.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 {
		t.Fatalf("%s history has %d records", n.name, len(hist))
	}
	r := hist[0]
	if r.BookingID != b.ID || r.Partner != partner || !r.Met || r.NoShow || r.LeftEarly || r.PartnerLeftEarly {
		t.Fatalf("%s record: %+v", n.name, r)
	}
	if r.CheckIn == nil || *r.CheckIn != mine || r.PartnerCheckIn == nil || *r.PartnerCheckIn != theirs {
		t.Fatalf("%s record check-ins: %+v / %+v", n.name, r.CheckIn, r.PartnerCheckIn)
	}
	if r.Goal == "" || r.PartnerGoal == "" {
		t.Fatalf("%s record goals: %q / %q", n.name, r.Goal, r.PartnerGoal)
	}
	own, err := VerifyReceipt(r.Receipt, n.h.ID())
	if err != nil {
		t.Fatalf("%s own receipt: %v", n.name, err)
	}
	their, err := VerifyReceipt(r.PartnerReceipt, partner)
	if err != nil {
		t.Fatalf("%s partner receipt: %v", n.name, err)
	}
	if own.CheckIn == nil || *own.CheckIn != mine || their.CheckIn == nil || *their.CheckIn != theirs {
		t.Fatalf("%s receipts' check-ins: %+v / %+v", n.name, own.CheckIn, their.CheckIn)
	}
	if their.Partner != n.h.ID() || their.PartnerBookingID != b.ID || their.BookingID != b.PartnerBooking || their.JoinedAt.IsZero() {
		t.Fatalf("%s partner receipt content: %+v", n.name, their)
	}
	if _, err := VerifyReceipt(r.PartnerReceipt, n.h.ID()); !errors.Is(err, ErrBadReceipt) {
		t.Fatalf("partner receipt verified against the wrong key: %v", err)
	}
}

// TestThirdPeerRefused: only the booked partner may open the signalling
// stream; anyone else is reset, even with the right booking IDs.
func TestThirdPeerRefused(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	c := newNode(t, "c", clk)
	introduce(a, b, c)
	ba, bb := bookings(a, b, "third", clk.Now(), 25*time.Minute, KindNow)
	// b answers (higher ID): a stream to b is what a stranger would try.
	sb := open(t, b, bb)
	b.rec.wait(t, "b's phase", isPhase(bb.ID, PhaseFocus))

	for _, join := range []*pb.Join{
		{FromBooking: ba.ID, ToBooking: bb.ID}, // pretending to be a's booking
		{FromBooking: "c-1", ToBooking: ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		st, err := c.h.NewStream(ctx, b.h.ID(), SignalProtocol)
		cancel()
		if err != nil {
			continue // refused during negotiation: fine
		}
		st.SetDeadline(time.Now().Add(waitTimeout))
		werr := writeSignal(st, &pb.Signal{Body: &pb.Signal_Join{Join: join}})
		reply, rerr := readSignal(bufio.NewReader(st))
		st.Close()
		if werr == nil && rerr == nil {
			t.Fatalf("a stranger's stream got an answer: %v", reply)
		}
	}
	if n := b.rec.count(func(e Event) bool { return e.Type == EventPartnerJoined }); n != 0 {
		t.Fatalf("b saw %d joins from a stranger", n)
	}
	// The real partner still gets in.
	open(t, a, ba)
	b.rec.wait(t, "b sees a join", is(EventPartnerJoined, bb.ID))
	if st := sb.State(); !st.Connected || st.Partner.Name != "Ada" {
		t.Fatalf("b's state: %+v", st)
	}
}

// TestNoShow: the partner never comes. Rematch is offered at 2 minutes and
// the no-show is recorded at 5.
func TestNoShow(t *testing.T) {
	clk := newClock()
	a := newNode(t, "a", clk)
	absent := newHost(t) // online, but its node never opens the session
	a.h.Peerstore().AddAddrs(absent.ID(), absent.Addrs(), time.Hour)
	start := clk.Now()
	s := open(t, a, Booking{ID: "ns", PartnerBooking: "x", Partner: absent.ID(), Name: "Ada",
		Goal: "taxes", Start: start, DurationMin: 50, Kind: KindNow})
	a.rec.wait(t, "focus", isPhase("ns", PhaseFocus))

	clk.Set(start.Add(RematchAfter))
	a.rec.wait(t, "rematch offered", is(EventRematchOffered, "ns"))
	if a.rec.count(is(EventNoShow, "ns")) != 0 {
		t.Fatal("no-show before 5 minutes")
	}
	clk.Set(start.Add(NoShowAfter))
	a.rec.wait(t, "no-show", is(EventNoShow, "ns"))
	waitDone(t, s)
	e := a.rec.wait(t, "ended", is(EventEnded, "ns"))
	if e.Record == nil || !e.Record.NoShow || e.Record.Met {
		t.Fatalf("ended record: %+v", e.Record)
	}
	hist, err := a.m.History()
	if err != nil || len(hist) != 1 || !hist[0].NoShow || hist[0].Partner != absent.ID() {
		t.Fatalf("history: %+v, %v", hist, err)
	}
	if st, _ := a.m.Stats(clk.Now()); st.NoShows != 1 || st.Sessions != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestLeave: leaving early reaches the partner at once with the reason,
// and both sides record who left.
func TestLeave(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "leave")
	clk.Set(clk.Now().Add(10 * time.Minute))
	if err := sb.Leave("a phone call"); err != nil {
		t.Fatal(err)
	}
	e := a.rec.wait(t, "b left", is(EventPartnerLeft, sa.ID()))
	if e.Text != "a phone call" {
		t.Fatalf("leave reason %q", e.Text)
	}
	waitDone(t, sa)
	waitDone(t, sb)
	if err := sb.Chat("still there?"); !errors.Is(err, ErrEnded) {
		t.Fatalf("chat after leaving: %v", err)
	}
	ra, _ := sa.Record()
	rb, _ := sb.Record()
	if !ra.PartnerLeftEarly || ra.PartnerLeaveReason != "a phone call" || ra.LeftEarly {
		t.Fatalf("a's record: %+v", ra)
	}
	if !rb.LeftEarly || rb.LeaveReason != "a phone call" || rb.PartnerLeftEarly {
		t.Fatalf("b's record: %+v", rb)
	}
	att, err := VerifyReceipt(ra.PartnerReceipt, b.h.ID())
	if err != nil || !att.LeftEarly {
		t.Fatalf("b's receipt in a's record: %+v, %v", att, err)
	}
	if _, err := VerifyReceipt(rb.PartnerReceipt, a.h.ID()); err != nil {
		t.Fatalf("a's receipt in b's record: %v", err)
	}
}

// TestReconnect: a partner's node drops mid-session and comes back; the
// session reconnects with a new PeerConnection and carries on.
func TestReconnect(t *testing.T) {
	for _, drop := range []string{"answerer", "offerer"} {
		t.Run(drop, func(t *testing.T) {
			clk := newClock()
			offerer, answerer := newPair(t, clk)
			s1, s2 := meet(t, offerer, answerer, "re-"+drop)
			// Well past the no-show mark: a restarted node must remember
			// that the partner came.
			clk.Set(clk.Now().Add(10 * time.Minute))
			stay, gone, sgone := offerer, answerer, s2
			sstay := s1
			if drop == "offerer" {
				stay, gone, sgone, sstay = answerer, offerer, s1, s2
			}
			if err := sgone.SetGoal("goal before the drop"); err != nil {
				t.Fatal(err)
			}
			stay.rec.wait(t, "goal", isFrom(EventGoal, sstay.ID(), FromPartner, nil))

			b := sgone.b
			joinedAt := sgone.State().JoinedAt
			gone.restart(t) // the node process restarts: its session stops without leaving
			stay.rec.wait(t, "partner disconnected", is(EventPartnerDisconnected, sstay.ID()))
			if sstay.State().Connected {
				t.Fatal("still connected after the drop")
			}
			back := open(t, gone, b)
			stay.rec.wait(t, "partner back", is(EventPartnerReconnected, sstay.ID()))
			// The restarted node's session is new: it sees a first join again.
			waitFor(t, "rejoined", func() bool { return gone.rec.count(is(EventPartnerJoined, b.ID)) == 2 })
			if err := back.Chat("sorry, my node restarted"); err != nil {
				t.Fatal(err)
			}
			stay.rec.wait(t, "chat after reconnect", isFrom(EventChat, sstay.ID(), FromPartner, func(e Event) bool {
				return e.Text == "sorry, my node restarted"
			}))
			if g := back.State().Partner.Goal; g == "" {
				t.Fatal("partner's goal not re-sent in hello")
			}
			if n := stay.rec.count(is(EventPartnerJoined, sstay.ID())); n != 1 {
				t.Fatalf("partner-joined %d times on the side that stayed", n)
			}
			if st := back.State(); !st.Met || !st.JoinedAt.Equal(joinedAt) || st.Self.Goal != "goal before the drop" {
				t.Fatalf("restarted session forgot its state: met=%v joined=%v (was %v) goal=%q", st.Met, st.JoinedAt, joinedAt, st.Self.Goal)
			}
			if gone.rec.count(is(EventRematchOffered, b.ID))+gone.rec.count(is(EventNoShow, b.ID)) != 0 {
				t.Fatal("the restarted node took its partner for late")
			}
		})
	}
}

func TestOpenValidates(t *testing.T) {
	clk := newClock()
	a := newNode(t, "a", clk)
	good := Booking{ID: "v", Partner: newHost(t).ID(), Start: clk.Now(), DurationMin: 25}
	for name, mut := range map[string]func(*Booking){
		"no id":        func(b *Booking) { b.ID = "" },
		"self partner": func(b *Booking) { b.Partner = a.h.ID() },
		"no partner":   func(b *Booking) { b.Partner = "" },
		"no duration":  func(b *Booking) { b.DurationMin = 0 },
		"long goal":    func(b *Booking) { b.Goal = string(make([]byte, MaxGoalLen+1)) },
		"escape name":  func(b *Booking) { b.PartnerName = "\x1b[31mBo" },
		"bad kind":     func(b *Booking) { b.Kind = "later" },
	} {
		b := good
		mut(&b)
		if _, err := a.m.Open(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	past := good
	past.Start = clk.Now().Add(-time.Hour)
	if _, err := a.m.Open(past); !errors.Is(err, ErrEnded) {
		t.Errorf("past booking: %v, want ErrEnded", err)
	}
	s1, err := a.m.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	// Local input follows the same text rules as the wire.
	for name, err := range map[string]error{
		"goal":  s1.SetGoal("\x1b[2Jclear"),
		"chat":  s1.Chat("two\nlines"),
		"note":  s1.CheckIn(OutcomeDone, "\u202eevil"),
		"leave": s1.Leave("bye\a"),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s with a control character: %v, want ErrInvalid", name, err)
		}
	}
	if st := s1.State(); st.Self.Goal != "" || st.Self.Left {
		t.Errorf("refused input changed the session: %+v", st.Self)
	}
	s2, err := a.m.Open(good)
	if err != nil || s1 != s2 {
		t.Fatalf("second Open: %v, same=%v", err, s1 == s2)
	}
}

// TestReconnectAfterNetworkDrop: the answerer's ICE transport dies without
// a goodbye (as when its network goes away). The offerer notices through
// ICE timeouts, and the two connect again with a new PeerConnection.
func TestReconnectAfterNetworkDrop(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "net")
	sb.mu.Lock()
	l := sb.link
	sb.mu.Unlock()
	if err := l.pc.SCTP().Transport().ICETransport().Stop(); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "partner disconnected", is(EventPartnerDisconnected, sa.ID()))
	a.rec.wait(t, "partner back", is(EventPartnerReconnected, sa.ID()))
	if err := sb.Chat("back online"); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "chat after reconnect", isFrom(EventChat, sa.ID(), FromPartner, func(e Event) bool { return e.Text == "back online" }))
}

// TestRematchedBookingOpensItsOwnSession: a booking whose partner
// cancelled mid-session is matched again with someone else. While the old
// match's session is open, Open for the new match says so (ErrBusy)
// rather than handing back the old partner's session; once that session
// has ended and is recorded, the new match still gets a session of its
// own, which does not resume the old one's state. Every event names the
// match it belongs to.
func TestRematchedBookingOpensItsOwnSession(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	c := newNode(t, "c", clk)
	introduce(a, b, c)
	sa, sb := meet(t, a, b, "rematch")
	if e := a.rec.wait(t, "a sees b join", is(EventPartnerJoined, sa.ID())); e.PartnerBooking != sb.ID() {
		t.Fatalf("event names partner booking %q, want %q", e.PartnerBooking, sb.ID())
	}
	again := sa.Booking()
	again.Partner, again.PartnerBooking, again.PartnerName = c.h.ID(), "c-rematch", "Cy"
	if _, err := a.m.Open(again); !errors.Is(err, ErrBusy) {
		t.Fatalf("opening the new match while the old session is open: %v, want ErrBusy", err)
	}
	if err := sa.Leave("partner cancelled"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sa)
	waitDone(t, sb)
	if _, ok := sa.Record(); !ok {
		t.Fatal("the old match's session left no record")
	}
	s2, err := a.m.Open(again)
	if err != nil {
		t.Fatalf("opening the new match's session: %v", err)
	}
	if st := s2.State(); st.Met || !st.JoinedAt.IsZero() || st.Booking.Partner != c.h.ID() {
		t.Fatalf("new match's session %+v resumes the old one", st)
	}
	if _, err := a.m.Open(sa.Booking()); !errors.Is(err, ErrEnded) {
		t.Fatalf("reopening the old, recorded match: %v, want ErrEnded", err)
	}
}
