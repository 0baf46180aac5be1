package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/demo"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var (
		short, noBrowser bool
		api              string
		partners         int
		rate             float64
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Try Tandem alone: your node plus demo partners on this machine, nothing leaves it",
		Long: `Starts your own node and a handful of demo partners in this process, all on
127.0.0.1 (no bootstrap peers, no mDNS, no STUN). The partners keep offers open,
answer "Focus now" within seconds and join sessions with a test-pattern video.
Unless --data-dir is given, your node lives in a temporary directory that is
removed when the demo stops, so demo sessions never mix with your real history.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The demo's nodes keep quiet unless asked: the banner says it all.
			level := "warn"
			if cmd.Flags().Changed("log-level") {
				level = g.logLevel
			}
			log, err := setupLogging(level, g.logFormat, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			opts := demo.Options{API: api, Partners: partners, ClockRate: 1, Log: log}
			if cmd.Flags().Changed("data-dir") {
				opts.DataDir = g.dataDir
			}
			if short {
				opts.ClockRate = demo.ShortRate
			}
			if cmd.Flags().Changed("clock-rate") {
				opts.ClockRate = rate
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := demo.Start(opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			printDemoBanner(out, d, opts)
			if !noBrowser {
				openBrowser(d.User.LoginURL())
			}
			<-ctx.Done()
			fmt.Fprintln(out, "Stopping the demo...")
			err = d.Stop()
			fmt.Fprintln(out, "Stopped.")
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&short, "short", false, "compressed clock: a 25 minute session lasts 2 minutes")
	f.BoolVar(&noBrowser, "no-browser", false, "do not open a browser")
	f.StringVar(&api, "api", node.DefaultAPIAddr, "local API and web UI address (port 0 = any free port)")
	f.IntVar(&partners, "partners", 4, "number of demo partners (1-4)")
	f.Float64Var(&rate, "clock-rate", demo.ShortRate, "how many times faster than real time the clock runs")
	f.MarkHidden("clock-rate")
	return cmd
}

func printDemoBanner(out io.Writer, d *demo.Demo, opts demo.Options) {
	fmt.Fprintf(out, "Tandem demo is up: your node (%s) and %d demo partners on this machine.\n", d.User.ID(), d.Partners())
	if opts.ClockRate > 1 {
		fmt.Fprintf(out, "  Clock:   compressed %gx (a 25 minute session lasts %.0f seconds)\n", opts.ClockRate, 25*60/opts.ClockRate)
	}
	dir := d.User.Status().DataDir
	if opts.DataDir == "" {
		dir += " (temporary, removed when the demo stops)"
	}
	fmt.Fprintf(out, "  Data:    %s\n", dir)
	fmt.Fprintf(out, "  CLI:     tandem --data-dir %s join\n", d.User.Status().DataDir)
	fmt.Fprintf(out, "  Web UI:  %s\n", d.User.LoginURL())
	fmt.Fprintln(out, `Open the Web UI link and press "Focus now". Press Ctrl-C to stop.`)
}
