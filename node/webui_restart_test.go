package node_test

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestWebUINodeRestart: the login page shows the node's real address; a
// page open in the session room when its node stops says so plainly, and
// carries on by itself, still logged in and without a reload, when the
// node is back on the same data dir and port.
func TestWebUINodeRestart(t *testing.T) {
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
	// While the node is away the browser logs its refused requests, and
	// the login page's own /status request gets 401: both expected.
	br.allow = func(msg string) bool {
		return strings.Contains(msg, "ERR_CONNECTION_REFUSED") || strings.Contains(msg, "ERR_INCOMPLETE_CHUNKED_ENCODING") ||
			strings.Contains(msg, "/api/v1/status") && strings.Contains(msg, "401 (Unauthorized)")
	}
	shots := newScreenshots(t)

	// Not logged in: the page shows this node's own address, not 7480's.
	br.do("opening the UI", 10*time.Second, chromedp.Navigate(a.APIURL()+"/"))
	br.waitJS("the login page", 10*time.Second, `!document.getElementById('login-needed').hidden`)
	if got := uiEval[string](br, `document.getElementById('example-link').textContent`); got != a.APIURL()+"/login?token=…" {
		t.Errorf("the login page's example link is %q, want %s/login?token=…", got, a.APIURL())
	}
	br.login(a)

	// A session with Bo, open in the room.
	ctx := context.Background()
	ca, cb := apiClientFor(a), apiClientFor(b)
	bk, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		ss, _ := ca.Sessions(ctx)
		return len(ss) == 1
	}, "A's session to open")
	br.do("opening the room", 10*time.Second, chromedp.Navigate(fmt.Sprintf("%s/#/session/%s", a.APIURL(), url.PathEscape(bk.ID))))
	br.waitJS("the room", 45*time.Second, `!!document.getElementById('phase') && !!document.querySelector('.room .videos')`)
	uiEval[bool](br, `(window.__sameDocument = true)`)

	u, err := url.Parse(a.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	br.waitJS("the node-stopped notice", 15*time.Second,
		`!document.getElementById('node-down').hidden && /node stopped/i.test(document.getElementById('node-down').textContent) && /reconnecting/i.test(document.getElementById('node-down').textContent)`)
	if got := uiEval[string](br, `getComputedStyle(document.querySelector('.room .videos'), '::after').content`); !strings.Contains(got, "Your node stopped") {
		t.Errorf("the room's video says %q while the node is away", got)
	}
	shots.take(br, "node-stopped")

	cfgA.API = u.Host
	a = nodetest.Start(t, cfgA)
	br.waitJS("the page to recover", 20*time.Second,
		`document.getElementById('node-down').hidden && document.getElementById('login-needed').hidden && document.getElementById('whoami').textContent === 'Ada' && !!document.getElementById('room')`)
	if !uiEval[bool](br, `window.__sameDocument === true`) {
		t.Error("the page reloaded")
	}
	// Still logged in: the page's requests are answered.
	br.goTo("calendar", `document.querySelectorAll('.slot').length === 7*96 && document.getElementById('conn').classList.contains('up')`)
	br.checkConsole()
}

// TestWebUICouldNotConnect: the partner's node is gone when the session
// starts; after session.CouldNotConnectAfter of the node's clock the room
// says that it could not connect, in the node's words, with what it tried.
func TestWebUICouldNotConnect(t *testing.T) {
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

	ctx := context.Background()
	ca := apiClientFor(a)
	slot := clock.Now().Add(time.Hour).Truncate(15 * time.Minute)
	bk, err := ca.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apiClientFor(b).Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		bs, _ := ca.Bookings(ctx)
		return len(bs) == 1 && bs[0].Confirmed
	}, "the match to be confirmed")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(slot.Sub(clock.Now()) + 30*time.Second)
	br.do("opening the room", 10*time.Second, chromedp.Navigate(fmt.Sprintf("%s/#/session/%s", a.APIURL(), url.PathEscape(bk.ID))))
	br.waitJS("the room", 45*time.Second, `!!document.getElementById('phase') && document.getElementById('phase').textContent === 'Focus'`)
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		ss, _ := ca.Sessions(ctx)
		// The node's clock also runs on its own: on a slow machine the
		// 15 s may already be over by the time the room is up.
		return len(ss) == 1 && (ss[0].Connect.State == "connecting" || ss[0].Connect.State == "could-not-connect")
	}, "A's session to start trying")
	clock.Advance(20 * time.Second)
	br.waitJS("the could-not-connect banner", 30*time.Second,
		`!!document.getElementById('connect-banner') && /Could not connect to Bo/.test(document.getElementById('connect-banner').textContent)`)
	ss, err := ca.Sessions(ctx)
	if err != nil || len(ss) != 1 {
		t.Fatal(ss, err)
	}
	// The message counts the seconds of trying: compare without them.
	secs := regexp.MustCompile(`\d+s\b`)
	if got := uiEval[string](br, `document.getElementById('connect-banner').textContent`); !strings.Contains(secs.ReplaceAllString(got, "Ns"), secs.ReplaceAllString(ss[0].Connect.Message, "Ns")) {
		t.Errorf("the banner %q does not carry the node's message %q", got, ss[0].Connect.Message)
	}
	br.click("#connect-banner summary")
	// A repaint with a newer report (its message counts the seconds)
	// leaves the disclosure open.
	msg := uiEval[string](br, `document.querySelector('#connect-banner p').textContent`)
	clock.Advance(5 * time.Second)
	br.typeInto("#my-goal", "wait for Bo")
	br.click("#save-goal")
	br.waitJS("a newer report", 10*time.Second, fmt.Sprintf(`document.querySelector('#connect-banner p').textContent !== %q`, msg))
	if !uiEval[bool](br, `document.querySelector('#connect-banner details').open`) {
		t.Error("a repaint closed the opened disclosure")
	}
	shots.take(br, "could-not-connect")
	br.checkConsole()
}
