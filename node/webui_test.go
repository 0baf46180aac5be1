package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// The web UI in a real headless Chromium (Debian's package), driven with
// chromedp: two nodes, two browsers with fake cameras, each using the UI
// as a person would. Skipped with -short or when chromium is missing.
//
// TANDEM_UPDATE_SCREENSHOTS=1 also writes the screenshots to
// docs/screenshots/ (the README shows them).

const chromiumPath = "/usr/bin/chromium"

// uiBrowser is one browser (its own process and profile) with one tab.
type uiBrowser struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu       sync.Mutex
	problems []string // console errors and uncaught exceptions
	// allow says which error messages a test expects (e.g. a 401).
	allow func(msg string) bool
}

// skipWithoutChromium skips the test with -short or without Chromium, and
// returns the browser's path.
func skipWithoutChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts headless Chromium (skipped with -short)")
	}
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skipf("the web UI tests need Chromium at %s (Debian: apt-get install chromium); not found", chromiumPath)
	return ""
}

func newUIBrowser(t *testing.T, name string) *uiBrowser {
	t.Helper()
	b, err := startUIBrowser(t, skipWithoutChromium(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startUIBrowser starts a browser with a fresh profile, fake camera and
// microphone, and a 1280x800 window, and collects its console errors. It
// does not call t.Fatal, so two can start in parallel goroutines.
func startUIBrowser(t *testing.T, path, name string) (*uiBrowser, error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), name+"-profile")),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &uiBrowser{t: t, name: name, ctx: ctx}
	// The first call starts the browser; it must not carry a timeout (that
	// would stop the browser when it expires).
	if err := chromedp.Do(ctx); err != nil {
		return nil, fmt.Errorf("starting chromium for %s: %w", name, err)
	}
	// The page gets all of the 1280x800 window (the readable size the UI
	// is designed for).
	vctx, vcancel := context.WithTimeout(ctx, 10*time.Second)
	defer vcancel()
	if err := chromedp.Do(vctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		return nil, fmt.Errorf("sizing %s's viewport: %w", name, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleException, "assert":
				text := fmt.Sprintf("%s %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text)
				b.mu.Lock()
				if b.allow == nil || !b.allow(text) {
					b.problems = append(b.problems, text)
				}
				b.mu.Unlock()
			}
		}
	}()
	return b, nil
}

// allowErrors makes console errors that contain substr expected.
func (b *uiBrowser) allowErrors(substr ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allow = func(msg string) bool {
		for _, s := range substr {
			if !strings.Contains(msg, s) {
				return false
			}
		}
		return true
	}
}

// checkConsole fails the test if the page logged an error or threw.
func (b *uiBrowser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("%s: JavaScript console: %s", b.name, p)
	}
}

// do runs steps with a deadline. The UI repaints by replacing elements, so
// an element a query found can be gone by the time it is clicked or typed
// into ("Could not find node with given id"): then nothing happened, and
// the steps run again, querying afresh, until the deadline.
func (b *uiBrowser) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	retry := time.NewTicker(40 * time.Millisecond)
	defer retry.Stop()
	for {
		err := chromedp.Do(ctx, steps...)
		if err == nil {
			return
		}
		if !staleNode(err) || ctx.Err() != nil {
			b.fail(what, err)
			return
		}
		select {
		case <-retry.C:
		case <-ctx.Done():
			b.fail(what, err)
			return
		}
	}
}

