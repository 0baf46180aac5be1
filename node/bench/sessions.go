package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/browserleg"
	"github.com/tandem-cowork/tandem/node/store"
	"github.com/tandem-cowork/tandem/session"
	"github.com/tandem-cowork/tandem/session/media"
)

// SessionConfig configures RunSession. Zero values take the defaults.
type SessionConfig struct {
	// Pairs is how many sessions run at once (default 10).
	Pairs int
	// RelayWindow is how long relay CPU is measured (default 10 s).
	RelayWindow time.Duration
	Progress    io.Writer
	Log         *slog.Logger
}

// SessionResult is what RunSession measured.
type SessionResult struct {
	Pairs int `json:"pairs"`
	CPUs  int `json:"cpus"`
	// Setup: from the lobby opening on the node that dials (the lower
	// peer ID; the other side's session is already open, as it is for a
	// booking matched ahead of time) to both sides having the partner's
	// hello: the PeerConnection up and the data channel open and carrying
	// a message.
	Setup Dist `json:"lobby_to_datachannel"`
	// SetupTogether is the same when both sides open their session at the
	// same moment, as they do right after a "focus now" match: when the
	// dialling side is first, the other side refuses the signalling
	// stream and the dialler retries after 125-375 ms (session/link.go).
	SetupTogether Dist `json:"lobby_to_datachannel_opened_together"`
	// FirstRTP: from the same start as Setup to the first RTP packet of
	// the dialling side's browser arriving at the other side's browser
	// through both nodes.
	FirstRTP Dist `json:"first_relayed_rtp"`
	// RelayCPUPct is the CPU one node spends relaying one user's stream
	// (1.5 Mbit/s video + 40 kbit/s audio) one way, in percent of one core:
	// (CPU with every stream relayed through both nodes - CPU of the same
	// browsers talking directly) / relayed streams.
	RelayCPUPct    float64 `json:"relay_cpu_pct_per_stream"`
	RelayedStreams int     `json:"relayed_streams"`
	PathCPUPct     float64 `json:"path_cpu_pct"`
	DirectCPUPct   float64 `json:"direct_cpu_pct"`
	// DeliveredPct: packets received by the browsers / packets sent, over
	// the relay window.
	DeliveredPct float64  `json:"delivered_pct"`
	Problems     []string `json:"problems,omitempty"`
}

// sessionPeer is one node of a session pair: a libp2p host on loopback,
// an in-memory store and a session Manager.
type sessionPeer struct {
	h   host.Host
	db  *badger.DB
	m   *session.Manager
	mu  sync.Mutex
	evs []session.Event
	ch  chan struct{}
}

func newSessionPeer(log *slog.Logger) (*sessionPeer, error) {
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
	)
	if err != nil {
		return nil, fmt.Errorf("creating host: %w", err)
	}
	db, err := store.Open("", true, log)
	if err != nil {
		h.Close()
		return nil, err
	}
	p := &sessionPeer{h: h, db: db, ch: make(chan struct{}, 1)}
	p.m, err = session.NewManager(session.Config{
		Host: h, DB: db, Log: log, OnEvent: p.event,
		IncludeLoopback: true, LoopbackOnly: true,
	})
	if err == nil {
		err = p.m.Start(context.Background())
	}
	if err != nil {
		db.Close()
		h.Close()
		return nil, fmt.Errorf("starting session manager: %w", err)
	}
	return p, nil
}

func (p *sessionPeer) event(e session.Event) {
	p.mu.Lock()
	p.evs = append(p.evs, e)
	p.mu.Unlock()
	select {
	case p.ch <- struct{}{}:
	default:
	}
}

// eventAt is when the first event matching pred happened (zero if none).
func (p *sessionPeer) eventAt(pred func(session.Event) bool) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.evs {
		if pred(e) {
			return e.At
		}
	}
	return time.Time{}
}

func (p *sessionPeer) close() {
	p.m.Close()
	p.h.Close()
	p.db.Close()
}

type sessionPair struct {
	a, b         *sessionPeer
	sa, sb       *session.Session
	browA, browB *browserleg.Leg
	ida, idb     string
}

