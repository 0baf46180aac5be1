package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session"
)

// The endpoints the web UI adds to the API (node/api_ui.go), over HTTP.

func uiRequest(t *testing.T, n *node.Node, method, path, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, n.APIURL()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.Token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestUISettings(t *testing.T) {
	cfg := nodetest.Config(t)
	n := nodetest.Start(t, cfg)

	code, body := uiRequest(t, n, "GET", "/api/v1/settings", "")
	var s node.UISettings
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil {
		t.Fatalf("GET settings: %d %s", code, body)
	}
	if s.DefaultDurationMin != 50 || s.DefaultActivity != "anything" || !s.Sounds || s.AutoRematch || s.RemindBeforeMin != 5 {
		t.Errorf("defaults = %+v", s)
	}

	want := node.UISettings{DefaultDurationMin: 25, DefaultActivity: "desk", DefaultQuiet: true, NotifyReminder: true,
		RemindBeforeMin: 15, NotifyMatch: true, AutoRematch: true, DefaultScope: "circle-first", DefaultOpenAfterMin: 20}
	data, _ := json.Marshal(want)
	if code, body := uiRequest(t, n, "PUT", "/api/v1/settings", string(data)); code != 200 {
		t.Fatalf("PUT settings: %d %s", code, body)
	}
	for _, bad := range []string{
		`{"default_duration_min": 30, "default_activity": "desk"}`,
		`{"default_duration_min": 25, "default_activity": "dancing"}`,
		`{"default_duration_min": 25, "colour": "red"}`,
		`{"remind_before_min": 0}`,
		`{"remind_before_min": 121}`,
		`{"default_scope": "everyone"}`,
		`{"default_open_after_min": -1}`,
		`not json`,
	} {
		code, body := uiRequest(t, n, "PUT", "/api/v1/settings", bad)
		var e apiv1.Error
		if code != http.StatusBadRequest || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Errorf("PUT %s: %d %s, want 400 with an error message", bad, code, body)
		}
	}

	// A page that does not know a setting leaves it alone.
	if code, body := uiRequest(t, n, "PUT", "/api/v1/settings", `{"default_duration_min": 25, "default_activity": "desk"}`); code != 200 ||
		!strings.Contains(body, `"remind_before_min":15`) || !strings.Contains(body, `"notify_match":true`) {
		t.Errorf("PUT without the reminder settings: %d %s, want them kept", code, body)
	}

	// The settings survive a restart.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = nodetest.Start(t, cfg)
	_, body = uiRequest(t, n, "GET", "/api/v1/settings", "")
	var got node.UISettings
	if err := json.Unmarshal([]byte(body), &got); err != nil || got != want {
		t.Errorf("after restart: %+v (%v), want %+v", got, err, want)
	}

	if code, _ := uiRequest(t, n, "GET", "/api/v1/reachability", ""); code != 200 {
		t.Errorf("GET reachability: %d", code)
	}
	var r node.Reachability
	_, body = uiRequest(t, n, "GET", "/api/v1/reachability", "")
	if err := json.Unmarshal([]byte(body), &r); err != nil || !r.LocalOnly || r.Reachability == "" {
		t.Errorf("reachability of a local-only node = %+v (%v)", r, err)
	}
}

// The auto-rematch setting of the UI: B never comes; two minutes after the
// start A's node rematches by itself with C, who is waiting.
func TestUIAutoRematchSetting(t *testing.T) {
	tr := nodetest.StartTrio(t)
	clock, a, b, cfgC := tr.Clock, tr.A, tr.B, tr.CfgC
	ca, cb := apiClientFor(a), apiClientFor(b)
	ctx := context.Background()
	if code, body := uiRequest(t, a, "PUT", "/api/v1/settings",
		`{"default_duration_min": 50, "default_activity": "anything", "sounds": true, "auto_rematch": true}`); code != 200 {
		t.Fatalf("PUT settings: %d %s", code, body)
	}

	slot := clock.Now().Add(time.Hour).Truncate(15 * time.Minute)
	ba, err := ca.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 50})
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
	b.Stop()
	clock.Advance(slot.Sub(clock.Now()) + session.RematchAfter + time.Second)
	// A's node gives up on B by itself: B's booking is cancelled and a
	// "now" booking searches in its place.
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		bs, _ := ca.Bookings(ctx)
		for _, x := range bs {
			if x.Kind == "now" && x.State == "searching" {
				return true
			}
		}
		return false
	}, "A's node to look for a new partner")

	// C comes along (after the clock jump: a "now" request lasts 15 minutes).
	c := nodetest.Start(t, cfgC)
	if _, err := apiClientFor(c).Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 50}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		ss, err := ca.Sessions(ctx)
		if err != nil {
			return false
		}
		for _, s := range ss {
			if s.Booking.ID != ba.ID && s.Booking.Partner == c.ID() && s.Connected {
				return true
			}
		}
		return false
	}, "A to be rematched with C without asking")
}
