package matchmaking

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// silentOwners starts k hosts with peer IDs above p's (p proposes to
// them), connected to p, that take a proposal's stream and never answer,
// and publishes an offer of each for slot through a. It returns a channel
// closed when p's first proposal reaches one of them, and the number of
// p's proposals to them that have ended (p gave up waiting).
func silentOwners(t *testing.T, p *testNode, a *attacker, k int, slot time.Time) (asked <-chan struct{}, ended *atomic.Int64) {
	return slowOwners(t, p, a, k, slot, nil)
}

// slowOwners is silentOwners with answer, if set, serving each match
// stream from p after its first message was read (nil: say nothing).
func slowOwners(t *testing.T, p *testNode, a *attacker, k int, slot time.Time,
	answer func(st network.Stream, r *bufio.Reader, m *pb.MatchMessage)) (asked <-chan struct{}, ended *atomic.Int64) {
	t.Helper()
	return ownersWhere(t, p, a, k, slot, nil, answer)
}

// ownersWhere is slowOwners with the owners' peer IDs chosen by keep too
// (nil: any above p's).
func ownersWhere(t *testing.T, p *testNode, a *attacker, k int, slot time.Time, keep func(peer.ID) bool,
	answer func(st network.Stream, r *bufio.Reader, m *pb.MatchMessage)) (asked <-chan struct{}, ended *atomic.Int64) {
	t.Helper()
	first := make(chan struct{})
	var once sync.Once
	ended = new(atomic.Int64)
	for range k {
		var key crypto.PrivKey
		var id peer.ID
		for key == nil || id < p.id() || (keep != nil && !keep(id)) {
			key, id = mustKey(t)
		}
		h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		h.SetStreamHandler(MatchProtocol, func(st network.Stream) {
			fromP := st.Conn().RemotePeer() == p.id() // q may propose to them too
			if fromP && answer != nil {
				r := bufio.NewReader(st)
				m, err := readMsg(r)
				if err != nil {
					st.Reset()
					return
				}
				if m.GetPropose() != nil {
					once.Do(func() { close(first) })
				}
				answer(st, r, m)
				st.Close()
				return
			}
			if fromP {
				once.Do(func() { close(first) })
			}
			io.Copy(io.Discard, st) // takes the proposal, answers nothing
			if fromP {
				ended.Add(1)
			}
			st.Reset()
		})
		connect(t, &testNode{h: h}, p)
		now := time.Now()
		o := &pb.Offer{Version: protoVersion, Owner: []byte(id), BookingId: "silent", StartUnix: slot.Unix(), DurationMin: 25,
			Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "silent",
			ExpiresUnix: now.Add(time.Hour).Unix(), Seq: uint64(now.UnixMicro()), Stamp: mintStamp(id, testStampBits),
			Addrs: [][]byte{h.Addrs()[0].Bytes()}}
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		a.publishAs(key, env)
		waitFor(t, 10*time.Second, "a silent offer on p's board", func() bool { return p.svc.board.get(id, "silent") != nil })
	}
	return first, ended
}

// Silent owners do not hold up a booking's round: while p waits for the
// answer to its proposal to an owner that took the stream and says
// nothing (up to 2 s), it goes on with its other candidates and can take
// an honest peer's proposal, so an honest peer that books meanwhile is
// matched before p gives up on the silent one. Before, p proposed to one
// candidate at a time and its booking was "busy" while it waited: every
// silent owner in the class cost p (and whoever proposed to p) a whole
// 2 s, one after another (docs/benchmarks.md, Sybils in the swarm).
func TestAttackSilentOwnersDoNotHoldUpRound(t *testing.T) {
	p, q := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, p, q)
	a := newAttacker(t)
	a.connect(p)
	slot := nextSlot(3 * time.Hour)
	p.view()
	asked, ended := silentOwners(t, p, a, 3, slot)
	bp := p.book(t, BookRequest{At: slot, DurationMin: 25})
	select {
	case <-asked:
	case <-time.After(deadline(10 * time.Second)):
		t.Fatal("p never proposed to a silent owner")
	}
	// p is waiting for a silent owner's answer now; q books.
	bq := q.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 20*time.Second, "p and q matched", func() bool { return p.booking(bp.ID).Confirmed && q.booking(bq.ID).Confirmed })
	if n := ended.Load(); n > 0 {
		t.Fatalf("p and q matched only after p gave up on %d silent proposals: a silent owner held up p's round", n)
	}
	if got := p.booking(bp.ID).Partner; got != q.id().String() {
		t.Fatalf("p matched %s, not q", got)
	}
}