// RunSession opens cfg.Pairs sessions at once, in their lobby, between pairs of
// nodes on loopback, attaches a synthetic browser on each side, and
// measures setup, the first relayed packet, and relay CPU.
func RunSession(ctx context.Context, cfg SessionConfig) (*SessionResult, error) {
	if cfg.Pairs <= 0 {
		cfg.Pairs = 10
	}
	if cfg.RelayWindow <= 0 {
		cfg.RelayWindow = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	pr := newProgress(cfg.Progress)
	defer pr.finish()
	res := &SessionResult{Pairs: cfg.Pairs, CPUs: runtime.NumCPU()}
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		return nil, err
	}

	// Pairs opened together (focus now): setup only, no browsers.
	together, err := newSessionPairs(ctx, cfg, api, pr, "starting", false)
	defer func() { closePairs(together) }()
	if err != nil {
		return nil, err
	}
	pr.set("opening", 0, 0)
	if err := openAll(ctx, together, true); err != nil {
		return nil, err
	}
	if err := pollUntil(ctx, 30*time.Second, func() bool {
		for _, p := range together {
			if p.joinedAt().IsZero() {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("waiting for sessions: %w", err)
	}
	var setupTogether []time.Duration
	for _, p := range together {
		lobby := later(p.a.eventAt(isLobby(p.ida)), p.b.eventAt(isLobby(p.idb)))
		setupTogether = append(setupTogether, p.joinedAt().Sub(lobby))
	}
	res.SetupTogether = distOf(setupTogether)
	closePairs(together)
	together = nil

	// Pairs whose answering side is already open when the dialling side's
	// lobby opens, with browsers: setup, first packet, relay CPU.
	pairs, err := newSessionPairs(ctx, cfg, api, pr, "starting", true)
	defer func() { closePairs(pairs) }()
	if err != nil {
		return nil, err
	}
	pr.set("opening", 0, 0)
	if err := openAll(ctx, pairs, false); err != nil {
		return nil, err
	}
	// Wait for every session to be joined and media to flow both ways.
	err = pollUntil(ctx, 30*time.Second, func() bool {
		for _, p := range pairs {
			if p.joinedAt().IsZero() || p.browA.FirstAt().IsZero() || p.browB.FirstAt().IsZero() {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for sessions and media: %w", err)
	}
	var setup, first []time.Duration
	for _, p := range pairs {
		lobby := p.dialler().eventAt(isLobby(p.diallerBooking()))
		setup = append(setup, p.joinedAt().Sub(lobby))
		first = append(first, p.received().FirstAt().Sub(lobby))
	}
	res.Setup, res.FirstRTP = distOf(setup), distOf(first)

	// Relay CPU: every browser sends; each stream is relayed by two nodes.
	pr.set("relaying", 0, 0)
	path, delivered, err := cpuWindow(ctx, cfg.RelayWindow, pairs, func(p *sessionPair) []*browserleg.Leg {
		return []*browserleg.Leg{p.browA, p.browB}
	})
	if err != nil {
		return nil, err
	}
	res.DeliveredPct = delivered
	closePairs(pairs)
	pairs = nil

	// The same browsers without the nodes: two pion PeerConnections
	// talking directly, same rates.
	pr.set("direct", 0, 0)
	direct := make([]*sessionPair, cfg.Pairs)
	defer func() {
		for _, p := range direct {
			if p != nil {
				p.browA.Close()
				p.browB.Close()
			}
		}
	}()
	for i := range direct {
		a, err := newBrowser(api)
		if err != nil {
			return nil, err
		}
		b, err := newBrowser(api)
		if err != nil {
			a.Close()
			return nil, err
		}
		direct[i] = &sessionPair{browA: a, browB: b}
		offer, err := a.Offer(ctx)
		if err != nil {
			return nil, err
		}
		ans, err := b.Answer(ctx, offer)
		if err != nil {
			return nil, err
		}
		if err := a.Answered(ans); err != nil {
			return nil, err
		}
		a.Send()
		b.Send()
	}
	if err := pollUntil(ctx, 30*time.Second, func() bool {
		for _, p := range direct {
			if p.browA.FirstAt().IsZero() || p.browB.FirstAt().IsZero() {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("waiting for direct media: %w", err)
	}
	directCPU, _, err := cpuWindow(ctx, cfg.RelayWindow, direct, func(p *sessionPair) []*browserleg.Leg {
		return []*browserleg.Leg{p.browA, p.browB}
	})
	if err != nil {
		return nil, err
	}
	secs := cfg.RelayWindow.Seconds()
	res.PathCPUPct = 100 * path.Seconds() / secs
	res.DirectCPUPct = 100 * directCPU.Seconds() / secs
	// Per pair, two streams (one each way), each relayed by both nodes.
	res.RelayedStreams = 4 * cfg.Pairs
	res.RelayCPUPct = (res.PathCPUPct - res.DirectCPUPct) / float64(res.RelayedStreams)
	if res.DeliveredPct < 95 {
		res.Problems = append(res.Problems, fmt.Sprintf("only %.1f%% of packets delivered: the machine is saturated", res.DeliveredPct))
	}
	return res, nil
}

func isLobby(id string) func(session.Event) bool {
	return func(e session.Event) bool {
		return e.Type == session.EventPhase && e.Booking == id && e.Phase == session.PhaseLobby
	}
}

// newSessionPairs makes cfg.Pairs connected pairs of nodes, with
// synthetic browsers when browsers is set.
func newSessionPairs(ctx context.Context, cfg SessionConfig, api *webrtc.API, pr *progress, phase string, browsers bool) ([]*sessionPair, error) {
	pairs := make([]*sessionPair, cfg.Pairs)
	for i := range pairs {
		pr.set(phase, float64(i), float64(cfg.Pairs))
		p := &sessionPair{ida: fmt.Sprintf("a-%d", i), idb: fmt.Sprintf("b-%d", i)}
		pairs[i] = p
		var err error
		if p.a, err = newSessionPeer(cfg.Log); err != nil {
			return pairs, err
		}
		if p.b, err = newSessionPeer(cfg.Log); err != nil {
			return pairs, err
		}
		// Matched partners have talked over a direct connection already.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = p.a.h.Connect(cctx, peer.AddrInfo{ID: p.b.h.ID(), Addrs: p.b.h.Addrs()})
		cancel()
		if err != nil {
			return pairs, fmt.Errorf("connecting a pair: %w", err)
		}
		if !browsers {
			continue
		}
		if p.browA, err = newBrowser(api); err != nil {
			return pairs, err
		}
		if p.browB, err = newBrowser(api); err != nil {
			return pairs, err
		}
	}
	return pairs, nil
}

func closePairs(pairs []*sessionPair) {
	for _, p := range pairs {
		if p != nil {
			p.close()
		}
	}
}

// openAll opens every pair's sessions at once.
func openAll(ctx context.Context, pairs []*sessionPair, together bool) error {
	start := time.Now()
	errs := make(chan error, len(pairs))
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Go(func() { errs <- p.open(ctx, start, together) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// dialler is the side that offers and dials (the lower peer ID).
func (p *sessionPair) dialler() *sessionPeer {
	if p.a.h.ID() < p.b.h.ID() {
		return p.a
	}
	return p.b
}

func (p *sessionPair) diallerBooking() string {
	if p.dialler() == p.a {
		return p.ida
	}
	return p.idb
}

// received is the browser on the answering side, which gets the
// dialler's media.
func (p *sessionPair) received() *browserleg.Leg {
	if p.dialler() == p.a {
		return p.browB
	}
	return p.browA
}

// open opens both sides' sessions and attaches both browsers (if any).
// With together, both sessions open at the same moment; otherwise the
// answering side first, as when the booking was matched ahead of time.
func (p *sessionPair) open(ctx context.Context, start time.Time, together bool) error {
	mk := func(other *sessionPeer, id, otherID, name string) session.Booking {
		// The start is two minutes off, inside the lobby window: the
		// lobby opens at Open and the dialling side dials at once.
		return session.Booking{ID: id, PartnerBooking: otherID, Partner: other.h.ID(), Name: name,
			PartnerName: "partner", Start: start.Add(2 * time.Minute), DurationMin: 25, Kind: session.KindScheduled}
	}
	var errA, errB error
	openA := func() { p.sa, errA = p.a.m.Open(mk(p.b, p.ida, p.idb, "a")) }
	openB := func() { p.sb, errB = p.b.m.Open(mk(p.a, p.idb, p.ida, "b")) }
	switch {
	case together:
		var wg sync.WaitGroup
		wg.Go(openA)
		wg.Go(openB)
		wg.Wait()
	case p.dialler() == p.a:
		openB()
		openA()
	default:
		openA()
		openB()
	}
	if err := errors.Join(errA, errB); err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	if p.browA == nil {
		return nil
	}
	for _, x := range []struct {
		s *session.Session
		b *browserleg.Leg
	}{{p.sa, p.browA}, {p.sb, p.browB}} {
		if err := x.b.Attach(ctx, x.s.AttachBrowser); err != nil {
			return fmt.Errorf("attaching browser: %w", err)
		}
	}
	return nil
}

// joinedAt is when both sides had the partner's hello (zero before).
func (p *sessionPair) joinedAt() time.Time {
	ja := p.a.eventAt(func(e session.Event) bool { return e.Type == session.EventPartnerJoined && e.Booking == p.ida })
	jb := p.b.eventAt(func(e session.Event) bool { return e.Type == session.EventPartnerJoined && e.Booking == p.idb })
	if ja.IsZero() || jb.IsZero() {
		return time.Time{}
	}
	return later(ja, jb)
}

func (p *sessionPair) close() {
	if p.browA != nil {
		p.browA.Close()
	}
	if p.browB != nil {
		p.browB.Close()
	}
	for _, x := range []*sessionPeer{p.a, p.b} {
		if x != nil {
			x.close()
		}
	}
}

// cpuWindow measures this process's CPU over d while the browsers send,
// and the share of sent packets that arrived.
func cpuWindow(ctx context.Context, d time.Duration, pairs []*sessionPair, browsers func(*sessionPair) []*browserleg.Leg) (time.Duration, float64, error) {
	var r0 int64
	for _, p := range pairs {
		for _, b := range browsers(p) {
			r0 += b.Received()
		}
	}
	c0 := cpuNow()
	t := time.NewTimer(d) // the measurement window
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-t.C:
	}
	cpu := cpuNow().sub(c0).total()
	var r1 int64
	for _, p := range pairs {
		for _, b := range browsers(p) {
			r1 += b.Received()
		}
	}
	sent := float64(len(pairs)) * 2 * d.Seconds() * browserleg.SyntheticPPS
	return cpu, 100 * float64(r1-r0) / sent, nil
}

// Table writes the session benchmark's table.
func (r *SessionResult) Table(w io.Writer) {
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "%-34s %s\n", k, fmt.Sprintf(f, a...)) }
	fmt.Fprintf(w, "Tandem session benchmark: %d concurrent pairs, %d CPUs\n", r.Pairs, r.CPUs)
	row("pairs", "%d", r.Pairs)
	row("lobby -> data channel p50/p95", "%s / %s ms (opened together, as for focus now: %s / %s ms)",
		fmtMS(r.Setup.P50), fmtMS(r.Setup.P95), fmtMS(r.SetupTogether.P50), fmtMS(r.SetupTogether.P95))
	row("first relayed RTP p50/p95", "%s / %s ms", fmtMS(r.FirstRTP.P50), fmtMS(r.FirstRTP.P95))
	row("relay CPU per stream", "%.2f%% of a core (1.5 Mbit/s video + 40 kbit/s audio, one node, one way)", r.RelayCPUPct)
	row("  whole process", "%.0f%% with %d streams relayed, %.0f%% browsers direct; %.1f%% of packets delivered",
		r.PathCPUPct, r.RelayedStreams, r.DirectCPUPct, r.DeliveredPct)
	for _, p := range r.Problems {
		fmt.Fprintln(w, "problem: "+p)
	}
}
