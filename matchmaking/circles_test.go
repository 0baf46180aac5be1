package matchmaking

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/circle"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// circleTrio starts a, b and c, all connected; a makes a circle and b
// joins it by its link, c stays outside. It returns once a and b have
// seen each other on the circle's topic.
func circleTrio(t *testing.T, tune func(*Config)) (a, b, c *testNode, cl Circle) {
	t.Helper()
	nodes := startNodes(t, 3, tune)
	a, b, c = nodes[0], nodes[1], nodes[2]
	cl, err := a.svc.CreateCircle("Study group")
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.svc.JoinCircle(cl.Link, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cl.ID || got.Name != "Study group" {
		t.Fatalf("b joined %+v, want circle %s named by the link", got, cl.ID)
	}
	waitFor(t, 10*time.Second, "a and b to see each other in the circle", func() bool {
		return hasMember(a, cl.ID, b.id()) && hasMember(b, cl.ID, a.id())
	})
	return a, b, c, cl
}

func hasMember(n *testNode, circleID string, p peer.ID) bool {
	for _, c := range n.svc.Circles() {
		if c.ID != circleID {
			continue
		}
		for _, m := range c.Members {
			if m.ID == p.String() {
				return true
			}
		}
	}
	return false
}

// Circle-only bookings match inside the circle only: the outsider never
// sees the offer, and a proposal it makes anyway is refused.
func TestCircleOnlyMatchesInside(t *testing.T) {
	a, b, c, cl := circleTrio(t, nil)
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25, Scope: ScopeCircle})
	bc := c.book(t, BookRequest{At: slot, DurationMin: 25})
	if ba.Scope != ScopeCircle || ba.Circle != "" {
		t.Fatalf("booked scope %q circle %q", ba.Scope, ba.Circle)
	}
	// The outsider proposes to a's booking directly (it could have
	// guessed the booking ID): refused, as the peer is no member.
	reply := roundTripRaw(t, c.h, a.id(), &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: bc.ID, ToBooking: ba.ID, StartUnix: slot.Unix(), DurationMin: 25,
		Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "outsider",
		Offer: c.sealedOffer(t, bc),
	}}})
	if reply.GetReject().GetReason() != reasonUnavailable {
		t.Fatalf("a answered the outsider's proposal with %v, want reject %q", reply, reasonUnavailable)
	}
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25, Scope: ScopeCircle, Circle: cl.Name})
	if bb.Circle != cl.ID {
		t.Fatalf("a circle named by name is stored as %q, want its ID %s", bb.Circle, cl.ID)
	}
	waitFor(t, 15*time.Second, "a and b matched inside the circle", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if got := a.booking(ba.ID); got.Partner != b.id().String() {
		t.Fatalf("a matched %s, want b", got.Partner)
	}
	if got := c.booking(bc.ID); got.State != StateSearching {
		t.Fatalf("the outsider's booking is %s, want still searching", got.State)
	}
	for _, o := range c.svc.Board(time.Time{}, time.Time{}) {
		if o.BookingID == ba.ID || o.BookingID == bb.ID {
			t.Fatalf("the outsider's board shows a circle booking: %+v", o)
		}
	}
	// b sees a's circle offers with the circle's name on them.
	checkInvariants(t, []*testNode{a, b, c})
}

// The outsider subscribes to the circle's topic (its name is no secret)
// and records every byte it receives: none of it opens as an offer or
// shows what the offer says, and it does not open with another circle's
// key. Nor does a board sync with a member hand the circle's offer on.
func TestOutsiderCannotReadCircleOffers(t *testing.T) {
	a, _, c, cl := circleTrio(t, nil)
	var keys circle.Keys
	a.svc.circMu.Lock()
	keys = a.svc.circles[cl.ID].keys
	a.svc.circMu.Unlock()
	topic, err := c.ps.Join(keys.Topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			if m.GetFrom() == a.id() {
				mu.Lock()
				got = append(got, m.GetData())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); sub.Cancel(); <-done; topic.Close() })
	waitFor(t, 10*time.Second, "a to see the outsider on the topic", func() bool {
		return len(a.svc.circlesTopicPeers(cl.ID)) >= 2
	})

	goal, slot := "write chapter 3 of the secret novel", nextSlot(6*time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 50, Scope: ScopeCircle, Goal: goal})
	waitFor(t, 10*time.Second, "the outsider to receive a's circle offer", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range got {
			if m, err := openCircleMessage(keys, d, a.id(), a.svc.now()); err == nil && m.offer != nil && m.offer.GetBookingId() == ba.ID {
				return true
			}
		}
		return false
	})
	other, _ := circle.NewSecret()
	otherKeys, _ := circle.Derive(other)
	mu.Lock()
	defer mu.Unlock()
	for _, d := range got {
		for _, secret := range [][]byte{[]byte(ba.ID), []byte(a.svc.Name()), []byte(a.id()), offerCodec} {
			if bytes.Contains(d, secret) {
				t.Fatalf("a received message shows %q in the clear", secret)
			}
		}
		if _, err := openGossipOffer(d, a.svc.now(), a.id()); err == nil {
			t.Fatal("a received message opens as an offer without the circle's key")
		}
		if _, _, _, ok := peekOffer(d); ok {
			t.Fatal("a received message reads as an offer envelope")
		}
		if _, err := openCircleMessage(otherKeys, d, a.id(), a.svc.now()); !errors.Is(err, circle.ErrOpen) {
			t.Fatalf("another circle's key: %v, want ErrOpen", err)
		}
	}
	c.svc.syncBoard(context.Background(), a.id(), nil)
	if e := c.svc.board.get(a.id(), ba.ID); e != nil {
		t.Fatal("a board sync with a member handed the circle's offer to the outsider")
	}
}

