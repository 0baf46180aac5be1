package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// Black-box tests: build the real binary and drive it as a user would.

var tandemBin string // built once by TestMain

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tandem-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tandemBin = filepath.Join(dir, "tandem")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", tandemBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building tandem: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// env keeps the binary away from the user's real config and data. Its
// default config file turns off UPnP/NAT-PMP, which `tandem up` only turns
// off by itself in local-only mode (`--bootstrap none`): a test that gives
// loopback bootstrap peers must not multicast on the LAN either.
func env(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	conf := filepath.Join(home, "config", "tandem", "config.toml")
	if err := os.MkdirAll(filepath.Dir(conf), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("nat_port_map = false\nmdns = false\n[matchmaking]\nstamp_bits = 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
	)
}

// syncBuffer is an output buffer a running process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a running `tandem up`.
type daemon struct {
	dir    string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{}
	err    error // valid after exited is closed
}

// localOnlyUp are the flags that keep `tandem up` on this machine.
func localOnlyUp(dir string) []string {
	return append(loopbackUp(dir), "--bootstrap", "none")
}

// loopbackUp is localOnlyUp without the bootstrap flag: the caller must
// give loopback bootstrap peers (env's config file keeps UPnP off then).
func loopbackUp(dir string) []string {
	return []string{"up", "--data-dir", dir, "--api", "127.0.0.1:0", "--no-mdns",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}
}

// startUp runs `tandem up` on dir (with localOnlyUp's flags, or only with
// extra when given) and waits until its API file appears and
// it has printed its banner. The process is killed when the test ends if it
// is still running.
func startUp(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	args := localOnlyUp(dir)
	if len(extra) > 0 {
		args = append(append([]string{"up"}, extra...), "--data-dir", dir)
	}
	d.cmd = exec.Command(tandemBin, args...)
	d.cmd.Env = env(t)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		select {
		case <-d.exited:
			t.Fatalf("tandem up exited early: %v\nstdout:\n%s\nstderr:\n%s", d.err, d.stdout, d.stderr)
		default:
		}
		_, err := os.Stat(filepath.Join(dir, "api.json"))
		return err == nil && strings.Contains(d.stdout.String(), "Press Ctrl-C to stop.")
	}, "tandem up to write api.json and print its banner")
	return d
}

var peerIDLine = regexp.MustCompile(`(?m)^\s*Peer ID:\s+(\S+)\s*$`)

func (d *daemon) peerID(t *testing.T) string {
	t.Helper()
	m := peerIDLine.FindStringSubmatch(d.stdout.String())
	if m == nil {
		t.Fatalf("tandem up printed no peer ID:\n%s", d.stdout)
	}
	return m[1]
}

// stop sends SIGTERM and waits for the process to exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.signal(t, syscall.SIGTERM)
}

// signal sends sig and waits for the process to exit.
func (d *daemon) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("tandem up did not exit within 15s of %v\nstdout:\n%s\nstderr:\n%s", sig, d.stdout, d.stderr)
	}
}

// run runs one tandem command to completion, with a deadline.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runEnv(t, nil, args...)
}

// runEnv is run with extra environment variables (later ones win).
func runEnv(t *testing.T, extraEnv []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tandemBin, args...)
	cmd.Env = append(env(t), extraEnv...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tandem %s: timed out\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), &o, &e)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("tandem %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// noStackTrace fails if output looks like a Go panic or a usage dump.
func noStackTrace(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", ".go:", "Usage:"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s printed %q:\n%s", what, bad, out)
		}
	}
}

