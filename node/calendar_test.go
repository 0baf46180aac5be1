package node_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ics "github.com/arran4/golang-ical"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// feed fetches url as a calendar app does (no API token, no cookie) and
// parses it.
func feed(t *testing.T, url string) (int, *ics.Calendar) {
	t.Helper()
	resp, err := noRedirect.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/calendar") {
		t.Errorf("feed Content-Type %q, want text/calendar", ct)
	}
	cal, err := ics.ParseCalendar(resp.Body)
	if err != nil {
		t.Fatalf("parsing the feed: %v", err)
	}
	return resp.StatusCode, cal
}

func eventByUID(cal *ics.Calendar, uid string) *ics.VEvent {
	for _, e := range cal.Events() {
		if e.Id() == uid {
			return e
		}
	}
	return nil
}

func prop(e *ics.VEvent, p ics.ComponentProperty) string {
	if v := e.GetProperty(p); v != nil {
		return v.Value
	}
	return ""
}

// TestCalendarFeed: the feed of A's bookings, fetched without the API
// token, parses back as iCalendar: the matched session names the partner
// and the goal (with characters iCalendar must escape) and links to the
// session in the UI; a cancelled booking is a cancelled event with the
// same stable UID. A wrong token gets 404; rotating the feed token
// refuses the old URL, leaves the API token alone and survives a restart.
func TestCalendarFeed(t *testing.T) {
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgB.Name = "Bo"
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := apiClientFor(a), apiClientFor(b)
	ctx := context.Background()

	goal := `draft chapter 2, then edit; "ship" it\now`
	ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: goal})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 60*time.Second, func() bool {
		bk, err := a.Matchmaking().Booking(ba.ID)
		return err == nil && bk.State == matchmaking.StateMatched && bk.PartnerName == "Bo"
	}, "A's booking to be matched with Bo")
	at := time.Now().Truncate(15 * time.Minute).Add(3 * time.Hour)
	later, err := ca.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: at, DurationMin: 50})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Cancel(ctx, later.ID, "dentist"); err != nil {
		t.Fatal(err)
	}

	info, err := ca.Calendar(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(info.FeedURL, a.Token()) || !strings.HasPrefix(info.FeedURL, a.APIURL()+"/calendar/") ||
		info.WebcalURL != "webcal://"+strings.TrimPrefix(info.FeedURL, "http://") {
		t.Fatalf("feed URLs %+v: want %s/calendar/... with a token of its own", info, a.APIURL())
	}
	code, cal := feed(t, info.FeedURL)
	if code != http.StatusOK {
		t.Fatalf("GET feed: %d", code)
	}
	e := eventByUID(cal, ba.ID+"@tandem")
	if e == nil {
		t.Fatalf("no event with UID %s@tandem in the feed", ba.ID)
	}
	if s := prop(e, ics.ComponentPropertySummary); !strings.Contains(s, "Bo") {
		t.Errorf("matched event SUMMARY %q does not name the partner Bo", s)
	}
	if d := prop(e, ics.ComponentPropertyDescription); !strings.Contains(d, "Goal: "+goal) {
		t.Errorf("matched event DESCRIPTION %q lacks the goal %q", d, goal)
	}
	if u := prop(e, ics.ComponentPropertyUrl); u != a.APIURL()+"/#/session/"+ba.ID {
		t.Errorf("matched event URL %q, want the session's page", u)
	}
	if s := prop(e, ics.ComponentPropertyStatus); s != "CONFIRMED" {
		t.Errorf("matched event STATUS %q, want CONFIRMED", s)
	}
	stored, _ := a.Matchmaking().Booking(ba.ID)
	if start, err := e.GetStartAt(); err != nil || !start.Equal(stored.Start.Truncate(time.Second)) {
		t.Errorf("DTSTART %v (%v), want %v", start, err, stored.Start)
	}
	c := eventByUID(cal, later.ID+"@tandem")
	if c == nil {
		t.Fatalf("no event for the cancelled booking")
	}
	if s := prop(c, ics.ComponentPropertyStatus); s != "CANCELLED" {
		t.Errorf("cancelled booking's STATUS %q, want CANCELLED", s)
	}
	if start, _ := c.GetStartAt(); !start.Equal(at) {
		t.Errorf("cancelled event starts %v, want %v", start, at)
	}

	// The export through the API token is the same calendar.
	data, err := ca.CalendarICS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := ics.ParseCalendar(strings.NewReader(string(data)))
	if err != nil || len(exp.Events()) != len(cal.Events()) {
		t.Fatalf("export: %v, %d events, feed has %d", err, len(exp.Events()), len(cal.Events()))
	}

	// Wrong tokens: the API token, a made-up one, none, the right one
	// without its ".ics".
	tok := strings.TrimSuffix(strings.TrimPrefix(info.FeedURL, a.APIURL()+"/calendar/"), ".ics")
	for _, bad := range []string{a.Token() + ".ics", strings.Repeat("0", 64) + ".ics", ".ics", tok} {
		if code, _ := feed(t, a.APIURL()+"/calendar/"+bad); code != http.StatusNotFound {
			t.Errorf("GET /calendar/%s: %d, want 404", bad, code)
		}
	}

	apiTok := a.Token()
	rotated, err := ca.RotateCalendar(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.FeedURL == info.FeedURL {
		t.Fatal("rotate kept the feed URL")
	}
	if code, _ := feed(t, info.FeedURL); code != http.StatusNotFound {
		t.Errorf("old feed URL after rotate: %d, want 404", code)
	}
	if code, _ := feed(t, rotated.FeedURL); code != http.StatusOK {
		t.Errorf("new feed URL: %d, want 200", code)
	}
	if a.Token() != apiTok || statusWith(t, a, bearer(a)) != http.StatusOK {
		t.Error("rotating the feed token changed the API token")
	}
	fi, err := os.Stat(filepath.Join(cfgA.DataDir, node.CalendarTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("calendar token file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	restart(t, cfgA, a)
	if code, _ := feed(t, rotated.FeedURL); code != http.StatusOK {
		t.Errorf("feed URL after a restart: %d, want 200", code)
	}
}
