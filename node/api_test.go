package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// The local API's threats, one test each, as in Syncthing's lib/api tests.
// All requests are real HTTP to a real started node on 127.0.0.1.

// noRedirect is an HTTP client that shows redirects instead of following them.
var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type request struct {
	method, path, host, body string
	header                   map[string]string
}

// do sends r to n and returns the status code and the response.
func do(t *testing.T, n *node.Node, r request) *http.Response {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, n.APIURL()+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp
}

func bearer(n *node.Node) map[string]string {
	return map[string]string{"Authorization": "Bearer " + n.Token()}
}

func apiPort(t *testing.T, n *node.Node) string {
	t.Helper()
	u, err := url.Parse(n.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	if h := u.Hostname(); h != "127.0.0.1" {
		t.Fatalf("API listens on %s, want 127.0.0.1", h)
	}
	return u.Port()
}

// TestHostCheck: a page on evil.example whose DNS name is rebound to
// 127.0.0.1 reaches the API with Host: evil.example and must get 403, even
// with a valid token.
func TestHostCheck(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	port := apiPort(t, n)
	for _, host := range []string{
		"evil.example:" + port,
		"evil.example",
		"127.0.0.1.evil.example:" + port,
		"localhost.evil.example:" + port,
		"192.168.1.10:" + port,
		"0.0.0.0:" + port,
	} {
		for _, path := range []string{"/api/v1/status", "/", "/login?token=" + n.Token()} {
			if resp := do(t, n, request{path: path, host: host, header: bearer(n)}); resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s with Host %q: %d, want 403", path, host, resp.StatusCode)
			}
		}
	}
	for _, host := range []string{
		"localhost:" + port,
		"127.0.0.1:" + port,
		"[::1]:" + port,
		"LOCALHOST:" + port,
	} {
		if resp := do(t, n, request{path: "/api/v1/status", host: host, header: bearer(n)}); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /api/v1/status with Host %q: %d, want 200", host, resp.StatusCode)
		}
		if resp := do(t, n, request{path: "/", host: host}); resp.StatusCode != http.StatusOK {
			t.Errorf("GET / with Host %q: %d, want 200", host, resp.StatusCode)
		}
	}
}

// TestCSRFRequired: a page on another site can make the browser send a
// state-changing request; a foreign Origin or Sec-Fetch-Site: cross-site
// gets 403, even with a valid token (a cookie would ride along).
func TestCSRFRequired(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	port := apiPort(t, n)
	const profile = `{"name":"Mallory"}`
	with := func(h map[string]string) map[string]string {
		out := bearer(n)
		out["Content-Type"] = "application/json"
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"foreign origin", map[string]string{"Origin": "http://evil.example"}},
		{"foreign origin same port", map[string]string{"Origin": "http://evil.example:" + port}},
		{"other local port", map[string]string{"Origin": "http://127.0.0.1:1"}},
		{"null origin", map[string]string{"Origin": "null"}},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"cross-site fetch, own origin", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": n.APIURL()}},
	} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			path := "/api/v1/profile"
			if method == http.MethodPost {
				path = "/api/v1/bookings"
			}
			resp := do(t, n, request{method: method, path: path, body: profile, header: with(tc.header)})
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %s %s: %d, want 403", tc.name, method, path, resp.StatusCode)
			}
		}
	}
	if name := n.Matchmaking().Name(); name == "Mallory" {
		t.Fatal("a cross-site request changed the profile")
	}

	// The same request from the UI's own origin, or from the CLI (no
	// Origin at all), goes through.
	for _, h := range []map[string]string{
		{"Origin": n.APIURL(), "Sec-Fetch-Site": "same-origin"},
		{},
	} {
		if resp := do(t, n, request{method: http.MethodPut, path: "/api/v1/profile", body: `{"name":"Ada"}`, header: with(h)}); resp.StatusCode != http.StatusOK {
			t.Errorf("PUT /api/v1/profile with %v: %d, want 200", h, resp.StatusCode)
		}
	}
	if name := n.Matchmaking().Name(); name != "Ada" {
		t.Errorf("profile name = %q, want Ada", name)
	}
	// Reads are not state-changing: a cross-site GET is left to the token.
	if resp := do(t, n, request{path: "/api/v1/status", header: with(map[string]string{"Sec-Fetch-Site": "cross-site"})}); resp.StatusCode != http.StatusOK {
		t.Errorf("cross-site GET with token: %d, want 200", resp.StatusCode)
	}
}

