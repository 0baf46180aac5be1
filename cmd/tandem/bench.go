package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	runpprof "runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node/bench"
)

func newBenchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a swarm of nodes or concurrent sessions on this machine (loopback only)",
		Long: `Benchmarks run real nodes inside this process on 127.0.0.1; nothing leaves the
machine. See docs/benchmarks.md for what every number means.`,
	}
	cmd.AddCommand(newBenchSwarmCmd(g), newBenchSessionCmd(g))
	return cmd
}

func newBenchSwarmCmd(g *globalFlags) *cobra.Command {
	var (
		cfg        bench.SwarmConfig
		cpuprofile string
		pprofAddr  string
		noIdle     bool
		seeds      []uint
	)
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Run N nodes with a seeded booking workload; report propagation, time to match, pairs, traffic, memory, CPU",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if pprofAddr != "" {
				closePprof, err := servePprof(pprofAddr)
				if err != nil {
					return err
				}
				defer closePprof()
			}
			cfg.Progress = cmd.ErrOrStderr()
			if !noIdle {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this program for the idle node: %w", err)
				}
				cfg.IdleNode = bench.IdleNode(exe)
			}
			if len(seeds) > 0 {
				var list []uint64
				for _, s := range seeds {
					if s == 0 {
						return fmt.Errorf("--seeds: seeds start at 1")
					}
					list = append(list, uint64(s))
				}
				var res *bench.SwarmSeries
				err := profiled(cpuprofile, func() error {
					var err error
					res, err = bench.RunSwarms(ctx, cfg, list)
					return err
				})
				if err != nil {
					return err
				}
				return g.output(cmd.OutOrStdout(), res, res.Table)
			}
			var res *bench.SwarmResult
			err := profiled(cpuprofile, func() error {
				var err error
				res, err = bench.RunSwarm(ctx, cfg)
				return err
			})
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), res, res.Table)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 50, "number of nodes")
	f.DurationVar(&cfg.Duration, "duration", 60*time.Second, "how long the workload runs")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the workload and topology")
	f.UintSliceVar(&seeds, "seeds", nil, "run once per seed (e.g. 1,2,3) and report each run, the median and the spread")
	f.IntVar(&cfg.Degree, "degree", 4, "peers each node dials at start")
	f.IntVar(&cfg.Sybils, "sybils", 0, "attacker identities in the swarm: they flood offers into honest slot classes, hold without confirming and never answer (docs/benchmarks.md)")
	f.StringVar(&cfg.Transport, "transport", "tcp", "transport between the nodes: tcp (Noise, yamux) or quic (fits large swarms in the open-file limit)")
	f.DurationVar(&cfg.Settle, "settle", 30*time.Second, "longest wait for matching to finish after the workload")
	f.DurationVar(&cfg.Opportunity, "opportunity", time.Second, "two compatible requests open together this long should have been paired")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the run to this file")
	f.StringVar(&pprofAddr, "pprof", "", "serve Go's /debug/pprof on this loopback address (e.g. 127.0.0.1:6060) during the run, to profile one phase or dump goroutines")
	f.IntVar(&cfg.LaneVolume, "lane-volume", 0, "bookings a slot class or lane topic shows before newcomers go a lane deeper (0: the product's default), to compare")
	f.DurationVar(&cfg.ClimbAlone, "climb-alone", 0, "how long a booking stays on a lane that shows nobody it could pair with (0: the product's default), to compare")
	f.IntVar(&cfg.PartnerKeeps, "partner-keeps", 0, "up to how many lane volumes a topic keeps a newcomer that could pair with a booking waiting there (0: the product's 2; 1: never), to compare")
	f.DurationVar(&cfg.ClassLinger, "class-linger", 0, "how long a node stays on a slot class or lane topic after its booking there stopped searching (0: the product's default), to compare")
	f.BoolVar(&cfg.NoLanes, "no-lanes", false, "keep public bookings on their day shards (no slot class topics or lanes), to compare")
	f.BoolVar(&noIdle, "no-idle", false, "skip measuring an idle `tandem up` in its own process")
	return cmd
}

func newBenchSessionCmd(g *globalFlags) *cobra.Command {
	var (
		cfg        bench.SessionConfig
		cpuprofile string
	)
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Open P concurrent sessions with synthetic browsers; report setup time, first relayed packet, relay CPU",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Progress = cmd.ErrOrStderr()
			var res *bench.SessionResult
			err := profiled(cpuprofile, func() error {
				var err error
				res, err = bench.RunSession(ctx, cfg)
				return err
			})
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), res, res.Table)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Pairs, "pairs", 10, "number of concurrent sessions")
	f.DurationVar(&cfg.RelayWindow, "relay-window", 10*time.Second, "how long relay CPU is measured")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the run to this file")
	return cmd
}

// profiled runs f, with a CPU profile written to path when it is set.
func profiled(path string, f func() error) error {
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating CPU profile: %w", err)
	}
	defer out.Close()
	if err := runpprof.StartCPUProfile(out); err != nil {
		return fmt.Errorf("starting CPU profile: %w", err)
	}
	defer runpprof.StopCPUProfile()
	return f()
}

// servePprof serves net/http/pprof on a loopback address until the
// returned func is called: a profile of one phase of a long run (a
// collapse at N = 1000), which --cpuprofile, covering the whole command,
// cannot isolate.
func servePprof(addr string) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--pprof %q: must be a loopback IP address and port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
