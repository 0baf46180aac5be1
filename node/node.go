// Package node is the Tandem daemon: the libp2p host and its identity,
// peer discovery, the badger store, the matchmaker, and the local HTTP API
// with the embedded web UI. cmd/tandem only parses flags and calls
// New / Start / Stop.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/routing"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/store"
	"github.com/tandem-cowork/tandem/session"
)

// Version is the node's version, shown by `tandem version` and sent as the
// libp2p user agent.
const Version = "0.1.0"

// ErrAlreadyRunning is returned by New when another node holds the data dir.
var ErrAlreadyRunning = store.ErrLocked

// Node is one user's Tandem node.
type Node struct {
	cfg  Config
	log  *slog.Logger
	host host.Host
	ps   *pubsub.PubSub
	db   *badger.DB
	disc *discovery
	mm   *matchmaking.Service
	sm   *session.Manager
	turn *turnHelper
	// finder finds peers on offer topics through the DHT.
	finder *topicFinder
	// sessionKick wakes the session opener when bookings change.
	sessionKick chan struct{}
	// leftUnmatched names, by booking, the partner booking of a session
	// the node ended because its booking was no longer in that match
	// (sessions.go): that session's end must not touch the booking, which
	// may have been matched again with the same partner booking meanwhile.
	leftMu        sync.Mutex
	leftUnmatched map[string]string
	events        *events
	metrics       *metrics
	// tokenMu guards token and calToken, which POST /api/v1/token/rotate
	// and POST /api/v1/calendar/rotate replace.
	tokenMu  sync.RWMutex
	token    string
	calToken string // the calendar feed's (calendar.go)
	// rotated is closed (and replaced) when the API token is rotated:
	// event streams opened with the old token end then (token.go).
	rotated chan struct{}

	api      *http.Server
	apiURL   string
	ctx      context.Context // the node's lifetime, set by Start
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopped  sync.Once
	stopping chan struct{} // closed when Stop begins
	done     chan struct{} // closed when Stop has finished

	// hp is hole punching; upgrade retries it for partners that are
	// reachable only through a relay.
	hp      *holePunch
	upgrade *upgrader
}

// New prepares a node: identity, store and host. Nothing is announced to the
// network until Start.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg.Name = strings.TrimSpace(cfg.Name)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg, _ = cfg.withLANOnly() // checked by Validate
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating data dir: %w", err)
		}
	}
	n := &Node{cfg: cfg, log: log, events: newEvents(), metrics: newMetrics(), sessionKick: make(chan struct{}, 1), leftUnmatched: map[string]string{},
		stopping: make(chan struct{}), done: make(chan struct{}), rotated: make(chan struct{})}
	// The store comes first: its directory lock is what tells a second
	// `tandem up` on the same data dir to go away, before it touches anything.
	db, err := store.Open(filepath.Join(cfg.DataDir, storeDir), cfg.InMemory, log)
	if err != nil {
		return nil, err
	}
	n.db = db
	key, err := loadOrCreateIdentity(cfg.DataDir)
	if err != nil {
		db.Close()
		return nil, err
	}
	if n.host, n.hp, err = newHost(cfg, key, n.metrics.reg); err != nil {
		db.Close()
		return nil, err
	}
	n.upgrade = newUpgrader(n.host, n.hp, log.With("pkg", "reach"))
	// The token survives restarts (see token.go); a node without a data
	// dir (benchmarks) gets a fresh one.
	n.token, n.calToken = newToken(), newToken()
	if cfg.DataDir != "" {
		if n.token, _, err = loadOrCreateToken(cfg.DataDir); err == nil {
			n.calToken, _, err = loadOrCreateSecret(cfg.DataDir, CalendarTokenFile)
		}
		if err != nil {
			n.hp.close()
			n.host.Close()
			db.Close()
			return nil, err
		}
	}
	return n, nil
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Matchmaking is the node's matcher.
func (n *Node) Matchmaking() *matchmaking.Service { return n.mm }

// APIURL is the base URL of the local API, set by Start.
func (n *Node) APIURL() string { return n.apiURL }

// Token is the API token.
func (n *Node) Token() string { return n.currentToken() }

// LoginURL opens the web UI and hands it the token once.
func (n *Node) LoginURL() string { return LoginURL(n.apiURL, n.currentToken()) }

// LoginURL is the web UI's login link for a node at apiURL with token.
func LoginURL(apiURL, token string) string { return apiURL + "/login?token=" + token }

// Addrs are the node's listen addresses with its peer ID, ready to share.
func (n *Node) Addrs() []string {
	var out []string
	p2p, _ := ma.NewMultiaddr("/p2p/" + n.host.ID().String())
	for _, a := range n.host.Addrs() {
		out = append(out, a.Encapsulate(p2p).String())
	}
	return out
}