// staleNode: the element was replaced between the query and the action.
func staleNode(err error) bool {
	if errors.Is(err, chromedp.ErrInvalidBoxModel) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"Could not find node with given id", "No node with given id", "Node is detached", "Node does not have a layout object", "Cannot find context with specified id"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// eval returns the value of a JavaScript expression.
func uiEval[T any](b *uiBrowser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("evaluating "+expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it holds.
func (b *uiBrowser) waitJS(what string, timeout time.Duration, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+time.Second)
	defer cancel()
	// An element that is not there yet is "not yet", not an error.
	guarded := `(() => { try { return !!(` + expr + `); } catch (e) { return false; } })()`
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](guarded,
		chromedp.WithPollingInterval(40*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.fail("waiting for "+what, err)
	}
}

func (b *uiBrowser) fail(what string, err error) {
	b.t.Helper()
	// Outside the test's temp dir, which is removed when the test ends.
	dir := filepath.Join(os.TempDir(), "tandem-webui-failures", b.t.Name())
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, serr := chromedp.Run(ctx, chromedp.CaptureScreenshot()); serr == nil {
		p := filepath.Join(dir, b.name+".png")
		os.WriteFile(p, png, 0o644)
		b.t.Logf("%s: screenshot at failure: %s", b.name, p)
	}
	if text, terr := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`)); terr == nil {
		b.t.Logf("%s: page text at failure:\n%s", b.name, text)
	}
	b.mu.Lock()
	for _, p := range b.problems {
		b.t.Logf("%s: console: %s", b.name, p)
	}
	b.mu.Unlock()
	b.t.Fatalf("%s: %s: %v", b.name, what, err)
}

// login opens the node's login link; the UI lands on the calendar.
func (b *uiBrowser) login(n *node.Node) {
	b.t.Helper()
	b.do("opening the login link", 15*time.Second, chromedp.Navigate(n.LoginURL()))
	b.waitJS("the calendar", 15*time.Second, `!!document.querySelector('#focus-now') && document.querySelectorAll('.slot').length === 7*96`)
}

func (b *uiBrowser) click(sel string) {
	b.t.Helper()
	b.do("clicking "+sel, 10*time.Second, chromedp.Click(chromedp.CSS(sel)))
}

func (b *uiBrowser) typeInto(sel, text string) {
	b.t.Helper()
	b.do("typing into "+sel, 10*time.Second, chromedp.WaitEnabled(chromedp.CSS(sel)), chromedp.SendKeys(chromedp.CSS(sel), text))
}

// goTo shows another screen (as a click on the navigation does).
func (b *uiBrowser) goTo(route, readyExpr string) {
	b.t.Helper()
	b.click(fmt.Sprintf(`#nav a[data-route=%q]`, route))
	b.waitJS(route+" screen", 10*time.Second, readyExpr)
}

// screenshots saves named screenshots under the test's temp dir, and to
// docs/screenshots when TANDEM_UPDATE_SCREENSHOTS=1.
type screenshots struct {
	t   *testing.T
	dir string
}

func newScreenshots(t *testing.T) *screenshots {
	dir := filepath.Join(t.TempDir(), "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return &screenshots{t: t, dir: dir}
}

func (s *screenshots) take(b *uiBrowser, name string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	// Let pending paints (and the fake camera's next frames) land.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, chromedp.EvalAwaitPromise)); err != nil {
		b.fail("waiting for a frame", err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.fail("taking screenshot "+name, err)
	}
	p := filepath.Join(s.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("screenshot %s", p)
	if os.Getenv("TANDEM_UPDATE_SCREENSHOTS") == "1" {
		docs := filepath.Join("..", "docs", "screenshots")
		if err := os.MkdirAll(docs, 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(docs, name+".png"), png, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
}

// partnerVideoFirstFrame: the partner's video has decoded a frame and plays.
const partnerVideoFirstFrame = `(() => {
  const v = document.getElementById('partner-video');
  return !!v && v.videoWidth > 0 && v.readyState >= 2 && !v.paused;
})()`

// selfVideoPlaying: the user's own camera preview shows.
const selfVideoPlaying = `(() => { const v = document.getElementById('self-video'); return !!v && v.videoWidth > 0 && !v.paused; })()`

// partnerVideoAdvancing: currentTime moves on between two polls.
const partnerVideoAdvancing = `(() => {
  const v = document.getElementById('partner-video');
  if (!v || v.videoWidth === 0) return false;
  const prev = window.__probeT;
  window.__probeT = v.currentTime;
  return prev !== undefined && v.currentTime > prev;
})()`

// uiPair is two nodes on one injected clock, B dialling A, each with a
// display name, and a browser logged in to each.
type uiPair struct {
	clock  *nodetest.Clock
	a, b   *node.Node
	ba, bb *uiBrowser
}

func newUIPair(t *testing.T) *uiPair {
	t.Helper()
	path := skipWithoutChromium(t)
	p := &uiPair{clock: &nodetest.Clock{}}
	cfgA := nodetest.Config(t)
	cfgA.Now, cfgA.Name = p.clock.Now, "Ada"
	p.a = nodetest.Start(t, cfgA)
	cfgB := nodetest.Config(t)
	cfgB.Now, cfgB.Name = p.clock.Now, "Bo"
	nodetest.Link(t, &cfgB, p.a)
	p.b = nodetest.Start(t, cfgB)

	// Both browsers start at once: it is the slowest step.
	var wg sync.WaitGroup
	var errA, errB error
	wg.Add(2)
	go func() { defer wg.Done(); p.ba, errA = startUIBrowser(t, path, "a") }()
	go func() { defer wg.Done(); p.bb, errB = startUIBrowser(t, path, "b") }()
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("starting the browsers: %v; %v", errA, errB)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool { return p.a.Status().ConnectedPeers > 0 && p.b.Status().ConnectedPeers > 0 }, "the nodes to connect")
	p.ba.login(p.a)
	p.bb.login(p.b)
	return p
}

// TestWebUIFocusNow: both users press "Focus now", meet in the session
// room with video, see each other's goals, chat, and check in at the end.
func TestWebUIFocusNow(t *testing.T) {
	p := newUIPair(t)
	shots := newScreenshots(t)
	ba, bb := p.ba, p.bb
	shots.take(ba, "calendar")

	// Both press Focus now; the room opens by itself once matched.
	ba.click("#focus-now")
	clickedA := time.Now()
	shots.take(ba, "finding-a-partner")
	bb.click("#focus-now")
	bothClicked := time.Now()

	var wg sync.WaitGroup
	elapsed := map[string]time.Duration{}
	var mu sync.Mutex
	for _, br := range []*uiBrowser{ba, bb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(br.ctx, 40*time.Second)
			defer cancel()
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](partnerVideoFirstFrame,
				chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(39*time.Second)))
			d := time.Since(bothClicked)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("%s: partner video never played: %v", br.name, err)
				return
			}
			elapsed[br.name] = d
		}()
	}
	wg.Wait()
	if t.Failed() {
		ba.fail("partner video", fmt.Errorf("see above"))
	}
	t.Logf("click-to-video: from both Focus now clicks (B's, the later) to the partner's video playing: tab A %v, tab B %v; from A's own click: %v (A clicked %v before B)",
		elapsed["a"].Round(time.Millisecond), elapsed["b"].Round(time.Millisecond),
		(elapsed["a"] + bothClicked.Sub(clickedA)).Round(time.Millisecond), bothClicked.Sub(clickedA).Round(time.Millisecond))
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the partner's video to advance", 10*time.Second, partnerVideoAdvancing)
	}

	// Goals, set in the room, reach the partner.
	ba.typeInto("#my-goal", "draft the intro")
	ba.click("#save-goal")
	bb.typeInto("#my-goal", "inbox zero")
	bb.click("#save-goal")
	ba.waitJS("B's goal in A's room", 10*time.Second, `document.getElementById('partner-goal').textContent === 'inbox zero'`)
	bb.waitJS("A's goal in B's room", 10*time.Second, `document.getElementById('partner-goal').textContent === 'draft the intro'`)

	// Chat from A appears in B.
	ba.typeInto("#chat-input", "hi Bo, starting now\n")
	bb.waitJS("A's chat line in B", 10*time.Second,
		`[...document.querySelectorAll('#chat-log .chat-line.partner .text')].some(e => e.textContent === 'hi Bo, starting now')`)
	bb.typeInto("#chat-input", "good luck!\n")
	ba.waitJS("B's chat line in A", 10*time.Second,
		`[...document.querySelectorAll('#chat-log .chat-line.partner .text')].some(e => e.textContent === 'good luck!')`)
	// Two nodes on one machine: the room says the session is direct.
	ba.waitJS("how the session is connected", 10*time.Second, `document.getElementById('conn-path').textContent === 'Connected directly'`)
	if got := uiEval[string](ba, `document.getElementById('phase').textContent`); got != "Focus" {
		t.Errorf("A's phase = %q, want Focus", got)
	}
	ba.waitJS("A's own camera", 10*time.Second, selfVideoPlaying)
	shots.take(ba, "session-room")
	shots.take(bb, "session-room-b")

	// B steps away and comes back; A sees it.
	bb.click("#away-btn")
	ba.waitJS(`"partner away" in A`, 10*time.Second, `document.getElementById('partner-label').textContent === 'Partner away'`)
	bb.click("#away-btn")
	ba.waitJS("B back in A", 10*time.Second, `document.getElementById('partner-label').hidden`)

	// The end: the clock jumps past it; the check-in dialog opens in both.
	var durMin int
	for _, s := range p.a.Sessions().Sessions() {
		durMin = s.State().Booking.DurationMin
	}
	p.clock.Advance(time.Duration(durMin)*time.Minute + time.Second)
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the check-in dialog", 15*time.Second, `!!document.querySelector('#checkin-dialog[open]')`)
	}
	if got := uiEval[string](ba, `document.documentElement.dataset.lastChime || ''`); got != "end" {
		t.Errorf("last chime in A = %q, want the end chime", got)
	}
	ba.click(`#checkin-dialog input[name=outcome][value=done]`)
	ba.typeInto("#checkin-note", "intro drafted")
	ba.click("#favourite-partner")
	ba.waitJS("the favourite to stick", 5*time.Second, `document.getElementById('favourite-partner').getAttribute('aria-pressed') === 'true'`)
	shots.take(ba, "check-in")
	ba.click("#checkin-submit")
	bb.click(`#checkin-dialog input[name=outcome][value=partly]`)
	bb.click("#checkin-submit")
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the session summary", 15*time.Second, `!!document.querySelector('#ended .ended-goals')`)
	}
	shots.take(ba, "session-over")

	// Both histories hold the session, with both check-ins.
	ctx := context.Background()
	for _, c := range []struct {
		n              *node.Node
		mine, theirs   string
		goal, partnerG string
	}{{p.a, "done", "partly", "draft the intro", "inbox zero"}, {p.b, "partly", "done", "inbox zero", "draft the intro"}} {
		h, err := apiClientFor(c.n).History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1 {
			t.Fatalf("%s history has %d records, want 1", c.n.ID(), len(h))
		}
		r := h[0]
		if !r.Met || r.CheckIn == nil || string(r.CheckIn.Outcome) != c.mine || r.PartnerCheckIn == nil || string(r.PartnerCheckIn.Outcome) != c.theirs ||
			r.Goal != c.goal || r.PartnerGoal != c.partnerG {
			t.Errorf("record = %+v (check-ins %+v / %+v)", r, r.CheckIn, r.PartnerCheckIn)
		}
	}

	// The other screens, as A sees them after the session.
	ba.goTo("history", `document.querySelectorAll('#history-list .record').length === 1 && !!document.querySelector('#weekly-chart svg')`)
	if got := uiEval[string](ba, `document.querySelector('#stat-sessions .value').textContent`); got != "1" {
		t.Errorf("history shows %q sessions, want 1", got)
	}
	shots.take(ba, "history")
	ba.goTo("people", `document.querySelectorAll('#favourites .person').length === 1 && document.querySelectorAll('#recent .person').length === 1`)
	shots.take(ba, "people")
	// Block Bo, then unblock.
	ba.click(`#recent button[data-action="block"]`)
	ba.waitJS("Bo blocked", 5*time.Second, `document.querySelectorAll('#blocked .person').length === 1 && document.querySelectorAll('#favourites .person').length === 0`)
	ba.click(`#blocked button[data-action="unblock"]`)
	ba.waitJS("Bo unblocked", 5*time.Second, `document.querySelectorAll('#blocked .person').length === 0`)

	ba.goTo("settings", `!!document.querySelector('#display-name') && document.getElementById('display-name').value === 'Ada'`)
	shots.take(ba, "settings")
	// A new display name and default duration, saved on the node.
	ba.do("editing the settings", 5*time.Second,
		chromedp.SetValue(chromedp.CSS("#display-name"), "Ada L."),
		chromedp.Click(chromedp.CSS(`#settings-form input[name=duration][value="25"]`)),
		chromedp.Click(chromedp.CSS("#save-settings")))
	ba.waitJS("the settings saved", 5*time.Second, `document.getElementById('settings-saved').textContent === 'Saved.' && document.getElementById('whoami').textContent === 'Ada L.'`)
	if name := p.a.Status().Name; name != "Ada L." {
		t.Errorf("display name on the node = %q", name)
	}
	ba.goTo("network", `document.getElementById('peer-count') && document.getElementById('peer-count').textContent === '1'`)
	shots.take(ba, "network")
	ba.goTo("devices", `(() => { const v = document.getElementById('device-video'); return !!v && v.videoWidth > 0; })()`)
	shots.take(ba, "device-test")
	ba.goTo("calendar", `document.querySelectorAll('.slot').length === 7*96 && /^25 min/.test(document.getElementById('focus-now-info')?.textContent || '')`)

	// A narrow window shows one day at a time.
	ba.do("narrowing the window", 5*time.Second, chromedp.EmulateViewport(390, 800))
	ba.waitJS("one day column", 5*time.Second, `[...document.querySelectorAll('.cal-day')].filter(d => d.offsetWidth > 0).length === 1`)
	shots.take(ba, "calendar-narrow")
	ba.do("widening the window", 5*time.Second, chromedp.EmulateViewport(1280, 800))

	ba.checkConsole()
	bb.checkConsole()
}