// TestTokenRequired: anything on this machine can reach 127.0.0.1; only
// holders of the token (the CLI via the 0600 API file, the UI via the login
// URL) may use the API.
func TestTokenRequired(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"no token", nil},
		{"wrong token", map[string]string{"Authorization": "Bearer " + strings.Repeat("0", len(n.Token()))}},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}},
		{"token prefix", map[string]string{"Authorization": "Bearer " + n.Token()[:8]}},
		{"wrong cookie", map[string]string{"Cookie": "tandem_token_" + apiPort(t, n) + "=nope"}},
		{"another node's cookie name", map[string]string{"Cookie": "tandem_token_1=" + n.Token()}},
	} {
		for _, path := range []string{"/api/v1/status", "/api/v1/peers", "/api/v1/events", "/api/v1/bookings"} {
			if resp := do(t, n, request{path: path, header: tc.header}); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: GET %s: %d, want 401", tc.name, path, resp.StatusCode)
			}
		}
	}
	if resp := do(t, n, request{path: "/api/v1/status", header: bearer(n)}); resp.StatusCode != http.StatusOK {
		t.Errorf("Bearer token: %d, want 200", resp.StatusCode)
	}

	// The CLI's copy of the token is readable by the user only.
	dataDir := n.Status().DataDir
	for name, want := range map[string]os.FileMode{node.APIFile: 0o600, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", name, got, want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dataDir, node.APIFile))
	if err != nil {
		t.Fatal(err)
	}
	var f apiv1.APIFile
	if err := json.Unmarshal(data, &f); err != nil || f.Token != n.Token() || f.URL != n.APIURL() || f.PID != os.Getpid() {
		t.Errorf("API file = %s (%v), want this node's URL, token and PID", data, err)
	}

	// The login URL trades the token for a cookie.
	if resp := do(t, n, request{path: "/login?token=wrong"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a wrong token: %d, want 401", resp.StatusCode)
	}
	if resp := do(t, n, request{path: "/login"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login without a token: %d, want 401", resp.StatusCode)
	}
	resp := do(t, n, request{path: "/login?token=" + url.QueryEscape(n.Token())})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("login: %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "tandem_token_"+apiPort(t, n) {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("login set no tandem_token cookie: %v", resp.Header["Set-Cookie"])
	}
	if !cookie.HttpOnly {
		t.Error("login cookie is not HttpOnly: page scripts could read the token")
	}
	if cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("login cookie SameSite = %v, want Strict", cookie.SameSite)
	}
	if cookie.Path != "/" {
		t.Errorf("login cookie path = %q, want /", cookie.Path)
	}
	if resp := do(t, n, request{path: "/api/v1/status", header: map[string]string{"Cookie": cookie.String()}}); resp.StatusCode != http.StatusOK {
		t.Errorf("login cookie: %d, want 200", resp.StatusCode)
	}
}

// TestEventsPeerConnected: the UI's live view. Another node connecting
// shows up on /api/v1/events as a peer-connected event.
func TestEventsPeerConnected(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.APIURL()+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/events: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	// The stream opens with a comment once the subscription is in place;
	// after it, no event can be missed.
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), ":") {
		t.Fatalf("first SSE line = %q (%v), want a comment", lines.Text(), lines.Err())
	}

	cfgB := nodetest.Config(t)
	cfgB.Bootstrap = []string{tcpAddr(t, a)}
	b := nodetest.Start(t, cfgB)

	var event string
	for lines.Scan() {
		line := lines.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if event != apiv1.EventPeerConnected {
			continue
		}
		var ev struct{ ID string }
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("bad %s data %q: %v", event, data, err)
		}
		if id, err := peer.Decode(ev.ID); err == nil && id == b.ID() {
			return
		}
	}
	t.Fatalf("no %s event for %s before the deadline (%v)", apiv1.EventPeerConnected, b.ID(), lines.Err())
}

// TestTextLimitsAreNamed: text over its limit, or a body over the API's
// limit, is refused with the limit in the message, not a bare "request
// body too large"; control characters are refused by name.
func TestTextLimitsAreNamed(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	c := client.New(n.APIURL(), n.Token())
	ctx := context.Background()
	for _, tc := range []struct {
		goal string
		want []string
	}{
		{strings.Repeat("g", 100<<10), []string{"65536 bytes", "goal", "280"}},
		{strings.Repeat("g", 300), []string{"goal is 300 bytes, at most 280"}},
		{"\x1b[2Jclear", []string{"control character U+001B"}},
	} {
		_, err := c.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: tc.goal})
		var apiErr *client.APIError
		if !errors.As(err, &apiErr) || apiErr.Status/100 != 4 {
			t.Fatalf("goal of %d bytes: %v, want a 4xx API error", len(tc.goal), err)
		}
		for _, w := range tc.want {
			if !strings.Contains(apiErr.Message, w) {
				t.Errorf("goal of %d bytes: %q does not say %q", len(tc.goal), apiErr.Message, w)
			}
		}
	}
	if bs, _ := c.Bookings(ctx); len(bs) != 0 {
		t.Errorf("a refused booking was stored: %+v", bs)
	}
}