// Start joins the network, starts the matcher and serves the local API.
func (n *Node) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel = ctx, cancel
	var err error
	n.finder = &topicFinder{log: n.log.With("pkg", "discovery")}
	gate := matchmaking.NewGossipGate()
	n.ps, err = pubsub.NewGossipSub(ctx, n.host, PubSubOptions(gate)...)
	if err != nil {
		return n.failStart(fmt.Errorf("starting gossipsub: %w", err))
	}
	n.mm, err = matchmaking.New(matchmaking.Config{
		Host:   n.host,
		PubSub: n.ps,
		Gate:   gate,
		DB:     n.db,
		Name:   n.cfg.Name,
		Log:    n.log.With("pkg", "matchmaking"),
		// The configured clock itself (nil: real time, on plain timers),
		// and its pace, so the matcher's waits follow it.
		Now:  n.cfg.Now,
		Rate: n.clockRate,
		OnBooking: func(b matchmaking.Booking) {
			n.metrics.booking(b)
			n.events.publish(apiv1.EventBooking, b)
			n.kickSessions()
		},
		OnBoard:             func() { n.events.publish(apiv1.EventBoard, struct{}{}) },
		OnOffer:             n.metrics.offer,
		OnHold:              n.metrics.holds.Inc,
		FavouritesOnly:      n.cfg.Matchmaking.FavouritesOnly,
		StampBits:           n.cfg.Matchmaking.StampBits,
		OnStamp:             func() { n.events.publish(apiv1.EventIdentity, n.identity()) },
		DefaultScope:        matchmaking.Scope(n.cfg.CircleScope),
		DefaultOpenAfterMin: n.cfg.CircleOpenAfterMin,
		AnnounceInterval:    n.cfg.Matchmaking.AnnounceInterval,
		OfferTTL:            n.cfg.Matchmaking.OfferTTL,
		Finder:              n.finder,
		V1:                  matchmaking.V1Mode(n.cfg.Matchmaking.OffersV1),
	})
	if err != nil {
		return n.failStart(err)
	}
	if err := n.mm.Start(ctx); err != nil {
		return n.failStart(err)
	}
	n.metrics.seed(n.mm.Bookings())
	n.metrics.registerNode(n)
	// A name from the flag or config file wins over the stored profile.
	if n.cfg.Name != "" && n.cfg.Name != n.mm.Name() {
		if err := n.mm.SetName(n.cfg.Name); err != nil {
			return n.failStart(err)
		}
	}
	n.turn = newTURNHelper(n)
	if n.sm, err = n.newSessionManager(); err != nil {
		return n.failStart(err)
	}
	if err := n.sm.Start(ctx); err != nil {
		return n.failStart(err)
	}
	n.seedTrackRecords()
	n.disc, err = newDiscovery(ctx, n.cfg, n.host, n.log.With("pkg", "discovery"))
	if err == nil {
		n.disc.circleNS = n.mm.CircleRendezvous
	}
	if err != nil {
		return n.failStart(err)
	}
	n.finder.disc.Store(n.disc)
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			if relayed(c) {
				n.metrics.relayConns.Inc()
			}
			n.events.publish(apiv1.EventPeerConnected, map[string]string{"id": c.RemotePeer().String()})
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			n.events.publish(apiv1.EventPeerDisconnected, map[string]string{"id": c.RemotePeer().String()})
		},
	})
	if err := n.serveAPI(); err != nil {
		return n.failStart(err)
	}
	n.goRun(func() { n.disc.run(ctx) })
	n.goRun(func() { n.turn.run(ctx, routing.NewRoutingDiscovery(n.disc.dht)) })
	n.goRun(func() { n.watchNetwork(ctx) })
	n.goRun(func() { n.runSessions(ctx) })
	if !n.cfg.InMemory {
		n.goRun(func() { store.RunGC(ctx, n.db, 10*time.Minute) })
	}
	return nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) failStart(err error) error {
	n.Stop()
	return err
}

// serveAPI listens on the loopback API address, falling back to any free
// port when the default one is taken, and writes the API file.
func (n *Node) serveAPI() error {
	ln, err := net.Listen("tcp", n.cfg.API)
	if err != nil && n.cfg.API == DefaultAPIAddr {
		n.log.Info("default API port busy, using a free one", "addr", DefaultAPIAddr)
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return fmt.Errorf("listening for the local API on %s: %w", n.cfg.API, err)
	}
	n.apiURL = "http://" + ln.Addr().String()
	n.api = &http.Server{Handler: n.handler(), ReadHeaderTimeout: 10 * time.Second}
	n.goRun(func() {
		if err := n.api.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("local API stopped", "err", err)
		}
	})
	n.tokenMu.Lock()
	defer n.tokenMu.Unlock()
	return n.writeAPIFileLocked()
}

