// Package demo runs `tandem demo`: the user's own node plus a handful of
// demo partners in the same process, each a real Tandem node (own
// identity, real libp2p on loopback, real matchmaking and WebRTC
// sessions) driven by a small script that behaves like a person: offers at
// plausible hours, answers "Focus now" within seconds, joins sessions with
// a video test pattern showing its name, says a goal, greets, mostly stays
// quiet, sometimes steps away, checks in at the end, and one of them is
// sometimes late so the rematch flow can be seen.
//
// Everything is local: no bootstrap peers, no mDNS, no STUN; the nodes
// listen on 127.0.0.1 only.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tandem-cowork/tandem/node"
)

// ShortRate is how much faster the clock runs with --short: a 25 minute
// session lasts 2 minutes.
const ShortRate = 12.5

// Options configure a demo.
type Options struct {
	// DataDir keeps the user's node there; "" uses a temporary directory
	// removed on Stop, so demo sessions never mix with real history.
	DataDir string
	// API is the user's node API address (default node.DefaultAPIAddr,
	// falling back to any free port).
	API string
	// ClockRate compresses time (1 = real time; ShortRate for --short).
	ClockRate float64
	// Partners is how many demo partners to run (1 to 4, default 4).
	Partners int
	// Seed makes the partners' choices repeatable (0 = random).
	Seed uint64
	Log  *slog.Logger
}

// Clock runs rate times faster than real time from the moment it starts.
// A test changes its pace: real time while a session connects (a partner
// late by five minutes of a 100x clock is late after three real seconds,
// and a busy machine takes that long), fast up to the next moment it
// wants to watch and real time from there (FastForward), so no phase is
// ever skipped however late the machine runs a goroutine.
type Clock struct {
	mu       sync.Mutex
	base     time.Time // demo time at realBase
	realBase time.Time
	rate     float64
	until    time.Time // zero, or the demo time from which rate is 1
}

// NewClock starts a clock at the real time now.
func NewClock(rate float64) *Clock {
	if rate <= 0 {
		rate = 1
	}
	now := time.Now()
	return &Clock{base: now, realBase: now, rate: rate}
}

// Now is the demo's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now, _ := c.nowLocked()
	return now
}

// nowLocked is the demo time and the rate at which it runs now.
func (c *Clock) nowLocked() (time.Time, float64) {
	real := time.Since(c.realBase)
	now := c.base.Add(time.Duration(float64(real) * c.rate))
	if c.until.IsZero() || now.Before(c.until) {
		return now, c.rate
	}
	// Past the stop: real time since the clock got there.
	fast := time.Duration(float64(c.until.Sub(c.base)) / c.rate)
	return c.until.Add(real - fast), 1
}

// Rate is how many times faster than real time the clock runs now.
func (c *Clock) Rate() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, rate := c.nowLocked()
	return rate
}

// SetRate makes the clock run rate times faster than real time from now
// on (rate <= 0 means 1), without a jump.
func (c *Clock) SetRate(rate float64) { c.FastForward(rate, time.Time{}) }

