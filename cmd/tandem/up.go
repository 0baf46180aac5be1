package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node"
)

func newUpCmd(g *globalFlags) *cobra.Command {
	var (
		listen, bootstrap, peers []string
		api, name                string
		noMDNS, desktopNotify    bool
		lanOnly                  bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run your node in the foreground (libp2p host, store, local API and web UI)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := node.Default()
			if err := g.loadConfig(&cfg); err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("data-dir") || cfg.DataDir == "" {
				cfg.DataDir = g.dataDir
			}
			if f.Changed("listen") {
				cfg.Listen = listen
			}
			if f.Changed("api") {
				cfg.API = api
			}
			if f.Changed("bootstrap") {
				cfg.Bootstrap = bootstrap
			}
			if f.Changed("peer") {
				cfg.Peers = append(cfg.Peers, peers...)
			}
			if noMDNS {
				cfg.MDNS = false
			}
			if f.Changed("lan-only") {
				cfg.LANOnly = lanOnly
			}
			if f.Changed("desktop-notify") {
				cfg.DesktopNotify = desktopNotify
			}
			if f.Changed("name") {
				cfg.Name = name
			}
			if f.Changed("log-level") || cfg.LogLevel == "" {
				cfg.LogLevel = g.logLevel
			}
			if f.Changed("log-format") || cfg.LogFormat == "" {
				cfg.LogFormat = g.logFormat
			}
			log, err := setupLogging(cfg.LogLevel, cfg.LogFormat, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			setMemoryLimit()
			return runUp(cmd.Context(), cfg, log, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&listen, "listen", nil, "libp2p listen multiaddr (repeatable)")
	f.StringVar(&api, "api", node.DefaultAPIAddr, "local API and web UI address, HOST:PORT on loopback (port 0 = any free port)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, `bootstrap peer multiaddr (repeatable); replaces the public defaults; "none" for none`)
	f.StringArrayVar(&peers, "peer", nil, "peer multiaddr to dial directly (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn off LAN discovery by multicast DNS")
	f.BoolVar(&lanOnly, "lan-only", false, "an office or classroom node: find peers by mDNS and talk to nothing beyond the LAN (no DHT, bootstrap, public STUN or UPnP)")
	f.StringVar(&name, "name", "", "display name shown to partners")
	f.BoolVar(&desktopNotify, "desktop-notify", false, "show the reminders and match notices chosen in the web UI's settings as desktop notifications (notify-send)")
	return cmd
}

func runUp(ctx context.Context, cfg node.Config, log *slog.Logger, out io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg, log)
	if errors.Is(err, node.ErrAlreadyRunning) {
		return fmt.Errorf("another tandem node is already running with data dir %s (stop it first, or use --data-dir)", cfg.DataDir)
	}
	if err != nil {
		return err
	}
	if err := n.Start(); err != nil {
		return err
	}
	st := n.Status()
	fmt.Fprintf(out, "Tandem %s is up.\n", node.Version)
	fmt.Fprintf(out, "  Peer ID:   %s\n", st.PeerID)
	for i, a := range st.Addrs {
		label := "  Listening:"
		if i > 0 {
			label = "            "
		}
		fmt.Fprintf(out, "%s %s\n", label, a)
	}
	fmt.Fprintf(out, "  Data dir:  %s\n", cfg.DataDir)
	if cfg.LocalOnly() {
		fmt.Fprintln(out, "  Network:   local only (no public bootstrap, no mDNS)")
	}
	if cfg.LANOnly {
		fmt.Fprintln(out, "  Network:   LAN only (mDNS; nothing beyond the LAN)")
	}
	fmt.Fprintf(out, "  Web UI:    %s\n", n.LoginURL())
	if !st.Identity.Ready {
		// A new identity's stamp is minted in the background: the web UI
		// works meanwhile, and bookings wait for it to be announced.
		fmt.Fprintln(out, "  Identity:  preparing (one-time, a few seconds); your open times go out once it is ready")
	}
	nctx, stopNotices := context.WithCancel(ctx)
	noticesDone := startDesktopNotices(nctx, cfg, n, log, out)
	defer func() { stopNotices(); <-noticesDone }()
	fmt.Fprintln(out, "Open the Web UI link in your browser (later, `tandem open` opens it). Press Ctrl-C to stop.")
	select {
	case <-ctx.Done():
	case <-n.Done():
	}
	stopNotices()
	<-noticesDone
	fmt.Fprintln(out, "Stopping...")
	if err := n.Stop(); err != nil && !strings.Contains(err.Error(), "closed") {
		log.Warn("stopping", "err", err)
	}
	fmt.Fprintln(out, "Stopped.")
	return nil
}

// defaultMemoryLimit is the Go runtime's soft memory limit for `tandem up`
// unless GOMEMLIMIT sets one. Without it the collector lets the heap grow
// to twice what is live, and after a burst (10,000 Sybil offers on the
// board, gossip's caches full) the process kept 80-86 MB resident for a
// live heap of about 30 MB. The limit is soft: a node that needs more (a
// session relaying media) gets it, and the collector only works harder
// near it.
const defaultMemoryLimit = 48 << 20

func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