// An Accept that comes after the booking matched someone else is released,
// never confirmed: p closes that stream without a Confirm and Cancels the
// hold, so the slow owner's booking is free at once (no lapse) and p is
// matched once, with q.
func TestLateAcceptReleased(t *testing.T) {
	p, q := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, p, q)
	a := newAttacker(t)
	a.connect(p)
	slot := nextSlot(3 * time.Hour)
	p.view()
	var bpID atomic.Pointer[string]
	matchedQ := func() bool {
		id := bpID.Load()
		if id == nil {
			return false
		}
		b, err := p.svc.Booking(*id)
		return err == nil && b.State == StateMatched && b.Partner == q.id().String()
	}
	afterAccept := make(chan string, 4)
	cancels := make(chan *pb.Cancel, 4)
	asked, _ := slowOwners(t, p, a, 1, slot, func(st network.Stream, r *bufio.Reader, m *pb.MatchMessage) {
		if c := m.GetCancel(); c != nil {
			cancels <- c
			writeMsg(st, rejectMsg(reasonNoMatch))
			return
		}
		if m.GetPropose() == nil {
			return
		}
		// The owner answers only once p has matched q: a late Accept.
		end := time.Now().Add(deadline(10 * time.Second))
		for !matchedQ() {
			if time.Now().After(end) {
				afterAccept <- "p never matched q while the proposal waited"
				return
			}
			time.Sleep(5 * time.Millisecond) // poll interval, not a wait for an event
		}
		if err := writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Accept{Accept: &pb.Accept{Name: "slow"}}}); err != nil {
			afterAccept <- "writing the Accept: " + err.Error()
			return
		}
		if next, err := readMsg(r); err == nil && next.GetConfirm() != nil {
			afterAccept <- "confirmed"
			return
		}
		afterAccept <- "closed"
	})
	bp := p.book(t, BookRequest{At: slot, DurationMin: 25})
	bpID.Store(&bp.ID)
	select {
	case <-asked:
	case <-time.After(deadline(10 * time.Second)):
		t.Fatal("p never proposed to the slow owner")
	}
	bq := q.book(t, BookRequest{At: slot, DurationMin: 25})
	select {
	case got := <-afterAccept:
		if got != "closed" {
			t.Fatalf("after the late Accept: %s, want the stream closed without a Confirm", got)
		}
	case <-time.After(deadline(20 * time.Second)):
		t.Fatal("the slow owner never answered")
	}
	select {
	case c := <-cancels:
		if c.GetFromBooking() != bp.ID || c.GetToBooking() != "silent" {
			t.Fatalf("p cancelled %s -> %s, want %s -> silent", c.GetFromBooking(), c.GetToBooking(), bp.ID)
		}
	case <-time.After(deadline(10 * time.Second)):
		t.Fatal("p never released the late Accept's hold with a Cancel")
	}
	waitFor(t, 10*time.Second, "p and q confirmed", func() bool { return p.booking(bp.ID).Confirmed && q.booking(bq.ID).Confirmed })
	if got := p.booking(bp.ID).Partner; got != q.id().String() {
		t.Fatalf("p matched %s, not q", got)
	}
}

// A silent owner that the class plan pairs with a booking costs it one
// patience, not the plan's grace on top: once the proposal to its plan
// partner is past the patience unanswered, the booking falls back to the
// other compatible owners at once. p's clock is stopped once it books, so the grace
// (300 ms of p's clock) never runs out: before, p waited for it until the
// silent owner's proposal timed out (2 s) and put it out of the plan, and
// only then proposed to q, the honest owner that booked meanwhile. The
// silent owner S is chosen so that the plan of {p, q, S} pairs p with S
// (q's plan key sorts last), and q is above p (p proposes to q) and S.
func TestAttackSilentPlanPartnerSkippedWithoutGrace(t *testing.T) {
	clk := &testClock{} // running until p books
	p, q := newTestNode(t, func(c *Config) { c.Now = clk.now }), newTestNode(t, nil)
	for q.id() < p.id() {
		q = newTestNode(t, nil) // p proposes to q: q must be above p
	}
	connect(t, p, q)
	a := newAttacker(t)
	a.connect(p)
	// A slot where q's plan key sorts after p's (one in two does).
	var slot time.Time
	var class slotClass
	for h := 3; ; h++ {
		slot = nextSlot(time.Duration(h) * time.Hour)
		class = classOfBooking(&Booking{Kind: KindScheduled, Start: slot, DurationMin: 25})
		if planKey(class, q.id()) > planKey(class, p.id()) {
			break
		}
	}
	p.view()
	// S is also below q, so q never proposes to it: q's own round with
	// the silent S would answer p "busy" meanwhile, and p's backoff never
	// ends on its stopped clock.
	asked, ended := ownersWhere(t, p, a, 1, slot, func(id peer.ID) bool { return id < q.id() && planKey(class, id) < planKey(class, q.id()) }, nil)
	clk.stop()
	bp := p.book(t, BookRequest{At: slot, DurationMin: 25})
	select {
	case <-asked:
	case <-time.After(deadline(10 * time.Second)):
		t.Fatal("p never proposed to the silent owner, its plan partner")
	}
	bq := q.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 20*time.Second, "p and q matched", func() bool { return p.booking(bp.ID).Confirmed && q.booking(bq.ID).Confirmed })
	// The silent proposal times out after 2 s of real time (a socket
	// bound, proposeReplyTimeout): under the race detector on a loaded
	// machine p's fallback to q alone can take that long (it failed so
	// twice in .ci/under-load's race phase, 4 December, and passed 6 of 6
	// under -race with two busy loops alone), so there only the match is
	// checked; the plain run keeps the timing.
	if n := ended.Load(); n > 0 && raceSlowdown == 1 {
		t.Fatalf("p matched q only after its proposal to the silent plan partner timed out (%d): p waited out the plan's grace", n)
	}
	if got := p.booking(bp.ID).Partner; got != q.id().String() {
		t.Fatalf("p matched %s, not q", got)
	}
}
