package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/nodetest"
)

var webUILine = regexp.MustCompile(`(?m)^Web UI:\s+(http://127\.0\.0\.1:\d+/login\?token=[0-9a-f]{64})$`)

// loginURLFromStatus runs `tandem status` and returns the login link it prints.
func loginURLFromStatus(t *testing.T, dir string) string {
	t.Helper()
	out, errOut, code := run(t, "status", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("tandem status: exit %d: %s", code, errOut)
	}
	m := webUILine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tandem status prints no Web UI login link:\n%s", out)
	}
	return m[1]
}

// TestStatusOpenToken: `tandem status` prints the login link, the same
// one across a restart; `tandem open` prints it without a desktop and
// hands it to xdg-open with one; `tandem token rotate` replaces it.
func TestStatusOpenToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	d := startUp(t, dir)
	url := loginURLFromStatus(t, dir)
	if !strings.Contains(d.stdout.String(), url) {
		t.Errorf("status prints %s, up printed:\n%s", url, d.stdout)
	}
	var st struct {
		LoginURL string `json:"login_url"`
		PeerID   string `json:"peer_id"`
	}
	out, _, _ := run(t, "status", "--json", "--data-dir", dir)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.LoginURL != url || st.PeerID == "" {
		t.Errorf("status --json: %v %s", err, out)
	}

	// No desktop: the link is printed.
	out, errOut, code := runEnv(t, []string{"DISPLAY=", "WAYLAND_DISPLAY="}, "open", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, url) {
		t.Errorf("open without a desktop: exit %d, %q %q; want the link %s", code, out, errOut, url)
	}
	// A desktop: xdg-open gets the link.
	bin := t.TempDir()
	got := filepath.Join(t.TempDir(), "opened")
	script := "#!/bin/sh\nprintf '%s' \"$1\" > " + got + ".tmp && mv " + got + ".tmp " + got + "\n"
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runEnv(t, []string{"DISPLAY=:99", "PATH=" + bin + ":" + os.Getenv("PATH")}, "open", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("open with a desktop: exit %d: %s", code, errOut)
	}
	var opened []byte
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		opened, _ = os.ReadFile(got)
		return len(opened) > 0
	}, "xdg-open to be called")
	if string(opened) != url {
		t.Errorf("xdg-open got %q, want %q (stdout %q)", opened, url, out)
	}

	// A restart keeps the link (and every browser's cookie).
	d.stop(t)
	startUp(t, dir)
	if again := loginURLFromStatus(t, dir); strings.SplitN(again, "token=", 2)[1] != strings.SplitN(url, "token=", 2)[1] {
		t.Errorf("token changed across a restart: %s, then %s", url, again)
	}

	// Rotation: a new link, and the old token is refused.
	out, errOut, code = run(t, "token", "rotate", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "/login?token=") {
		t.Fatalf("token rotate: exit %d: %q %q", code, out, errOut)
	}
	rotated := loginURLFromStatus(t, dir)
	if rotated == url || !strings.Contains(out, rotated) {
		t.Errorf("token rotate printed %q; status now prints %s (before: %s)", out, rotated, url)
	}
}

// TestTimesShowZone: the CLI prints times with their zone.
func TestTimesShowZone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	startUp(t, dir)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	at := time.Now().In(berlin).Add(24 * time.Hour).Truncate(time.Hour)
	zone := at.Format("MST")
	tz := []string{"TZ=Europe/Berlin"}
	out, errOut, code := runEnv(t, tz, "book", "--data-dir", dir, "--at", at.Format(time.RFC3339), "--duration", "25")
	if code != 0 || !strings.Contains(out, at.Format("15:04")+" "+zone) {
		t.Errorf("book printed %q (%s), want the time with its zone %s", out, errOut, zone)
	}
	out, _, _ = runEnv(t, tz, "bookings", "--data-dir", dir)
	if !strings.Contains(out, at.Format("15:04")+" "+zone) {
		t.Errorf("bookings printed no zone %s:\n%s", zone, out)
	}
}

// TestVersionFlag: `tandem --version` prints what `tandem version` prints.
func TestVersionFlag(t *testing.T) {
	want, _, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(want, "tandem ") {
		t.Fatalf("tandem version: exit %d, %q", code, want)
	}
	got, errOut, code := run(t, "--version")
	if code != 0 || got != want {
		t.Errorf("tandem --version: exit %d, %q %q; want %q", code, got, errOut, want)
	}
}