// TestWebUIScheduledSlot: both users book the same quarter-hour through the
// calendar (A with the keyboard, B with the mouse, picking A's open slot by
// name); the clock jumps to the lobby, then to the start, and they meet in
// the room. A turns the camera off and leaves early; B sees why.
func TestWebUIScheduledSlot(t *testing.T) {
	p := newUIPair(t)
	shots := newScreenshots(t)
	ba, bb := p.ba, p.bb

	// The grid moves with the arrow keys.
	ba.do("moving through the grid", 5*time.Second,
		chromedp.Focus(chromedp.CSS(`.cal-day[data-day="1"] .slot[data-index="40"]`)),
		chromedp.KeyEvent(kb.ArrowDown), chromedp.KeyEvent(kb.ArrowRight))
	if got := uiEval[string](ba, `document.activeElement.dataset.day + '/' + document.activeElement.dataset.index`); got != "2/41" {
		t.Errorf("after Down and Right the focus is on slot %s, want 2/41", got)
	}

	now := p.clock.Now()
	slot := now.Truncate(15 * time.Minute).Add(15 * time.Minute)
	// At least 5 minutes ahead: the test moves the clock forward to 4
	// minutes before the start, never back.
	if slot.Sub(now) < 5*time.Minute {
		slot = slot.Add(15 * time.Minute)
	}
	slotSel := func(t time.Time) string {
		return fmt.Sprintf(`.slot[data-start=%q]`, t.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	sel := slotSel(slot)
	book := func(br *uiBrowser, goal string) {
		br.waitJS("the booking dialog", 5*time.Second, `!!document.querySelector('#book-dialog[open]')`)
		br.click(`#book-dialog input[name=duration][value="25"]`)
		br.typeInto(`#book-dialog input[name=goal]`, goal)
	}
	// A: keyboard only.
	ba.do("opening the slot with Enter", 5*time.Second, chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(kb.Enter))
	book(ba, "write tests")
	ba.do("submitting with Enter", 5*time.Second, chromedp.KeyEvent(kb.Enter))
	ba.waitJS("the dialog to close", 10*time.Second, `!document.querySelector('#book-dialog')`)
	// An overlapping booking is refused, in words, in the dialog. (The
	// browser logs the 409 answer in the console: expected here.)
	ba.allowErrors("/api/v1/bookings", "409 (Conflict)")
	ba.do("opening the next slot", 5*time.Second, chromedp.Focus(chromedp.CSS(slotSel(slot.Add(15*time.Minute)))), chromedp.KeyEvent(kb.Enter))
	ba.waitJS("the booking dialog", 5*time.Second, `!!document.querySelector('#book-dialog[open]')`)
	ba.click("#book-submit")
	ba.waitJS("the overlap error", 5*time.Second, `(() => { const e = document.querySelector('#book-dialog .error'); return !!e && !e.hidden && /overlaps your booking/i.test(e.textContent); })()`)
	shots.take(ba, "booking-error")
	ba.do("closing the dialog with Escape", 5*time.Second, chromedp.KeyEvent(kb.Escape))
	ba.waitJS("the dialog to close", 5*time.Second, `!document.querySelector('#book-dialog')`)

	// B: sees A's open offer in the slot, and books it with A by name.
	bb.waitJS("A's offer in B's calendar", 10*time.Second, fmt.Sprintf(`document.querySelector('%s .offers').textContent === '1'`, sel))
	bb.click(sel)
	book(bb, "plan the week")
	bb.click(fmt.Sprintf(`#book-dialog input[name=with][value=%q]`, p.a.ID().String()))
	shots.take(bb, "booking-dialog")
	bb.click("#book-submit")
	bb.waitJS("the dialog to close", 10*time.Second, `!document.querySelector('#book-dialog')`)

	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the matched booking in the calendar", 20*time.Second, `!!document.querySelector('.booking-block.matched')`)
	}
	// "confirming with Bo…" until Bo's node has acknowledged the match.
	ba.waitJS("A's booking with Bo", 20*time.Second, `document.querySelector('.booking-block.matched .bk-who')?.textContent === 'with Bo'`)
	shots.take(ba, "calendar-booked")

	// Four minutes before the start the lobby is open: A goes in first.
	p.clock.Advance(slot.Sub(p.clock.Now()) - 4*time.Minute)
	ba.waitJS("the lobby banner", 15*time.Second, `!!document.querySelector('#live-banner:not([hidden]) #join-live')`)
	ba.click("#join-live")
	ba.waitJS("the lobby", 10*time.Second, `document.getElementById('phase')?.textContent === 'Lobby' && /^[34]:[0-5][0-9]$/.test(document.getElementById('timer').textContent)`)
	ba.waitJS(`"no camera" while B's browser is away`, 10*time.Second, `document.getElementById('partner-label').textContent === 'No camera'`)
	ba.waitJS("A's own camera", 10*time.Second, selfVideoPlaying)
	shots.take(ba, "lobby")
	bb.waitJS("the lobby banner", 15*time.Second, `!!document.querySelector('#live-banner:not([hidden]) #join-live')`)
	bb.click("#join-live")
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the partner's video", 30*time.Second, partnerVideoFirstFrame)
		br.waitJS("the partner's video to advance", 10*time.Second, partnerVideoAdvancing)
	}
	ba.waitJS("B's goal in A's room", 10*time.Second, `document.getElementById('partner-goal').textContent === 'plan the week'`)
	bb.waitJS("A's goal in B's room", 10*time.Second, `document.getElementById('partner-goal').textContent === 'write tests'`)

	// The start: focus, with the start chime on both sides.
	p.clock.Advance(slot.Sub(p.clock.Now()) + time.Second)
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("focus and the start chime", 15*time.Second,
			`document.getElementById('phase').textContent === 'Focus' && document.documentElement.dataset.lastChime === 'start'`)
	}

	// A turns the camera off, then leaves early.
	ba.click("#camera-btn")
	bb.waitJS(`"no camera" in B`, 10*time.Second, `document.getElementById('partner-label').textContent === 'No camera'`)
	ba.click("#leave-btn")
	ba.typeInto("#leave-reason", "fire alarm")
	ba.click("#leave-confirm")
	ba.waitJS("A's summary", 15*time.Second, `!!document.querySelector('#ended')`)
	bb.waitJS("B's summary with A's reason", 15*time.Second,
		`!!document.querySelector('#ended') && document.querySelector('#ended').textContent.includes('fire alarm')`)
	shots.take(bb, "partner-left")
	for _, n := range []*node.Node{p.a, p.b} {
		h, err := apiClientFor(n).History(context.Background())
		if err != nil || len(h) != 1 || !h[0].Met {
			t.Fatalf("history of %s = %+v, %v", n.ID(), h, err)
		}
	}

	// Another slot, two hours later: both book it, then A cancels with a
	// reason, and B's booking says why it is searching again.
	later := slotSel(slot.Add(2 * time.Hour))
	for i, br := range []*uiBrowser{ba, bb} {
		br.goTo("calendar", `document.querySelectorAll('.slot').length === 7*96`)
		if i == 1 {
			br.waitJS("A's offer in B's calendar", 10*time.Second, fmt.Sprintf(`document.querySelector('%s .offers').textContent === '1'`, later))
		}
		br.do("scrolling to the later slot", 5*time.Second, chromedp.ScrollIntoView(chromedp.CSS(later)))
		br.click(later)
		br.waitJS("the booking dialog", 5*time.Second, `!!document.querySelector('#book-dialog[open]')`)
		br.click("#book-submit")
		br.waitJS("the dialog to close", 10*time.Second, `!document.querySelector('#book-dialog')`)
	}
	for _, br := range []*uiBrowser{ba, bb} {
		br.waitJS("the later booking matched", 20*time.Second, `!!document.querySelector('#upcoming-list .upcoming-item.matched')`)
	}
	var laterID string
	bs, err := apiClientFor(p.a).Bookings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Start.Equal(slot.Add(2 * time.Hour)) {
			laterID = b.ID
		}
	}
	if n := uiEval[int](ba, `document.querySelectorAll('#upcoming-list .upcoming-item').length`); n != 1 {
		t.Errorf("A's upcoming list has %d items, want only the later booking (the first session is over)", n)
	}
	ba.click(fmt.Sprintf(`#upcoming-list .upcoming-item[data-id=%q] button`, laterID))
	ba.waitJS("the booking details", 5*time.Second, `!!document.querySelector('#booking-dialog[open] input[name=reason]')`)
	ba.typeInto("#booking-dialog input[name=reason]", "dentist")
	shots.take(ba, "cancel-booking")
	ba.click("#booking-dialog button.danger")
	ba.waitJS("the dialog to close", 10*time.Second, `!document.querySelector('#booking-dialog')`)
	bb.waitJS("the reason at B", 15*time.Second, `[...document.querySelectorAll('#upcoming-list .note')].some(n => n.textContent === 'partner cancelled: dentist')`)
	ba.checkConsole()
	bb.checkConsole()
}