// circlesTopicPeers lists the peers on a circle's topic (tests).
func (s *Service) circlesTopicPeers(id string) []peer.ID {
	s.circMu.Lock()
	cs := s.circles[id]
	s.circMu.Unlock()
	if cs == nil || cs.topic == nil {
		return nil
	}
	return cs.topic.ListPeers()
}

// A "circle first" booking waits for members for OpenAfterMin minutes of
// the node's clock, then anyone may match it.
func TestCircleFirstOpensToAnyone(t *testing.T) {
	clk := &testClock{}
	a, _, c, _ := circleTrio(t, func(cfg *Config) { cfg.Now = clk.now })
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25, Scope: ScopeCircleFirst, OpenAfterMin: 10})
	bc := c.book(t, BookRequest{At: slot, DurationMin: 25})
	if ba.OpenAfterMin != 10 {
		t.Fatalf("open after %d min", ba.OpenAfterMin)
	}
	clk.advance(11 * time.Minute)
	waitFor(t, 15*time.Second, "a and the outsider matched once the booking opened", func() bool {
		return a.booking(ba.ID).Confirmed && c.booking(bc.ID).Confirmed
	})
}

// Invites round-trip through join, a restart keeps the circle, joining
// twice is refused, leaving forgets it; a bad invite changes nothing.
func TestCircleInviteRoundTrip(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	cl, err := a.svc.CreateCircle("Team")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.JoinCircle("tc1-nope", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a bad invite: %v, want ErrInvalid", err)
	}
	if len(b.svc.Circles()) != 0 {
		t.Fatal("a bad invite left a circle behind")
	}
	got, err := b.svc.JoinCircle(cl.Code, "Work")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cl.ID || got.Name != "Work" || got.Code != cl.Code {
		t.Fatalf("joined %+v, want %s named Work with the same code", got, cl.ID)
	}
	if _, err := b.svc.JoinCircle(cl.Link, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("joining twice: %v, want ErrConflict", err)
	}
	b.stop()
	b.start()
	if cs := b.svc.Circles(); len(cs) != 1 || cs[0].ID != cl.ID || cs[0].Name != "Work" {
		t.Fatalf("after a restart b is in %+v", cs)
	}
	if _, err := b.svc.Book(context.Background(), BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 25, Scope: ScopeCircle, Circle: "nonesuch"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("booking for an unknown circle: %v", err)
	}
	bk := b.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 25, Scope: ScopeCircle, Circle: "work"})
	if err := b.svc.LeaveCircle("Work"); !errors.Is(err, ErrConflict) {
		t.Fatalf("leaving with a live booking for the circle: %v, want ErrConflict", err)
	}
	if _, err := b.svc.Cancel(context.Background(), bk.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.LeaveCircle("Work"); err != nil {
		t.Fatal(err)
	}
	b.stop()
	b.start()
	if cs := b.svc.Circles(); len(cs) != 0 {
		t.Fatalf("after leaving, b is in %+v", cs)
	}
	if _, err := b.svc.Book(context.Background(), BookRequest{At: nextSlot(4 * time.Hour), DurationMin: 25, Scope: ScopeCircle}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a circle booking with no circle: %v, want ErrInvalid", err)
	}
}

func FuzzCircleMessage(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, id := mustKey(f)
	s, _ := circle.NewSecret()
	keys, _ := circle.Derive(s)
	env, _ := sealOffer(validOffer(id, now), key)
	offer, _ := keys.Seal([]byte(id), append([]byte{circleMsgOffer}, env...))
	presence, _ := keys.Seal([]byte(id), append([]byte{circleMsgPresence}, "Ada"...))
	empty, _ := keys.Seal([]byte(id), nil)
	f.Add(offer)
	f.Add(presence)
	f.Add(empty)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		openCircleMessage(keys, data, id, now) // must not panic
		// And what opens, with any kind byte and body, is checked.
		sealed, err := keys.Seal([]byte(id), data)
		if err != nil {
			return
		}
		if m, err := openCircleMessage(keys, sealed, id, now); err == nil && m.offer == nil && m.name == "" && len(data) > 0 && data[0] != circleMsgPresence {
			t.Fatalf("kind %d opened as %+v", data[0], m)
		}
	})
}
