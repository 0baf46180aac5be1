package node_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session"
)

// The empty chair: B is matched with A but never comes. Two minutes after
// the start A is offered a rematch, takes it, and is matched "now" with C,
// who was waiting.
func TestRematchWhenPartnerAbsent(t *testing.T) {
	tr := nodetest.StartTrio(t)
	clock, b, cfgC := tr.Clock, tr.B, tr.CfgC
	ca, cb := apiClientFor(tr.A), apiClientFor(b)
	ctx := context.Background()

	slot := clock.Now().Add(time.Hour).Truncate(15 * time.Minute)
	ba, err := ca.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 50, Goal: "slides"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		bs, _ := ca.Bookings(ctx)
		return len(bs) == 1 && bs[0].Confirmed
	}, "A and B matched")
	b.Stop() // B's laptop is closed: the chair stays empty

	events, err := ca.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(slot.Sub(clock.Now()) + 2*time.Minute + time.Second)
	waitSessionEvent(t, events, session.EventRematchOffered, ba.ID)

	c := nodetest.Start(t, cfgC)
	cc := apiClient(t, cfgC.DataDir)
	if _, err := cc.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	nb, err := ca.Rematch(ctx, ba.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nb.Kind != "now" || nb.DurationMin != 50 {
		t.Errorf("rematch booking = %+v, want now / 50 min (48 min were left)", nb)
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		s, err := ca.Session(ctx, nb.ID)
		return err == nil && s.Connected && s.Booking.Partner == c.ID()
	}, "A to meet C in a new session")
	old, _ := ca.Bookings(ctx)
	for _, x := range old {
		if x.ID == ba.ID && x.State != "cancelled" {
			t.Errorf("the absent partner's booking is %s, want cancelled", x.State)
		}
	}
}

func waitSessionEvent(t *testing.T, events <-chan apiv1.Event, typ, booking string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream closed")
			}
			if ev.Type != apiv1.EventSession {
				continue
			}
			var se apiv1.SessionEvent
			if err := json.Unmarshal(ev.Data, &se); err == nil && se.Type == typ && se.Booking == booking {
				return
			}
		case <-deadline:
			t.Fatalf("no %s event for %s", typ, booking)
		}
	}
}

// A partner who leaves early frees the rest of the time: the session ends,
// the booking is done, and the user can rematch for the remaining time
// (here with C, who is free right now).
func TestRematchAfterPartnerLeftEarly(t *testing.T) {
	tr := nodetest.StartTrio(t)
	clock, cfgC := tr.Clock, tr.CfgC
	ca, cb := apiClientFor(tr.A), apiClientFor(tr.B)
	ctx := context.Background()
	ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 50, Goal: "thesis"})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 50})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		s, err := cb.Session(ctx, bb.ID)
		return err == nil && s.Connected
	}, "the session to connect")
	clock.Advance(5 * time.Minute)
	if _, err := cb.SessionAction(ctx, bb.ID, "leave", apiv1.SessionAction{Reason: "kid woke up"}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		bs, _ := ca.Bookings(ctx)
		return len(bs) == 1 && bs[0].State == "done"
	}, "A's booking to be done once the session ended")

	c := nodetest.Start(t, cfgC)
	cc := apiClient(t, cfgC.DataDir)
	if _, err := cc.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	nb, err := ca.Rematch(ctx, ba.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nb.DurationMin != 50 { // 45 minutes were left
		t.Errorf("rematch duration %d, want 50", nb.DurationMin)
	}
	matched := func() bool {
		b, err := tr.A.Matchmaking().Booking(nb.ID)
		return err == nil && b.State == matchmaking.StateMatched && b.Partner == c.ID().String()
	}
	defer func() {
		if !matched() { // what each side knew, for a failure
			ab, _ := tr.A.Matchmaking().Booking(nb.ID)
			t.Logf("A is %s, C is %s; A's booking %+v", tr.A.ID(), c.ID(), ab)
			t.Logf("A's board %+v", tr.A.Matchmaking().Board(time.Time{}, time.Time{}))
			t.Logf("C's bookings %+v, board %+v", c.Matchmaking().Bookings(), c.Matchmaking().Board(time.Time{}, time.Time{}))
		}
	}()
	nodetest.WaitFor(t, 15*time.Second, matched, "A to match C for the rest of the time")
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		s, err := ca.Session(ctx, nb.ID)
		return err == nil && s.Connected
	}, "A's session with C to connect")
}
