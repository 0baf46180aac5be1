package node_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/demo"
	"github.com/tandem-cowork/tandem/session"
)

// TestWebUIDemo: `tandem demo` in the browser. The demo's partners answer
// "Focus now" from the UI, send their test-pattern video and a goal; the
// room's timer follows the demo's compressed clock (100x here), every
// chime plays, and the check-in ends the session into history.
func TestWebUIDemo(t *testing.T) {
	path := skipWithoutChromium(t)
	d, err := demo.Start(demo.Options{
		DataDir: t.TempDir(), API: "127.0.0.1:0", ClockRate: 100, Partners: 2, Seed: 7,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	br, err := startUIBrowser(t, path, "demo")
	if err != nil {
		t.Fatal(err)
	}
	br.login(d.User)
	shots := newScreenshots(t)
	if got := uiEval[string](br, `document.querySelector('.topbar .chip.demo')?.textContent || ''`); got != "demo, clock ×100" {
		t.Errorf("header chip = %q", got)
	}

	// 25 minutes by default from now on, set in Settings.
	br.goTo("settings", `!!document.querySelector('#settings-form input[name=duration]')`)
	br.click(`#settings-form input[name=duration][value="25"]`)
	br.click("#save-settings")
	br.waitJS("the settings saved", 5*time.Second, `document.getElementById('settings-saved').textContent === 'Saved.'`)
	br.goTo("calendar", `/^25 min/.test(document.getElementById('focus-now-info')?.textContent || '')`)
	br.waitJS("the demo partners' open slots", 20*time.Second, `!!document.querySelector('.offers.badge')`)
	shots.take(br, "demo-calendar")

	// Real time until the partner is here with video and a goal: at 100x,
	// a partner still connecting after three real seconds (a busy
	// machine) would be a no-show. Then fast up to the warning and to the
	// end, real time from each (the clock stops there), so no phase and
	// no chime is skipped however late a goroutine runs.
	d.SetClockRate(1)
	br.click("#focus-now")
	clicked := time.Now()
	br.waitJS("the partner's video", 30*time.Second, partnerVideoFirstFrame)
	t.Logf("demo: Focus now to the demo partner's video: %v", time.Since(clicked).Round(time.Millisecond))
	br.waitJS("the partner's video to advance", 10*time.Second, partnerVideoAdvancing)
	br.waitJS("the partner's goal", 15*time.Second, `document.getElementById('partner-goal').textContent.length > 0 && !document.getElementById('partner-goal').classList.contains('empty')`)

	// The timer runs on the node's clock: 100 times faster than the wall.
	left := func() int {
		var m, s int
		text := uiEval[string](br, `document.getElementById('timer').textContent`)
		if mm, ss, ok := strings.Cut(text, ":"); ok {
			m, _ = strconv.Atoi(mm)
			s, _ = strconv.Atoi(ss)
		}
		return m*60 + s
	}
	ss, err := apiClientFor(d.User).Sessions(context.Background())
	if err != nil || len(ss) != 1 {
		t.Fatalf("sessions = %+v, %v", ss, err)
	}
	end := ss[0].Booking.End()
	first := left()
	d.FastForward(100, end.Add(-session.WarningBefore))
	// 30 s of the node's clock pass in 0.3 s; the UI follows the node's
	// pace (re-synced by the clock event), not its own.
	br.waitJS("the timer to move on 30 s", 15*time.Second, `(() => { const [m, s] = document.getElementById('timer').textContent.split(':').map(Number); return m*60 + s <= `+strconv.Itoa(first-30)+`; })()`)
	shots.take(br, "demo-session")
	br.waitJS("the warning chime", 30*time.Second, `document.documentElement.dataset.lastChime === 'warning'`)
	d.FastForward(100, end)

	br.waitJS("the check-in dialog", 30*time.Second, `!!document.querySelector('#checkin-dialog[open]')`)
	br.click(`#checkin-dialog input[name=outcome][value=done]`)
	br.click("#checkin-submit")
	br.waitJS("the session summary", 30*time.Second, `!!document.querySelector('#ended .ended-goals')`)
	if got := uiEval[string](br, `document.documentElement.dataset.chimes || ''`); got != "start warning end" {
		t.Errorf("chimes played: %q, want start, warning, end", got)
	}
	h, err := apiClientFor(d.User).History(context.Background())
	if err != nil || len(h) != 1 || !h[0].Met || h[0].CheckIn == nil {
		t.Errorf("history = %+v, %v", h, err)
	}
	br.checkConsole()
}