// TestWebUIRematch: the empty chair. A books a slot through the UI and is
// matched with B, whose node then goes away. Two minutes after the start
// A's room offers a new partner; A takes it and is back to "finding a
// partner" with a "now" booking.
func TestWebUIRematch(t *testing.T) {
	path := skipWithoutChromium(t)
	clock := &nodetest.Clock{}
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Now, cfgA.Name = clock.Now, "Ada"
	cfgB.Now, cfgB.Name = clock.Now, "Bo"
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	br, err := startUIBrowser(t, path, "a")
	if err != nil {
		t.Fatal(err)
	}
	br.login(a)
	shots := newScreenshots(t)

	slot := clock.Now().Add(time.Hour).Truncate(15 * time.Minute)
	ctx := context.Background()
	if _, err := apiClientFor(b).Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	br.do("scrolling to the slot", 5*time.Second, chromedp.ScrollIntoView(chromedp.CSS(fmt.Sprintf(`.slot[data-start=%q]`, slot.UTC().Format("2006-01-02T15:04:05.000Z")))))
	br.click(fmt.Sprintf(`.slot[data-start=%q]`, slot.UTC().Format("2006-01-02T15:04:05.000Z")))
	br.waitJS("the booking dialog", 5*time.Second, `!!document.querySelector('#book-dialog[open]')`)
	br.click("#book-submit")
	br.waitJS("the match with B", 20*time.Second, `!!document.querySelector('.booking-block.matched')`)
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		bs, _ := apiClientFor(a).Bookings(ctx)
		return len(bs) == 1 && bs[0].Confirmed
	}, "the match to be confirmed")
	if err := b.Stop(); err != nil { // B's laptop is closed
		t.Fatal(err)
	}

	clock.Advance(slot.Sub(clock.Now()) + 2*time.Minute + time.Second)
	br.waitJS("the live-session banner", 15*time.Second, `!!document.querySelector('#live-banner:not([hidden]) #join-live')`)
	br.click("#join-live")
	br.waitJS("the rematch offer", 15*time.Second, `!!document.querySelector('#rematch-banner #rematch-btn')`)
	br.waitJS("A's own camera", 10*time.Second, selfVideoPlaying)
	if got := uiEval[string](br, `document.getElementById('partner-label').textContent`); got != "Bo has not arrived yet" {
		t.Errorf("partner label = %q", got)
	}
	shots.take(br, "partner-late")
	br.click("#rematch-btn")
	br.waitJS("finding a new partner", 10*time.Second, `location.hash === '#/calendar' && !!document.querySelector('#searching .searching-card')`)
	bs, err := apiClientFor(a).Bookings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var now, cancelled int
	for _, x := range bs {
		switch {
		case x.Kind == "now" && x.State == "searching":
			now++
		case x.State == "cancelled":
			cancelled++
		}
	}
	if now != 1 || cancelled != 1 {
		t.Errorf("bookings after the rematch: %+v", bs)
	}
	br.checkConsole()
}

