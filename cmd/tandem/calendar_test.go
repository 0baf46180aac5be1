package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// TestCalendarCLI: `tandem calendar url` prints a feed URL that answers
// without the login token, `export` writes an iCalendar file, and
// `rotate` (running node, then stopped node) retires the old URL.
func TestCalendarCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	d := startUp(t, dir)
	out, errOut, code := run(t, "calendar", "url", "--json", "--data-dir", dir)
	var cal apiv1.Calendar
	if code != 0 || json.Unmarshal([]byte(out), &cal) != nil || cal.FeedURL == "" {
		t.Fatalf("calendar url: exit %d\n%s%s", code, out, errOut)
	}
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(cal.FeedURL); c != http.StatusOK {
		t.Fatalf("GET feed: %d", c)
	}
	out, errOut, code = run(t, "calendar", "export", "--data-dir", dir)
	if code != 0 || !strings.HasPrefix(out, "BEGIN:VCALENDAR") || !strings.Contains(out, "END:VCALENDAR") {
		t.Fatalf("calendar export: exit %d\n%.300s%s", code, out, errOut)
	}
	out, errOut, code = run(t, "calendar", "rotate", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "/calendar/") {
		t.Fatalf("calendar rotate: exit %d\n%s%s", code, out, errOut)
	}
	if c := get(cal.FeedURL); c != http.StatusNotFound {
		t.Errorf("old feed URL after rotate: %d, want 404", c)
	}
	d.stop(t)
	out, errOut, code = run(t, "calendar", "rotate", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "not running") {
		t.Fatalf("calendar rotate without a node: exit %d\n%s%s", code, out, errOut)
	}
}
