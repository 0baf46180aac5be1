package node_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// notifyHook records every Notification the page creates, in
// window.__notes, and still creates the real one.
const notifyHook = `(() => {
  window.__notes = [];
  const Real = window.Notification;
  if (!Real) return;
  window.Notification = new Proxy(Real, {
    construct(target, args) {
      const o = args[1] || {};
      window.__notes.push({ title: String(args[0]), body: String(o.body || ""), tag: String(o.tag || "") });
      return Reflect.construct(target, args);
    },
  });
})();`

type note struct{ Title, Body, Tag string }

func notes(b *uiBrowser) []note {
	b.t.Helper()
	var out []note
	if err := json.Unmarshal([]byte(uiEval[string](b, `JSON.stringify(window.__notes || [])`)), &out); err != nil {
		b.t.Fatal(err)
	}
	return out
}

// waitNote waits for a notification whose title is title and whose body
// contains body.
func waitNote(b *uiBrowser, title, body string) {
	b.t.Helper()
	q, _ := json.Marshal(title)
	w, _ := json.Marshal(body)
	b.waitJS("the notification "+title, 30*time.Second,
		`(window.__notes || []).some((n) => n.title === `+string(q)+` && n.body.includes(`+string(w)+`))`)
}

// TestWebUINotifications: in Chromium with the notification permission
// granted, the user turns on the reminder (10 minutes before) and match
// notifications in Settings; a partner found for a booking is told at
// once, the reminder comes when the node's clock is 9 minutes before the
// start (not 30), and the partner's cancel is told with the reason.
func TestWebUINotifications(t *testing.T) {
	path := skipWithoutChromium(t)
	clock := &nodetest.Clock{}
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Now, cfgB.Now = clock.Now, clock.Now
	cfgA.Name, cfgB.Name = "Ada", "Bo"
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	br, err := startUIBrowser(t, path, "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(br.ctx, 15*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "notifications"},
		Setting:    browser.PermissionSettingGranted, Origin: a.APIURL(),
	}); err != nil {
		t.Fatalf("granting notifications: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: notifyHook}); err != nil {
		t.Fatalf("installing the notification hook: %v", err)
	}
	br.login(a)
	if p := uiEval[string](br, `Notification.permission`); p != "granted" {
		t.Fatalf("Notification.permission = %q, want granted", p)
	}

	br.goTo("settings", `!!document.querySelector('#set-remind_before_min')`)
	br.click("#set-notify_reminder")
	br.click("#set-notify_match")
	br.do("setting the reminder minutes", 10*time.Second, chromedp.SetValue(`#set-remind_before_min`, "10"))
	br.click("#save-settings")
	br.waitJS("settings saved", 10*time.Second, `document.querySelector('#settings-saved').textContent === 'Saved.'`)
	newScreenshots(t).take(br, "settings-notifications")
	ca, cb := apiClientFor(a), apiClientFor(b)
	_, body := uiRequest(t, a, "GET", "/api/v1/settings", "")
	var s apiv1.Settings
	if err := json.Unmarshal([]byte(body), &s); err != nil || !s.NotifyReminder || !s.NotifyMatch || s.RemindBeforeMin != 10 {
		t.Fatalf("settings after saving: %+v (%v)", s, err)
	}
	br.goTo("calendar", `!!document.querySelector('#focus-now')`)

	bg := context.Background()
	start := clock.Now().Truncate(15 * time.Minute).Add(45 * time.Minute)
	ba, err := ca.Book(bg, apiv1.BookRequest{Kind: "scheduled", At: start, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(bg, apiv1.BookRequest{Kind: "scheduled", At: start, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	waitNote(br, "Tandem: partner found", "Bo")
	for _, n := range notes(br) {
		if strings.Contains(n.Title, "starts soon") {
			t.Fatalf("reminder 30+ minutes before the start: %+v", n)
		}
	}

	// The node's clock jumps to 9 minutes before the start.
	clock.Advance(start.Sub(clock.Now()) - 9*time.Minute)
	a.ClockChanged()
	waitNote(br, "Tandem: your session starts soon", "with Bo")

	if _, err := cb.Cancel(bg, bb.ID, "sick today"); err != nil {
		t.Fatal(err)
	}
	waitNote(br, "Tandem: your partner cancelled", "sick today")
	got := notes(br)
	tags := map[string]int{}
	for _, n := range got {
		tags[n.Tag]++
	}
	for _, tag := range []string{"match-" + ba.ID, "remind-" + ba.ID, "cancel-" + ba.ID} {
		if tags[tag] != 1 {
			t.Errorf("%d notifications tagged %s, want 1; all: %+v", tags[tag], tag, got)
		}
	}
	br.checkConsole()
}
