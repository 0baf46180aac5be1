package demo

import (
	"context"
	"encoding/json"
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
		Log: nodetest.Logger(t, "info"), // in the test log, shown when it fails
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
	// Real time until the partner is here with video and a greeting: at
	// 100x, a partner still connecting after three real seconds (a busy
	// machine) would be a no-show. From then on the clock runs fast, and
	// stops at each phase the test watches (real time from there), so no
	// phase is skipped however late a goroutine runs.
	d.SetClockRate(1)
	b, err := c.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: "see the demo"})
	if err != nil {
		t.Fatal(err)
	}
	var phases []session.Phase
	var partnerVideo, greeted, fast bool
	var end time.Time
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		var ev apiv1.Event
		select {
		case ev = <-events:
		case <-poll.C:
			// The partner's camera shows in the session's state; a media
			// event alone can be missed (a camera attached before the
			// link was up is told in the partner's hello).
			if !partnerVideo {
				sn, err := c.Session(ctx, b.ID)
				partnerVideo = err == nil && sn.Partner.Media.Video
			}
		case <-ctx.Done():
			if sn, err := c.Session(context.Background(), b.ID); err == nil {
				t.Logf("the user's session: self %+v, partner %+v, connected %v, met %v", sn.Self, sn.Partner, sn.Connected, sn.Met)
			}
			for _, p := range d.peers {
				if p.n == nil {
					continue // a partner away from its laptop
				}
				for _, s := range p.n.Sessions().Sessions() {
					st := s.State()
					t.Logf("%s's session %s: phase %s, self %+v, browser %v, connected %v", p.persona.name, s.ID(), st.Phase, st.Self, st.Browser, st.Connected)
				}
			}
			t.Fatalf("session did not finish; phases %v, video %v, greeted %v", phases, partnerVideo, greeted)
		}
		var se apiv1.SessionEvent
		if ev.Type == apiv1.EventSession && (json.Unmarshal(ev.Data, &se) != nil || se.Booking != b.ID) {
			continue
		}
		switch se.Type {
		case session.EventPhase:
			phases = append(phases, se.Phase)
			if se.Phase == session.PhaseWarning {
				d.FastForward(100, end)
			}
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
		if partnerVideo && greeted && !fast {
			fast = true
			s, err := c.Session(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			end = s.Booking.End()
			d.FastForward(100, end.Add(-session.WarningBefore))
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

// The demo clock changes pace without a jump, and FastForward stops at its
// mark (real time from there) however late anyone looks at it.
func TestClockFastForward(t *testing.T) {
	c := NewClock(100)
	before := c.Now()
	c.SetRate(1)
	if c.Now().Before(before) || c.Rate() != 1 {
		t.Fatalf("SetRate(1): now %v before %v, rate %v", c.Now(), before, c.Rate())
	}
	stop := c.Now().Add(time.Hour)
	t0 := time.Now()
	c.FastForward(1e6, stop) // the hour passes in 3.6 ms
	nodetest.WaitFor(t, 10*time.Second, func() bool { return !c.Now().Before(stop) }, "the clock to reach %v", stop)
	// From the stop on it runs at real time: never more past it than the
	// real time since FastForward (a million times that without the stop).
	now, elapsed := c.Now(), time.Since(t0)
	if past := now.Sub(stop); past > elapsed {
		t.Errorf("%v past the stop after %v of real time", past, elapsed)
	}
	if c.Rate() != 1 {
		t.Errorf("rate past the stop = %v, want 1", c.Rate())
	}
	// A stop already passed: real time from now, no jump back.
	before = c.Now()
	c.FastForward(100, before.Add(-time.Minute))
	if got := c.Now(); got.Before(before) || c.Rate() != 1 {
		t.Errorf("FastForward to the past: now %v (was %v), rate %v", got, before, c.Rate())
	}
}