func TestUpStatusStop(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	start := time.Now()
	d := startUp(t, dir)
	t.Logf("tandem up: process start -> API file and banner in %v", time.Since(start).Round(time.Millisecond))
	id := d.peerID(t)

	out, errOut, code := run(t, "status", "--json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("tandem status: exit %d\n%s", code, errOut)
	}
	var st apiv1.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("tandem status --json: %v\n%s", err, out)
	}
	if st.PeerID != id {
		t.Errorf("status peer ID %q, up printed %q", st.PeerID, id)
	}
	if st.DataDir != dir || !st.LocalOnly || !strings.HasPrefix(st.APIURL, "http://127.0.0.1:") {
		t.Errorf("status = %+v, want data dir %s, local only, API on 127.0.0.1", st, dir)
	}
	for _, a := range st.Addrs {
		if !strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			t.Errorf("node listens on non-loopback %s", a)
		}
	}
	if !strings.Contains(d.stdout.String(), st.APIURL+"/login?token=") {
		t.Errorf("up did not print the login URL for %s:\n%s", st.APIURL, d.stdout)
	}

	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid)); err == nil {
		if m := regexp.MustCompile(`VmRSS:\s+(\d+ kB)`).FindSubmatch(status); m != nil {
			t.Logf("tandem up: RSS %s after start", m[1])
		}
	}

	out, errOut, code = run(t, "version", "--json")
	var v struct{ Version string }
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" {
		t.Errorf("tandem version --json: exit %d, %q, %q", code, out, errOut)
	}

	// A second `up` on the same data dir fails at once, clearly.
	t0 := time.Now()
	out, errOut, code = run(t, localOnlyUp(dir)...)
	if code == 0 {
		t.Errorf("second tandem up on the same data dir succeeded:\n%s", out)
	}
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("second tandem up took %v to fail", took)
	}
	if !strings.Contains(errOut, "already running") {
		t.Errorf("second tandem up: stderr does not say the node is already running:\n%s", errOut)
	}
	if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines != 1 {
		t.Errorf("second tandem up: %d lines of error, want 1:\n%s", lines, errOut)
	}
	noStackTrace(t, "second tandem up", out+errOut)
	// ... and leaves the first one alone.
	if _, errOut, code := run(t, "status", "--data-dir", dir); code != 0 {
		t.Errorf("first node unreachable after the failed second up: %s", errOut)
	}

	d.stop(t)
	if d.err != nil {
		t.Errorf("tandem up after SIGTERM: %v (want exit code 0)\nstderr:\n%s", d.err, d.stderr)
	}
	if !strings.Contains(d.stdout.String(), "Stopped.") {
		t.Errorf("tandem up did not print Stopped.:\n%s", d.stdout)
	}
	noStackTrace(t, "tandem up", d.stdout.String()+d.stderr.String())
	if _, err := os.Stat(filepath.Join(dir, "api.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api.json left behind after a clean stop: %v", err)
	}
	// With the node gone, clients say so plainly.
	_, errOut, code = run(t, "status", "--data-dir", dir)
	if code == 0 || !strings.Contains(errOut, "no tandem node is running") {
		t.Errorf("status with no node: exit %d, stderr %q", code, errOut)
	}

	// The store was closed cleanly: the same identity comes back.
	d2 := startUp(t, dir)
	if got := d2.peerID(t); got != id {
		t.Errorf("peer ID after restart = %s, want %s", got, id)
	}
	// A crash (SIGKILL) leaves a stale api.json and an unclean store; the
	// next `up` must still start, with the same identity, and take over.
	d2.cmd.Process.Kill()
	<-d2.exited
	d3 := startUp(t, dir)
	if got := d3.peerID(t); got != id {
		t.Errorf("peer ID after a crash = %s, want %s", got, id)
	}
	out, errOut, code = run(t, "status", "--json", "--data-dir", dir)
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.PeerID != id {
		t.Errorf("status after a crash and restart: exit %d, %s %s", code, out, errOut)
	}
	d3.stop(t)
	if d3.err != nil {
		t.Errorf("run after a crash, SIGTERM: %v\nstderr:\n%s", d3.err, d3.stderr)
	}
}

// TestUpRejectsBadConfig: mistakes in flags are one clear line, not a
// usage dump or a stack trace, and leave nothing running.
func TestUpRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"api not loopback", []string{"--bootstrap", "none", "--api", "0.0.0.0:0"}, "loopback"},
		{"bad listen", []string{"--bootstrap", "none", "--listen", "not-a-multiaddr"}, "not-a-multiaddr"},
		{"bootstrap without peer ID", []string{"--bootstrap", "/ip4/127.0.0.1/tcp/4001"}, "/p2p/"},
		{"bad log level", []string{"--bootstrap", "none", "--log-level", "loud"}, "loud"},
		// A name every peer would refuse makes the node invisible: refuse it here.
		{"name over 64 bytes", []string{"--bootstrap", "none", "--name", strings.Repeat("n", 80)}, "display name is 80 bytes, at most 64"},
		{"escape in name", []string{"--bootstrap", "none", "--name", "\x1b[2JAda"}, "control character U+001B"},
		{"missing --config", []string{"--bootstrap", "none", "--config", "/nonexistent/tandem.toml"}, "/nonexistent/tandem.toml does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "node")
			args := append(loopbackUp(dir), tc.args...)
			out, errOut, code := run(t, args...)
			if code == 0 {
				t.Fatalf("tandem up %v succeeded:\n%s", tc.args, out)
			}
			msg := strings.TrimSpace(errOut)
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("tandem up %v: want one line mentioning %q, got:\n%s", tc.args, tc.want, errOut)
			}
			noStackTrace(t, "tandem up", out+errOut)
			if _, err := os.Stat(filepath.Join(dir, "api.json")); err == nil {
				t.Errorf("a failed up left an api.json behind")
			}
		})
	}
}

func TestBookMisalignedTime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	d := startUp(t, dir)

	// Tomorrow at hh:07 local time: on no quarter hour in any time zone.
	at := time.Now().Add(24 * time.Hour).Truncate(time.Hour).Add(7 * time.Minute)
	for _, when := range []string{at.Format("2006-01-02T15:04"), at.UTC().Format(time.RFC3339)} {
		out, errOut, code := run(t, "book", "--data-dir", dir, "--at", when, "--duration", "25")
		if code == 0 {
			t.Errorf("book --at %s succeeded:\n%s", when, out)
		}
		msg := strings.TrimSpace(errOut)
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "tandem: ") || !strings.Contains(msg, "quarter-hour") {
			t.Errorf("book --at %s: want one line naming the quarter-hour grid, got:\n%s", when, errOut)
		}
		noStackTrace(t, "tandem book", out+errOut)
	}

	out, errOut, code := run(t, "bookings", "--json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("tandem bookings: exit %d: %s", code, errOut)
	}
	var bs []apiv1.Booking
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		t.Fatalf("tandem bookings --json: %v\n%s", err, out)
	}
	if len(bs) != 0 {
		t.Errorf("a rejected booking was stored: %+v", bs)
	}
	// Ctrl-C stops the node as cleanly as SIGTERM.
	d.signal(t, os.Interrupt)
	if d.err != nil || !strings.Contains(d.stdout.String(), "Stopped.") {
		t.Errorf("tandem up after Ctrl-C: %v\n%s", d.err, d.stdout)
	}
}

