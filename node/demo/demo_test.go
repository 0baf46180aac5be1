package demo

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session"
)

// The demo on its own: "Focus now" is answered by a demo partner within
// seconds, the partner sends video, greets, and the whole session runs on
// the compressed clock through focus, warning and check-in into history.
func TestDemoFocusNowSession(t *testing.T) {
	d, err := Start(Options{
		DataDir: t.TempDir(), API: "127.0.0.1:0", ClockRate: 100, Partners: 2, Seed: 7,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	c := client.New(d.User.APIURL(), d.User.Token())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil || !st.Demo || st.ClockRate != 100 {
		t.Fatalf("status = %+v, %v; want a demo with clock rate 100", st, err)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		os, _ := c.Slots(ctx, time.Time{}, time.Time{})
		return len(os) > 0 && strings.HasSuffix(os[0].Name, "(demo)")
	}, "demo partners' offers on the board")

	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: "see the demo"})
	if err != nil {
		t.Fatal(err)
	}
	var phases []session.Phase
	var partnerVideo, greeted bool
	for {
		var ev apiv1.Event
		select {
		case ev = <-events:
		case <-ctx.Done():
			t.Fatalf("session did not finish; phases %v, video %v, greeted %v", phases, partnerVideo, greeted)
		}
		if ev.Type != apiv1.EventSession {
			continue
		}
		var se apiv1.SessionEvent
		if json.Unmarshal(ev.Data, &se) != nil || se.Booking != b.ID {
			continue
		}
		switch se.Type {
		case session.EventPhase:
			phases = append(phases, se.Phase)
			if se.Phase == session.PhaseCheckin {
				if _, err := c.SessionAction(ctx, b.ID, "checkin", apiv1.SessionAction{Outcome: "done"}); err != nil {
					t.Fatal(err)
				}
			}
		case session.EventMedia:
			partnerVideo = partnerVideo || (se.From == session.FromPartner && se.Media != nil && se.Media.Video)
		case session.EventChat:
			greeted = greeted || se.From == session.FromPartner
		}
		if se.Type == session.EventEnded {
			break
		}
	}
	// A "now" session starts when matched: no lobby.
	want := []session.Phase{session.PhaseFocus, session.PhaseWarning, session.PhaseCheckin, session.PhaseDone}
	if strings.Join(phaseStrings(phases), ",") != strings.Join(phaseStrings(want), ",") {
		t.Errorf("phases %v, want %v", phases, want)
	}
	if !partnerVideo || !greeted {
		t.Errorf("partner video %v, greeting %v", partnerVideo, greeted)
	}
	h, err := c.History(ctx)
	if err != nil || len(h) != 1 || h[0].PartnerCheckIn == nil || h[0].CheckIn == nil || !strings.HasSuffix(h[0].PartnerName, "(demo)") {
		t.Fatalf("history = %+v, %v", h, err)
	}
}

func phaseStrings(ps []session.Phase) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}