// TestWebUILogin: the login link sets an HttpOnly cookie and opens the
// calendar; without it the API answers 401 and the UI says where the link is.
func TestWebUILogin(t *testing.T) {
	skipWithoutChromium(t)
	n := nodetest.Start(t, nodetest.Config(t))
	br := newUIBrowser(t, "login")
	// The page's own request for /api/v1/status is expected to fail.
	br.allowErrors("/api/v1/status", "401 (Unauthorized)")
	shots := newScreenshots(t)

	resp, err := http.Get(n.APIURL() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/status without a token: %d, want 401", resp.StatusCode)
	}

	br.do("opening the UI", 10*time.Second, chromedp.Navigate(n.APIURL()+"/"))
	br.waitJS("the login page", 10*time.Second, `!document.getElementById('login-needed').hidden`)
	if got := uiEval[string](br, `document.getElementById('login-needed').innerText`); !strings.Contains(got, "Open your login link") || !strings.Contains(got, n.APIURL()+"/login?token=") {
		t.Errorf("login page says %q", got)
	}
	if uiEval[bool](br, `!document.getElementById('nav').hidden`) {
		t.Error("the navigation shows without a login")
	}
	shots.take(br, "login")

	br.login(n)
	if loc := uiEval[string](br, `location.href`); strings.Contains(loc, "token") {
		t.Errorf("the token stayed in the address bar: %s", loc)
	}
	if uiEval[string](br, `document.cookie`) != "" {
		t.Error("the token cookie is readable from JavaScript")
	}
	ctx, cancel := context.WithTimeout(br.ctx, 5*time.Second)
	defer cancel()
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{n.APIURL()}})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, c := range cookies.Cookies {
		if strings.HasPrefix(c.Name, "tandem_token_") {
			found = true
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("cookie %s: HttpOnly %v, SameSite %v", c.Name, c.HTTPOnly, c.SameSite)
			}
		}
	}
	if !found {
		t.Errorf("no token cookie after login; cookies: %+v", cookies.Cookies)
	}
	if got := uiEval[string](br, `document.getElementById('whoami').textContent`); got != "" {
		t.Logf("logged in as %q", got)
	}
	br.checkConsole()
}

