package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/client"
)

// fakeRunner records the commands instead of running them.
type fakeRunner struct {
	ran    [][]string
	answer map[string]string // by command line
	fail   map[string]bool
}

func (f *fakeRunner) run(_ context.Context, name string, args ...string) (string, error) {
	c := append([]string{name}, args...)
	f.ran = append(f.ran, c)
	line := strings.Join(c, " ")
	if f.fail[line] {
		return f.answer[line], errors.New("exit status 3")
	}
	return f.answer[line], nil
}

func testService(t *testing.T, goos string, f *fakeRunner) (*service, *bytes.Buffer) {
	home := t.TempDir()
	out := &bytes.Buffer{}
	return &service{goos: goos, home: home, cfgHome: filepath.Join(home, ".config"), uid: 1000,
		exe: "/opt/Tandem App/tandem", args: []string{"up", "--data-dir", "/home/ada/tandem 100% $HOME"},
		run: f.run, out: out}, out
}

// TestServiceSystemd: install writes a user unit that runs `tandem up`
// with the data dir (quoted as systemd unquotes it) and enables it; status
// reports the unit, systemd's answer and the node's health; uninstall
// disables it and removes the file. systemctl is never run.
func TestServiceSystemd(t *testing.T) {
	f := &fakeRunner{answer: map[string]string{"systemctl --user is-active tandem.service": "active\n"}}
	s, out := testService(t, "linux", f)
	ctx := context.Background()
	if err := s.install(ctx); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.home, ".config", "systemd", "user", "tandem.service")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{
		"\nExecStart=\"/opt/Tandem App/tandem\" up --data-dir \"/home/ada/tandem 100%% $$HOME\"\n",
		"\nWantedBy=default.target\n", "\nRestart=on-failure\n", "\nKillSignal=SIGTERM\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	want := [][]string{{"systemctl", "--user", "daemon-reload"}, {"systemctl", "--user", "enable", "--now", "tandem.service"}}
	if !slices.EqualFunc(f.ran, want, slices.Equal) {
		t.Errorf("install ran %q, want %q", f.ran, want)
	}
	// systemd itself accepts the unit, where its tools are installed.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		s2, _ := testService(t, "linux", f)
		s2.exe = "/bin/true" // verify checks that the binary exists
		if err := os.MkdirAll(filepath.Dir(s2.path()), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s2.path(), []byte(s2.unit()), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if vout, err := exec.CommandContext(ctx, sa, "verify", s2.path()).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, vout)
		}
	}

	out.Reset()
	f.ran = nil
	if err := s.status(ctx, nil, client.ErrNotRunning); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Installed: " + path, "Service manager: active", "Node: not answering"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	f.ran = nil
	if err := s.uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	want = [][]string{{"systemctl", "--user", "disable", "--now", "tandem.service"}, {"systemctl", "--user", "daemon-reload"}}
	if !slices.EqualFunc(f.ran, want, slices.Equal) {
		t.Errorf("uninstall ran %q, want %q", f.ran, want)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit still there after uninstall: %v", err)
	}
}

// TestServiceLaunchd: on macOS the agent is a well-formed plist that runs
// `tandem up` at load and again when it fails, loaded with launchctl
// bootstrap into the user's GUI domain.
func TestServiceLaunchd(t *testing.T) {
	f := &fakeRunner{fail: map[string]bool{"launchctl bootout gui/1000/org.tandem-cowork.tandem": true}}
	s, _ := testService(t, "darwin", f)
	s.args = append(s.args, "--config", "/Users/ada/a&b <c>.toml")
	if err := s.install(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.home, "Library", "LaunchAgents", "org.tandem-cowork.tandem.plist")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Decode the plist's dict as key/value pairs.
	var doc struct {
		Dict struct {
			Items []struct {
				XMLName xml.Name
				Text    string   `xml:",chardata"`
				Strings []string `xml:"string"`
			} `xml:",any"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("plist is not XML: %v\n%s", err, data)
	}
	kv := map[string]int{}
	items := doc.Dict.Items
	for i := 0; i+1 < len(items); i++ {
		if items[i].XMLName.Local == "key" {
			kv[items[i].Text] = i + 1
		}
	}
	if i, ok := kv["Label"]; !ok || items[i].Text != "org.tandem-cowork.tandem" {
		t.Errorf("Label missing or wrong:\n%s", data)
	}
	wantArgs := append([]string{s.exe}, s.args...)
	if i, ok := kv["ProgramArguments"]; !ok || !slices.Equal(items[i].Strings, wantArgs) {
		t.Errorf("ProgramArguments %q, want %q", items[kv["ProgramArguments"]].Strings, wantArgs)
	}
	if i, ok := kv["RunAtLoad"]; !ok || items[i].XMLName.Local != "true" {
		t.Errorf("RunAtLoad is not true:\n%s", data)
	}
	want := [][]string{
		{"launchctl", "bootout", "gui/1000/org.tandem-cowork.tandem"},
		{"launchctl", "bootstrap", "gui/1000", path},
	}
	if !slices.EqualFunc(f.ran, want, slices.Equal) {
		t.Errorf("install ran %q, want %q", f.ran, want)
	}
}

// TestServiceCLI: `tandem service install --dry-run` prints the unit and
// the commands and touches nothing; `service status` finds the running
// node healthy through GET /healthz.
func TestServiceCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	out, errOut, code := run(t, "service", "install", "--dry-run", "--platform", "linux", "--data-dir", dir, "--desktop-notify")
	if code != 0 || !strings.Contains(out, "ExecStart="+tandemBin+" up --data-dir "+dir+" --desktop-notify\n") ||
		!strings.Contains(out, "$ systemctl --user enable --now tandem.service") {
		t.Fatalf("service install --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "*")); len(m) != 0 {
		t.Errorf("dry run wrote %v", m)
	}
	// status, with systemctl faked: the node's line comes from its
	// GET /healthz.
	startUp(t, dir)
	c, err := client.FromDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRunner{fail: map[string]bool{"systemctl --user is-active tandem.service": true},
		answer: map[string]string{"systemctl --user is-active tandem.service": "inactive\n"}}
	s, buf := testService(t, "linux", f)
	if err := s.status(context.Background(), c, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Not installed", "Service manager: inactive", "Node: ok at " + c.URL} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, buf)
		}
	}
}
