package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session"
)

// Two nodes ask to focus now, get matched, meet in a session over WebRTC,
// exchange goals, chat and check-ins through the local API, and both end
// with the same session in their history, each holding the other's
// verifiable receipt.
func TestFocusNowSessionEndToEnd(t *testing.T) {
	clock := &nodetest.Clock{}
	cfgA := nodetest.Config(t)
	cfgA.Now = clock.Now
	a := nodetest.Start(t, cfgA)
	cfgB := nodetest.Config(t)
	cfgB.Now = clock.Now
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := apiClient(t, cfgA.DataDir), apiClient(t, cfgB.DataDir)
	ctx := context.Background()

	ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: "draft the intro"})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: "inbox zero"})
	if err != nil {
		t.Fatal(err)
	}
	connected := func(c *client.Client, id string) func() bool {
		return func() bool {
			s, err := c.Session(ctx, id)
			return err == nil && s.Connected
		}
	}
	nodetest.WaitFor(t, 30*time.Second, connected(ca, ba.ID), "A's session to connect")
	nodetest.WaitFor(t, 30*time.Second, connected(cb, bb.ID), "B's session to connect")

	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, _ := ca.Session(ctx, ba.ID)
		return s.Partner.Goal == "inbox zero"
	}, "A to see B's goal")
	if _, err := ca.SessionAction(ctx, ba.ID, "chat", apiv1.SessionAction{Text: "hi, starting now"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.SessionAction(ctx, bb.ID, "presence", apiv1.SessionAction{Presence: "away"}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, _ := cb.Session(ctx, bb.ID)
		return slices.ContainsFunc(s.Chat, func(l session.ChatLine) bool { return l.Text == "hi, starting now" && l.From == session.FromPartner })
	}, "B to get A's chat line")
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, _ := ca.Session(ctx, ba.ID)
		return s.Partner.Presence == session.PresenceAway
	}, "A to see B away")
	if _, err := ca.SessionAction(ctx, ba.ID, "presence", apiv1.SessionAction{Presence: "dancing"}); err == nil {
		t.Error("bad presence accepted")
	}

	clock.Advance(25 * time.Minute)
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, _ := ca.Session(ctx, ba.ID)
		return s.Phase == session.PhaseCheckin
	}, "check-in phase")
	if _, err := ca.SessionAction(ctx, ba.ID, "checkin", apiv1.SessionAction{Outcome: "done", Note: "intro drafted"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.SessionAction(ctx, bb.ID, "checkin", apiv1.SessionAction{Outcome: "partly"}); err != nil {
		t.Fatal(err)
	}
	history := func(c *client.Client) []apiv1.Record {
		h, err := c.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool { return len(history(ca)) == 1 && len(history(cb)) == 1 }, "both histories")
	ra, rb := history(ca)[0], history(cb)[0]
	if ra.PartnerGoal != "inbox zero" || rb.PartnerGoal != "draft the intro" {
		t.Errorf("goals in history: %q / %q", ra.PartnerGoal, rb.PartnerGoal)
	}
	if ra.CheckIn == nil || ra.CheckIn.Outcome != "done" || ra.PartnerCheckIn == nil || ra.PartnerCheckIn.Outcome != "partly" {
		t.Errorf("A's check-ins: %+v / %+v", ra.CheckIn, ra.PartnerCheckIn)
	}
	for _, c := range []struct {
		rec  apiv1.Record
		peer peer.ID
	}{{ra, b.ID()}, {rb, a.ID()}} {
		if _, err := session.VerifyReceipt(c.rec.PartnerReceipt, c.peer); err != nil {
			t.Errorf("partner receipt does not verify: %v", err)
		}
	}
	// Each partner's signed receipt gives it a track record with the
	// other's matcher: its offers outrank strangers'.
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		return a.Matchmaking().Standing(b.ID()) == 1 && b.Matchmaking().Standing(a.ID()) == 1
	}, "the partners' track records")
	st, err := ca.Stats(ctx)
	if err != nil || st.Sessions != 1 || st.Done != 1 {
		t.Errorf("stats = %+v, %v", st, err)
	}
}