// TestUpReadsConfigFile: a config file alone makes a local-only node, and
// its keys reach the running node.
func TestUpReadsConfigFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	conf := filepath.Join(root, "config.toml")
	const file = `
api = "127.0.0.1:0"
listen = ["/ip4/127.0.0.1/tcp/0"]
bootstrap = ["none"]
mdns = false
nat_port_map = false
name = "Ada"
log_level = "warn"

[matchmaking]
# A 24-bit identity stamp keeps a core busy in the background for
# seconds (minutes on a loaded CI machine); this test is about the
# config keys.
stamp_bits = 8
`
	if err := os.WriteFile(conf, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startUp(t, dir, "--config", conf)
	out, errOut, code := run(t, "status", "--json", "--data-dir", dir)
	var st apiv1.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("tandem status: exit %d\n%s%s", code, out, errOut)
	}
	if st.Name != "Ada" || !st.LocalOnly || len(st.Addrs) != 1 || !strings.HasPrefix(st.Addrs[0], "/ip4/127.0.0.1/tcp/") {
		t.Errorf("status = %+v, want name Ada, local only, one loopback TCP address", st)
	}
	d.stop(t)
	if d.err != nil {
		t.Errorf("tandem up after SIGTERM: %v", d.err)
	}
}

// TestUpValidatesConfigFile: every key of the config file is checked at
// start with the same rules as the API and the wire, and the file's own
// mistakes are one clear line.
func TestUpValidatesConfigFile(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"name over 64 bytes", `name = "` + strings.Repeat("n", 80) + `"`, "display name is 80 bytes, at most 64"},
		{"bidi in name", `name = "Ada\u202e"`, "U+202E"},
		{"turn without credentials", `ice_servers = ["turn:127.0.0.1:3478"]`, "needs a username and a credential"},
		{"turn without credential", `ice_servers = [{ urls = "turn:127.0.0.1:3478", username = "u" }]`, "needs a username and a credential"},
		{"bad ice url", `ice_servers = ["http://127.0.0.1"]`, "http://127.0.0.1"},
		{"bad log level", `log_level = "loud"`, "loud"},
		{"bad log format", `log_format = "xml"`, `log format "xml": want text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir, conf := filepath.Join(root, "node"), filepath.Join(root, "config.toml")
			if err := os.WriteFile(conf, []byte(tc.file+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append(localOnlyUp(dir), "--config", conf)
			out, errOut, code := run(t, args...)
			if code == 0 {
				t.Fatalf("tandem up with %s succeeded:\n%s", tc.file, out)
			}
			msg := strings.TrimSpace(errOut)
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("tandem up with %s: want one line mentioning %q, got:\n%s", tc.file, tc.want, errOut)
			}
			noStackTrace(t, "tandem up", out+errOut)
		})
	}
	// A client command with a --config that does not exist says so too,
	// instead of looking for a node in the default data dir.
	_, errOut, code := run(t, "status", "--config", "/nonexistent/tandem.toml")
	if code == 0 || !strings.Contains(errOut, "/nonexistent/tandem.toml does not exist") {
		t.Errorf("status --config MISSING: exit %d, %q", code, errOut)
	}
}

// TestTextTooLongNamesLimit: a goal, reason or name over its limit is one
// line naming the limit, before any request reaches the node (a 100 KB goal
// used to get a bare "request body too large").
func TestTextTooLongNamesLimit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node") // no node runs here: the check comes first
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"now", "--goal", strings.Repeat("g", 100<<10)}, "goal is 102400 bytes, at most 280"},
		{[]string{"book", "--at", "2030-01-01T10:00", "--goal", strings.Repeat("g", 281)}, "goal is 281 bytes, at most 280"},
		{[]string{"now", "--goal", "\x1b[2J"}, "control character U+001B"},
		{[]string{"cancel", "x", "--reason", strings.Repeat("r", 300)}, "reason is 300 bytes, at most 280"},
		{[]string{"profile", "--name", strings.Repeat("n", 80)}, "display name is 80 bytes, at most 64"},
	} {
		out, errOut, code := run(t, append(tc.args, "--data-dir", dir)...)
		msg := strings.TrimSpace(errOut)
		if code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
			t.Errorf("tandem %s: exit %d, want one line with %q, got:\n%s", tc.args[0], code, tc.want, errOut)
		}
		noStackTrace(t, "tandem "+tc.args[0], out+errOut)
	}
}
