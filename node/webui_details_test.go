package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// slotCSS is the calendar's button for the quarter-hour starting at t.
func slotCSS(t time.Time) string {
	return fmt.Sprintf(`.slot[data-start=%q]`, t.UTC().Format("2006-01-02T15:04:05.000Z"))
}

// TestWebUIDetails: one browser (Ada, in Berlin time) and Bo's
// node driven through its API.
//   - Booking Bo's open slot: the dialog names Bo and starts from a length
//     and activity that match Bo's offer (not Ada's default 50 minutes),
//     and warns while the choices match nobody there.
//   - A focused booking block keeps the keyboard focus when the calendar
//     repaints, and shows a focus ring.
//   - Times carry their time zone.
//   - When Bo cancels, Ada is told on whatever screen she is.
//   - On a 390 px wide screen the navigation shows every item.
//   - The Network screen's Copy button keeps the focus when it repaints.
func TestWebUIDetails(t *testing.T) {
	path := skipWithoutChromium(t)
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Name, cfgB.Name = "Ada", "Bo"
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	br, err := startUIBrowser(t, path, "a")
	if err != nil {
		t.Fatal(err)
	}
	shots := newScreenshots(t)
	tctx, cancel := context.WithTimeout(br.ctx, 10*time.Second)
	if _, err := chromedp.Call(tctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	nodetest.WaitFor(t, 10*time.Second, func() bool { return a.Status().ConnectedPeers > 0 }, "the nodes to connect")
	br.login(a)

	// Bo offers 25 minutes at his desk, three hours from now.
	ctx := context.Background()
	cb := apiClientFor(b)
	slot := time.Now().Truncate(time.Hour).Add(3 * time.Hour)
	bo, err := cb.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: slot, DurationMin: 25, Activity: "desk"})
	if err != nil {
		t.Fatal(err)
	}
	sel := slotCSS(slot)
	// On Ada's node first, then in her calendar: a failure says which one
	// missed it.
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		return slices.ContainsFunc(a.Matchmaking().Board(time.Time{}, time.Time{}), func(o matchmaking.BoardOffer) bool { return o.BookingID == bo.ID })
	}, "Bo's offer on Ada's node")
	br.waitJS("Bo's offer in the calendar", 15*time.Second, fmt.Sprintf(`document.querySelector('%s .offers').textContent === '1'`, sel))
	br.do("scrolling to the slot", 5*time.Second, chromedp.ScrollIntoView(chromedp.CSS(sel)))
	br.click(sel)
	br.waitJS("the booking dialog", 5*time.Second, `!!document.querySelector('#book-dialog[open]')`)
	checked := func(name string) string {
		return uiEval[string](br, fmt.Sprintf(`document.querySelector('#book-dialog input[name=%s]:checked')?.value || ''`, name))
	}
	if got := uiEval[string](br, `document.getElementById('book-offers')?.textContent || ''`); !strings.Contains(got, "Bo") {
		t.Errorf("the dialog does not name Bo: %q", got)
	}
	if d, act := checked("duration"), checked("activity"); d != "25" || (act != "anything" && act != "desk") {
		t.Errorf("the dialog starts from %s min, %s; want 25 min and an activity that goes with desk", d, act)
	}
	if !uiEval[bool](br, `document.getElementById('book-warning').hidden`) {
		t.Errorf("the dialog warns while its choices match Bo: %q", uiEval[string](br, `document.getElementById('book-warning').textContent`))
	}
	zone := uiEval[string](br, `new Intl.DateTimeFormat([], {timeZoneName: 'short'}).formatToParts(new Date()).find(p => p.type === 'timeZoneName').value`)
	if title := uiEval[string](br, `document.querySelector('#book-dialog h2').textContent`); zone == "" || !strings.Contains(title, zone) {
		t.Errorf("the dialog's title %q does not say the time zone (%q)", title, zone)
	}
	shots.take(br, "booking-dialog-offer")
	br.click(`#book-dialog input[name=duration][value="50"]`)
	br.waitJS("the no-match warning", 5*time.Second,
		`!document.getElementById('book-warning').hidden && /Nobody here matches 50 min/.test(document.getElementById('book-warning').textContent) && /Bo: 25 min · desk/.test(document.getElementById('book-warning').textContent)`)
	shots.take(br, "booking-dialog-no-match")
	br.click(`#book-dialog input[name=duration][value="25"]`)
	br.waitJS("the warning to go", 5*time.Second, `document.getElementById('book-warning').hidden`)
	br.click("#book-submit")
	br.waitJS("the match with Bo", 20*time.Second, `document.querySelector('.booking-block.matched .bk-who')?.textContent === 'with Bo'`)

	// Times say their zone.
	if got := uiEval[string](br, `document.getElementById('time-zone').textContent`); !strings.Contains(got, "Europe/Berlin") {
		t.Errorf("the calendar's time zone line says %q", got)
	}
	if got := uiEval[string](br, `document.querySelector('#upcoming-list .upcoming-item strong').textContent`); !strings.HasSuffix(got, " "+zone) {
		t.Errorf("the upcoming session's time %q has no zone (%q)", got, zone)
	}

	// Focus a booking block as a keyboard user would; it shows a ring.
	uiEval[bool](br, `(() => { const b = document.querySelector('.booking-block.matched'); b.__probe = true; b.focus({focusVisible: true}); return true; })()`)
	if ring := uiEval[string](br, `getComputedStyle(document.activeElement).boxShadow`); !strings.Contains(ring, "rgb(255, 191, 71)") {
		t.Errorf("a focused booking block has no focus ring: box-shadow %q", ring)
	}
	// Bo opens another slot: the calendar repaints; the focus stays put.
	later := slot.Add(2 * time.Hour)
	if _, err := cb.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: later, DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	br.waitJS("the repaint with Bo's second offer", 15*time.Second, fmt.Sprintf(`document.querySelector('%s .offers').textContent === '1'`, slotCSS(later)))
	if !uiEval[bool](br, `document.activeElement?.__probe === true`) {
		t.Errorf("the repaint moved the focus to %s", uiEval[string](br, `document.activeElement?.outerHTML.slice(0, 120) || 'nothing'`))
	}
	shots.take(br, "calendar-focus")

	// Bo cancels; Ada, on another screen, is told.
	br.goTo("history", `!!document.getElementById('history-list')`)
	if _, err := cb.Cancel(ctx, bo.ID, "dentist"); err != nil {
		t.Fatal(err)
	}
	br.waitJS("the partner-cancelled notice", 15*time.Second,
		fmt.Sprintf(`[...document.querySelectorAll('#notices .notice')].some(n => n.textContent.startsWith('Bo cancelled your session on ') && n.textContent.includes(%q) && n.textContent.includes('dentist'))`, zone))
	shots.take(br, "partner-cancelled")
	br.click("#notices .notice button")
	br.waitJS("the notice dismissed", 5*time.Second, `document.querySelectorAll('#notices .notice').length === 0`)

	// A phone-sized screen: every navigation item is on screen.
	br.do("narrowing the window", 5*time.Second, chromedp.EmulateViewport(390, 800))
	br.goTo("calendar", `document.querySelectorAll('.slot').length === 7*96`)
	if hidden := uiEval[[]string](br, `[...document.querySelectorAll('#nav a')].filter(a => {
		const r = a.getBoundingClientRect(), nav = document.getElementById('nav').getBoundingClientRect();
		return !(r.width > 0 && r.left >= 0 && r.right <= innerWidth && r.left >= nav.left - 1 && r.right <= nav.right + 1);
	}).map(a => a.textContent)`); len(hidden) > 0 {
		t.Errorf("at 390 px the navigation hides %v", hidden)
	}
	shots.take(br, "nav-narrow")

	// The Network screen repaints on every peer event (and every 15 s);
	// its Copy button keeps the keyboard focus.
	br.do("widening the window", 5*time.Second, chromedp.EmulateViewport(1280, 800))
	br.goTo("network", `document.getElementById('peer-count')?.textContent === '1'`)
	copyBtn := `[...document.querySelectorAll('#screen button')].find(b => b.textContent === 'Copy')`
	if !uiEval[bool](br, `(() => { const b = `+copyBtn+`; b.focus(); return document.activeElement === b; })()`) {
		t.Fatal("could not focus the Copy button")
	}
	cfgC := nodetest.Config(t)
	nodetest.Link(t, &cfgC, a)
	nodetest.Start(t, cfgC)
	br.waitJS("the repaint with Cy's node", 15*time.Second, `document.getElementById('peer-count')?.textContent === '2'`)
	if got := uiEval[string](br, `document.activeElement === `+copyBtn+` ? 'Copy' : document.activeElement.outerHTML.slice(0, 80)`); got != "Copy" {
		t.Errorf("after a repaint of the Network screen the focus is on %q", got)
	}
	br.checkConsole()
}