func apiClientFor(n *node.Node) *client.Client { return client.New(n.APIURL(), n.Token()) }

// bookFocusNowPair books a 25-minute "now" session on both nodes and
// returns their API clients and bookings.
func bookFocusNowPair(t *testing.T, a, b *node.Node) (ca, cb *client.Client, ba, bb apiv1.Booking) {
	t.Helper()
	ca, cb = apiClientFor(a), apiClientFor(b)
	for _, x := range []struct {
		c  *client.Client
		bk *apiv1.Booking
	}{{ca, &ba}, {cb, &bb}} {
		bk, err := x.c.Book(context.Background(), apiv1.BookRequest{Kind: "now", DurationMin: 25})
		if err != nil {
			t.Fatal(err)
		}
		*x.bk = bk
	}
	return ca, cb, ba, bb
}

// TestUIBrowserClickRepaintedNode: the UI repainted the element between
// the query and the click (the page replaces it once, right there), as
// happened under load ("Could not find node with given id"); do queries
// again and the click lands, once.
func TestUIBrowserClickRepaintedNode(t *testing.T) {
	br := newUIBrowser(t, "repaint")
	page := `data:text/html,<button id="b" onclick="window.clicks=(window.clicks||0)+1">go</button>`
	br.do("opening the page", 10*time.Second, chromedp.Navigate(page))
	repaint := chromedp.Evaluate[bool](`(() => { if (window.repainted) return false; window.repainted = true;
	  const o = document.getElementById('b'); o.replaceWith(o.cloneNode(true)); return true; })()`)
	br.do("clicking a button repainted under the mouse", 10*time.Second,
		chromedp.QueryAfter(chromedp.CSS("#b"), func(ctx context.Context, tg *chromedp.Target, nodes []*chromedp.Node) (chromedp.Void, error) {
			if _, err := repaint(ctx, tg); err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.MouseClickNode(nodes[0])(ctx, tg)
		}, chromedp.NodeVisible))
	if n := uiEval[int](br, `window.clicks || 0`); n != 1 {
		t.Errorf("%d clicks landed, want 1", n)
	}
}