// FastForward makes the clock run rate times faster than real time until
// it shows until, and at real time from there on (a zero until: rate for
// good).
func (c *Clock) FastForward(rate float64, until time.Time) {
	if rate <= 0 {
		rate = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now, _ := c.nowLocked()
	if !until.IsZero() && !until.After(now) {
		rate, until = 1, time.Time{} // already there
	}
	c.base, c.realBase, c.rate, c.until = now, time.Now(), rate, until
}

// Real converts a span of demo time into real time at the current rate.
func (c *Clock) Real(d time.Duration) time.Duration {
	return time.Duration(float64(d) / c.Rate())
}

// Demo is a running demo.
type Demo struct {
	// User is the user's own node; its LoginURL opens the UI.
	User  *node.Node
	Clock *Clock

	opts    Options
	dir     string
	ownDir  bool
	log     *slog.Logger
	rng     *rand.Rand
	rngMu   sync.Mutex
	peers   []*partner
	claimMu sync.Mutex
	claimed map[string]bool // focus-now requests a partner is answering
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Start starts the user's node and the demo partners.
func Start(opts Options) (*Demo, error) {
	if opts.ClockRate <= 0 {
		opts.ClockRate = 1
	}
	if opts.Partners <= 0 || opts.Partners > len(personas) {
		opts.Partners = len(personas)
	}
	if opts.API == "" {
		opts.API = node.DefaultAPIAddr
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	d := &Demo{
		opts: opts, Clock: NewClock(opts.ClockRate), log: opts.Log,
		rng: rand.New(rand.NewPCG(seed, seed^0x7a6e)), claimed: map[string]bool{},
	}
	tmp, err := os.MkdirTemp("", "tandem-demo-")
	if err != nil {
		return nil, fmt.Errorf("creating demo dir: %w", err)
	}
	d.dir, d.ownDir = tmp, true
	userDir := opts.DataDir
	if userDir == "" {
		userDir = filepath.Join(tmp, "you")
	}
	ucfg := d.nodeConfig(userDir)
	ucfg.API = opts.API
	ucfg.Demo = true
	if d.User, err = node.New(ucfg, opts.Log.With("node", "you")); err != nil {
		d.cleanup()
		return nil, err
	}
	if err := d.User.Start(); err != nil {
		d.cleanup()
		return nil, err
	}
	var userAddr string
	for _, a := range d.User.Addrs() {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			userAddr = a
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, p := range personas[:opts.Partners] {
		cfg := d.nodeConfig(filepath.Join(tmp, "partners", strings.ToLower(p.name)))
		cfg.Name = p.name + " (demo)"
		cfg.Peers = []string{userAddr}
		cfg.API = "127.0.0.1:0"
		pt := &partner{d: d, persona: p, cfg: cfg, sessions: map[string]*sessionScript{}, lateDecided: map[string]bool{}}
		if err := pt.start(); err != nil {
			d.Stop()
			return nil, fmt.Errorf("starting demo partner %s: %w", p.name, err)
		}
		d.peers = append(d.peers, pt)
	}
	// Demo partners never pair among themselves: each blocks the others.
	for _, a := range d.peers {
		for _, b := range d.peers {
			if a != b {
				a.n.Matchmaking().SetPerson(b.n.ID().String(), "block", 0)
			}
		}
	}
	for _, p := range d.peers {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			p.run(ctx)
		}()
	}
	return d, nil
}

// nodeConfig is a local-only node on loopback following the demo clock.
func (d *Demo) nodeConfig(dir string) node.Config {
	cfg := node.Default()
	cfg.DataDir = dir
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Bootstrap = []string{node.BootstrapNone}
	cfg.MDNS, cfg.NATPortMap = false, false
	cfg.LowResources = true
	cfg.Now, cfg.Rate = d.Clock.Now, d.Clock.Rate
	cfg.ClockRate = d.opts.ClockRate
	// The matcher's timers run on the demo clock, offers living three
	// re-announcements; re-announce at most once a real second however
	// fast the clock runs.
	cfg.Matchmaking.AnnounceInterval = max(30*time.Second, time.Duration(d.opts.ClockRate*float64(time.Second)))
	cfg.Matchmaking.OfferTTL = 3 * cfg.Matchmaking.AnnounceInterval
	// The demo's nodes meet only each other: a cheap identity stamp.
	cfg.Matchmaking.StampBits = 8
	return cfg
}

func (d *Demo) chance(p float64) bool {
	d.rngMu.Lock()
	defer d.rngMu.Unlock()
	return d.rng.Float64() < p
}

func (d *Demo) pick(n int) int {
	d.rngMu.Lock()
	defer d.rngMu.Unlock()
	return d.rng.IntN(n)
}

// claim lets one partner answer a focus-now request.
func (d *Demo) claim(key string) bool {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	if d.claimed[key] {
		return false
	}
	d.claimed[key] = true
	return true
}

func (d *Demo) unclaim(key string) {
	d.claimMu.Lock()
	delete(d.claimed, key)
	d.claimMu.Unlock()
}

// SetClockRate makes the demo's clock run rate times faster than real
// time from now on (Clock.SetRate), and tells the user's UI.
func (d *Demo) SetClockRate(rate float64) {
	d.Clock.SetRate(rate)
	d.User.ClockChanged()
}

// FastForward runs the demo's clock rate times faster than real time until
// it shows until, and at real time from there (Clock.FastForward), and
// tells the user's UI.
func (d *Demo) FastForward(rate float64, until time.Time) {
	d.Clock.FastForward(rate, until)
	d.User.ClockChanged()
}

// Partners is how many demo partners run.
func (d *Demo) Partners() int { return len(d.peers) }

// Stop stops the partners and the user's node and removes the temporary
// data.
func (d *Demo) Stop() error {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	var errs []error
	for _, p := range d.peers {
		errs = append(errs, p.stop())
	}
	if d.User != nil {
		errs = append(errs, d.User.Stop())
	}
	d.cleanup()
	return errors.Join(errs...)
}

func (d *Demo) cleanup() {
	if d.ownDir {
		os.RemoveAll(d.dir)
	}
}
