package node_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// loginCookie logs in to n over HTTP and returns the cookie it sets.
func loginCookie(t *testing.T, n *node.Node) *http.Cookie {
	t.Helper()
	resp := do(t, n, request{path: "/login?token=" + url.QueryEscape(n.Token())})
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "tandem_token_") {
			return c
		}
	}
	t.Fatalf("login set no cookie: %v", resp.Header["Set-Cookie"])
	return nil
}

func statusWith(t *testing.T, n *node.Node, header map[string]string) int {
	t.Helper()
	return do(t, n, request{path: "/api/v1/status", header: header}).StatusCode
}

// restart stops n and starts a node on the same data dir and API port.
func restart(t *testing.T, cfg node.Config, n *node.Node) *node.Node {
	t.Helper()
	u, err := url.Parse(n.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg.API = u.Host
	return nodetest.Start(t, cfg)
}

// TestTokenSurvivesRestart: a browser logged in before a restart is still
// logged in after it (same token, same cookie), the token file is the
// user's only, and rotating the token (through the API while the node
// runs, or with node.RotateToken while it does not) logs the old cookie
// out and survives the next restart.
func TestTokenSurvivesRestart(t *testing.T) {
	cfg := nodetest.Config(t)
	n := nodetest.Start(t, cfg)
	tok := n.Token()
	cookie := loginCookie(t, n)

	fi, err := os.Stat(filepath.Join(cfg.DataDir, node.TokenFile))
	if err != nil {
		t.Fatalf("no token file in the data dir: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("token file mode = %o, want 600", got)
	}

	n = restart(t, cfg, n)
	if n.Token() != tok {
		t.Fatalf("token changed across a restart")
	}
	if code := statusWith(t, n, map[string]string{"Cookie": cookie.String()}); code != http.StatusOK {
		t.Fatalf("the cookie from before the restart: %d, want 200", code)
	}

	// Rotation while running: the answer has the new token and login URL;
	// the old cookie and token stop working, the API file has the new one.
	c := client.New(n.APIURL(), n.Token())
	rot, err := c.RotateToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rot.Token == tok || rot.Token != n.Token() || rot.LoginURL != n.LoginURL() {
		t.Fatalf("rotation answered %+v; node token %q, login URL %q", rot, n.Token(), n.LoginURL())
	}
	if code := statusWith(t, n, map[string]string{"Cookie": cookie.String()}); code != http.StatusUnauthorized {
		t.Errorf("old cookie after rotation: %d, want 401", code)
	}
	if code := statusWith(t, n, map[string]string{"Authorization": "Bearer " + tok}); code != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	if code := statusWith(t, n, bearer(n)); code != http.StatusOK {
		t.Errorf("new token after rotation: %d, want 200", code)
	}
	fc, err := client.FromDataDir(cfg.DataDir)
	if err != nil || fc.Token != rot.Token {
		t.Errorf("API file after rotation: %+v, %v", fc, err)
	}
	if _, err := fc.Status(context.Background()); err != nil {
		t.Errorf("the CLI's client after rotation: %v", err)
	}

	n = restart(t, cfg, n)
	if n.Token() != rot.Token {
		t.Errorf("rotated token lost across a restart")
	}

	// Rotation while stopped.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	off, err := node.RotateToken(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	n = nodetest.Start(t, cfg)
	if n.Token() != off || off == rot.Token {
		t.Errorf("token after an offline rotation = %q, want %q", n.Token(), off)
	}
}

// TestTokenFileBad: a token file that does not hold a token this node
// wrote (empty, short, not hex) is replaced, never used.
func TestTokenFileBad(t *testing.T) {
	for _, content := range []string{"", "abc\n", strings.Repeat("z", 64)} {
		cfg := nodetest.Config(t)
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, node.TokenFile), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		n := nodetest.Start(t, cfg)
		if len(n.Token()) != 64 || strings.Contains(n.Token(), "z") {
			t.Errorf("token file %q: node uses %q", content, n.Token())
		}
		data, _ := os.ReadFile(filepath.Join(cfg.DataDir, node.TokenFile))
		if strings.TrimSpace(string(data)) != n.Token() {
			t.Errorf("token file %q was not replaced: %q", content, data)
		}
		if fi, _ := os.Stat(filepath.Join(cfg.DataDir, node.TokenFile)); fi.Mode().Perm() != 0o600 {
			t.Errorf("replaced token file mode = %o", fi.Mode().Perm())
		}
		n.Stop()
	}
}

// TestRotateEndsEventStreams: rotating the token ends the event streams
// opened with the old one (a browser the rotation logged out must not
// keep receiving the user's events); one opened with the new token works.
func TestRotateEndsEventStreams(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old, err := client.New(n.APIURL(), n.Token()).Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(n.APIURL(), n.Token())
	if _, err := c.RotateToken(ctx); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		for range old { // drain until the node ends the stream
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(30 * time.Second): // a bound: it ends at once
		t.Fatal("the event stream opened with the old token is still open 30 s after the rotation")
	}
	fresh, err := c.Events(ctx)
	if err != nil {
		t.Fatalf("event stream with the new token: %v", err)
	}
	n.ClockChanged()
	bound := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-fresh:
			if !ok {
				t.Fatal("the event stream opened with the new token ended")
			}
			if ev.Type == apiv1.EventClock {
				return
			}
		case <-bound:
			t.Fatal("no clock event on the stream opened with the new token")
		}
	}
}
