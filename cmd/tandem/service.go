package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node/client"
)

// `tandem service` runs `tandem up` at login: a systemd user unit on
// Linux, a launchd agent on macOS. It writes the unit file and asks the
// service manager to load it, through a runner the tests replace, so they
// check the file and the commands without touching the machine's systemd.
// The node keeps its token across restarts, so the web UI's login link
// (and the cookie a browser got from it) stays valid when it restarts.

const (
	systemdUnit = "tandem.service"
	launchdName = "org.tandem-cowork.tandem"
)

// runner runs a service manager command and returns its combined output.
type runner func(ctx context.Context, name string, args ...string) (string, error)

func execRunner(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// service is one platform's install plan for one node.
type service struct {
	goos    string
	home    string // the user's home
	cfgHome string // XDG_CONFIG_HOME or ~/.config
	uid     int
	exe     string   // absolute path of the tandem binary
	args    []string // tandem up's arguments
	run     runner
	out     io.Writer
	dryRun  bool
}

// path is where the unit or agent file goes.
func (s *service) path() string {
	if s.goos == "darwin" {
		return filepath.Join(s.home, "Library", "LaunchAgents", launchdName+".plist")
	}
	return filepath.Join(s.cfgHome, "systemd", "user", systemdUnit)
}

// unit is the file's content.
func (s *service) unit() string {
	if s.goos == "darwin" {
		return s.plist()
	}
	cmd := []string{systemdQuote(s.exe)}
	for _, a := range s.args {
		cmd = append(cmd, systemdQuote(a))
	}
	return `# Written by "tandem service install"; "tandem service uninstall" removes it.
[Unit]
Description=Tandem peer-to-peer co-working node
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=` + strings.Join(cmd, " ") + `
# tandem up stops cleanly on SIGTERM (the store is closed, peers are told).
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=on-failure
RestartSec=5

[Install]
WantedBy=default.target
`
}

func (s *service) plist() string {
	var args strings.Builder
	for _, a := range append([]string{s.exe}, s.args...) {
		args.WriteString("\t\t<string>" + xmlText(a) + "</string>\n")
	}
	logFile := xmlText(filepath.Join(s.home, "Library", "Logs", "tandem.log"))
	return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by "tandem service install"; "tandem service uninstall" removes it. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + launchdName + `</string>
	<key>ProgramArguments</key>
	<array>
` + args.String() + `	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ProcessType</key>
	<string>Background</string>
	<key>StandardOutPath</key>
	<string>` + logFile + `</string>
	<key>StandardErrorPath</key>
	<string>` + logFile + `</string>
</dict>
</plist>
`
}

// commands are what load (install) or unload (uninstall) the service.
func (s *service) commands(install bool) [][]string {
	if s.goos == "darwin" {
		target := fmt.Sprintf("gui/%d", s.uid)
		if install {
			return [][]string{{"launchctl", "bootstrap", target, s.path()}}
		}
		return [][]string{{"launchctl", "bootout", target + "/" + launchdName}}
	}
	if install {
		return [][]string{
			{"systemctl", "--user", "daemon-reload"},
			{"systemctl", "--user", "enable", "--now", systemdUnit},
		}
	}
	return [][]string{{"systemctl", "--user", "disable", "--now", systemdUnit}}
}

// statusCommand asks the service manager about the service.
func (s *service) statusCommand() []string {
	if s.goos == "darwin" {
		return []string{"launchctl", "print", fmt.Sprintf("gui/%d/%s", s.uid, launchdName)}
	}
	return []string{"systemctl", "--user", "is-active", systemdUnit}
}

func (s *service) runAll(ctx context.Context, cmds [][]string) error {
	for _, c := range cmds {
		fmt.Fprintf(s.out, "$ %s\n", strings.Join(c, " "))
		if s.dryRun {
			continue
		}
		out, err := s.run(ctx, c[0], c[1:]...)
		if strings.TrimSpace(out) != "" {
			fmt.Fprint(s.out, out)
		}
		if err != nil {
			return fmt.Errorf("running %s: %w", strings.Join(c, " "), err)
		}
	}
	return nil
}

func (s *service) install(ctx context.Context) error {
	if s.dryRun {
		fmt.Fprintf(s.out, "Would write %s:\n%s\nand run:\n", s.path(), s.unit())
		return s.runAll(ctx, s.commands(true))
	}
	if err := os.MkdirAll(filepath.Dir(s.path()), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(s.path()), err)
	}
	if s.goos == "darwin" {
		// bootstrap refuses an agent that is loaded already: unload the
		// old one first; an error here only means it was not loaded.
		s.run(ctx, "launchctl", "bootout", fmt.Sprintf("gui/%d/%s", s.uid, launchdName))
	}
	if err := os.WriteFile(s.path(), []byte(s.unit()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", s.path(), err)
	}
	fmt.Fprintf(s.out, "Wrote %s\n", s.path())
	if err := s.runAll(ctx, s.commands(true)); err != nil {
		return err
	}
	fmt.Fprintln(s.out, "Tandem now starts at login. `tandem open` opens the web UI; the login link stays the same across restarts.")
	return nil
}

func (s *service) uninstall(ctx context.Context) error {
	if _, err := os.Stat(s.path()); errors.Is(err, os.ErrNotExist) && !s.dryRun {
		fmt.Fprintf(s.out, "Not installed: there is no %s\n", s.path())
		return nil
	}
	// Unload first: a service manager that still runs the node must stop it.
	if err := s.runAll(ctx, s.commands(false)); err != nil {
		fmt.Fprintf(s.out, "(going on: %v)\n", err)
	}
	if s.dryRun {
		fmt.Fprintf(s.out, "Would remove %s\n", s.path())
		if s.goos != "darwin" {
			return s.runAll(ctx, [][]string{{"systemctl", "--user", "daemon-reload"}})
		}
		return nil
	}
	if err := os.Remove(s.path()); err != nil {
		return fmt.Errorf("removing %s: %w", s.path(), err)
	}
	fmt.Fprintf(s.out, "Removed %s\n", s.path())
	if s.goos != "darwin" {
		return s.runAll(ctx, [][]string{{"systemctl", "--user", "daemon-reload"}})
	}
	return nil
}

// status says whether the file is there, what the service manager says,
// and whether the node answers its health check.
func (s *service) status(ctx context.Context, c *client.Client, cerr error) error {
	if _, err := os.Stat(s.path()); err == nil {
		fmt.Fprintf(s.out, "Installed: %s\n", s.path())
	} else {
		fmt.Fprintf(s.out, "Not installed (no %s)\n", s.path())
	}
	sc := s.statusCommand()
	out, err := s.run(ctx, sc[0], sc[1:]...)
	state := strings.TrimSpace(out)
	if s.goos == "darwin" {
		state = "loaded"
		if err != nil {
			state = "not loaded"
		}
	} else if state == "" && err != nil {
		state = err.Error()
	}
	fmt.Fprintf(s.out, "Service manager: %s\n", state)
	if cerr == nil {
		cerr = c.Health(ctx)
	}
	if cerr != nil {
		fmt.Fprintf(s.out, "Node: not answering (%v)\n", cerr)
		return nil
	}
	fmt.Fprintf(s.out, "Node: ok at %s\n", c.URL)
	return nil
}

// systemdQuote quotes one ExecStart word: systemd splits on spaces,
// unquotes "...", and expands % specifiers and $ variables.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + s + `"`
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func newServiceCmd(g *globalFlags) *cobra.Command {
	var (
		dryRun, desktopNotify bool
		platform              string
	)
	// build resolves what the unit runs: this binary, with the data dir
	// (and config file) this command sees, so the service and the client
	// commands talk about the same node.
	build := func(cmd *cobra.Command) (*service, error) {
		if platform != "linux" && platform != "darwin" {
			return nil, fmt.Errorf("tandem service supports linux (systemd) and darwin (launchd), not %q", platform)
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the tandem binary: %w", err)
		}
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		if strings.Contains(exe, string(filepath.Separator)+"go-build") {
			return nil, fmt.Errorf("this tandem binary is a temporary one of `go run` (%s): build or install one first (go install ./cmd/tandem)", exe)
		}
		dir, err := g.nodeDataDir()
		if err != nil {
			return nil, err
		}
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, err
		}
		args := []string{"up", "--data-dir", dir}
		if g.root.PersistentFlags().Changed("config") {
			conf, err := filepath.Abs(g.configPath)
			if err != nil {
				return nil, err
			}
			args = append(args, "--config", conf)
		}
		if desktopNotify {
			args = append(args, "--desktop-notify")
		}
		home := homeDir()
		cfgHome := os.Getenv("XDG_CONFIG_HOME")
		if cfgHome == "" {
			cfgHome = filepath.Join(home, ".config")
		}
		return &service{goos: platform, home: home, cfgHome: cfgHome, uid: os.Getuid(), exe: exe, args: args,
			run: execRunner, out: cmd.OutOrStdout(), dryRun: dryRun}, nil
	}
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Start your node at login: a systemd user unit (Linux) or a launchd agent (macOS)",
	}
	install := &cobra.Command{
		Use:   "install",
		Short: "Write the unit (or agent) that runs `tandem up` at login, and start it now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := build(cmd)
			if err != nil {
				return err
			}
			// A node already running on this data dir (a `tandem up` in a
			// terminal) holds it: the service's node waits its turn.
			if c, err := g.client(); err == nil && c.Health(cmd.Context()) == nil {
				fmt.Fprintf(s.out, "Note: a node already runs on this data dir (%s); the service's node starts once that one stops (the service manager retries).\n", c.URL)
			}
			return s.install(cmd.Context())
		},
	}
	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the service and remove its unit (or agent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := build(cmd)
			if err != nil {
				return err
			}
			return s.uninstall(cmd.Context())
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Is the service installed and running, and does the node answer?",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := build(cmd)
			if err != nil {
				return err
			}
			c, cerr := g.client()
			return s.status(cmd.Context(), c, cerr)
		},
	}
	for _, c := range []*cobra.Command{install, uninstall} {
		c.Flags().BoolVar(&dryRun, "dry-run", false, "print the file and the commands instead of writing and running them")
	}
	install.Flags().BoolVar(&desktopNotify, "desktop-notify", false, "the service runs `tandem up --desktop-notify`")
	for _, c := range []*cobra.Command{install, uninstall, status} {
		c.Flags().StringVar(&platform, "platform", runtime.GOOS, "linux (systemd user unit) or darwin (launchd agent)")
	}
	cmd.AddCommand(install, uninstall, status)
	return cmd
}

// homeDir is $HOME, else what the OS says.
func homeDir() string {
	if h := os.Getenv("HOME"); h != "" {
		return h
	}
	h, _ := os.UserHomeDir()
	return h
}