// writeAPIFileLocked writes the API file; the caller holds tokenMu.
func (n *Node) writeAPIFileLocked() error {
	if n.cfg.DataDir == "" || n.apiURL == "" {
		return nil
	}
	data, _ := json.Marshal(apiv1.APIFile{URL: n.apiURL, Token: n.token, PID: os.Getpid()})
	if err := writeFileAtomic(filepath.Join(n.cfg.DataDir, APIFile), data, 0o600); err != nil {
		return fmt.Errorf("writing API file: %w", err)
	}
	return nil
}

// Stop shuts everything down in reverse order and closes the store. It is
// safe to call more than once.
func (n *Node) Stop() error {
	var errs []error
	n.stopped.Do(func() {
		defer close(n.done)
		close(n.stopping)
		if n.cfg.DataDir != "" && n.api != nil {
			os.Remove(filepath.Join(n.cfg.DataDir, APIFile))
		}
		if n.api != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			// SSE streams never end by themselves: Shutdown waits for them
			// until the deadline, then Close cuts them.
			n.api.Shutdown(sctx)
			cancel()
			n.api.Close()
		}
		if n.cancel != nil {
			n.cancel()
		}
		if n.sm != nil {
			n.sm.Close()
		}
		if n.mm != nil {
			n.mm.Close()
		}
		if n.disc != nil {
			errs = append(errs, n.disc.close())
		}
		// Hole punching first: its close ends any DirectConnect an
		// upgrade goroutine is in (n.cancel ended their waits).
		errs = append(errs, n.hp.close())
		n.upgrade.wait()
		errs = append(errs, n.host.Close())
		n.wg.Wait()
		errs = append(errs, n.db.Close())
	})
	return errors.Join(errs...)
}

// now is the node's clock.
func (n *Node) now() time.Time {
	if n.cfg.Now != nil {
		return n.cfg.Now()
	}
	return time.Now()
}

// clockRate is how fast the node's clock runs against real time now.
func (n *Node) clockRate() float64 {
	if n.cfg.Rate != nil {
		return max(n.cfg.Rate(), 1)
	}
	return max(n.cfg.ClockRate, 1)
}

// ClockChanged tells the node that its clock (Config.Now) changed pace:
// the "clock" event makes the web UI re-sync its countdowns.
func (n *Node) ClockChanged() {
	n.events.publish(apiv1.EventClock, apiv1.Clock{Now: n.now(), ClockRate: n.clockRate()})
}

// Sessions is the node's session manager.
func (n *Node) Sessions() *session.Manager { return n.sm }

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Status is what `tandem status` shows.
func (n *Node) Status() apiv1.Status {
	return apiv1.Status{
		PeerID:         n.host.ID().String(),
		Name:           n.mm.Name(),
		Addrs:          n.Addrs(),
		ConnectedPeers: len(n.host.Network().Peers()),
		APIURL:         n.apiURL,
		DataDir:        n.cfg.DataDir,
		Version:        Version,
		LocalOnly:      n.cfg.LocalOnly(),
		Now:            n.now(),
		ClockRate:      n.clockRate(),
		Demo:           n.cfg.Demo,
		TURNHelper:     n.turn.Status(),
		Identity:       n.identity(),
	}
}

// identity says whether the identity stamp is ready (Status.Identity).
func (n *Node) identity() apiv1.Identity {
	st := n.mm.Stamp()
	if st.Ready {
		return apiv1.Identity{Ready: true, Progress: 1, Text: "ready"}
	}
	p := st.Progress()
	return apiv1.Identity{Progress: p,
		Text: fmt.Sprintf("preparing identity (one-time, a few seconds): %d%%; your open times go out once it is ready", int(p*100))}
}

// Peers lists connected peers with their addresses and measured latency.
func (n *Node) Peers() []apiv1.Peer {
	out := []apiv1.Peer{}
	for _, id := range n.host.Network().Peers() {
		p := apiv1.Peer{ID: id.String(), Addrs: []string{}}
		for _, c := range n.host.Network().ConnsToPeer(id) {
			p.Addrs = append(p.Addrs, c.RemoteMultiaddr().String())
			p.Direction = c.Stat().Direction.String()
		}
		p.LatencyMS = float64(n.host.Peerstore().LatencyEWMA(id).Microseconds()) / 1000
		out = append(out, p)
	}
	return out
}
