package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/store"
)

// swarmNode is one benchmark node: a real libp2p host on 127.0.0.1 (TCP,
// Noise and yamux, or QUIC; see SwarmConfig.Transport), gossipsub with the daemon's options, a badger store on
// disk with synced writes (node/store's options), and a matchmaking
// Service with its default timers. It can go offline and come back on the
// same identity and store, as a user closing and reopening the app.
type swarmNode struct {
	idx int
	// cfg: the transport ("tcp" or "quic") and the matchmaking
	// settings compared in A/B runs (NoLanes, LaneVolume, ClimbAlone,
	// ClassLinger, PartnerKeeps).
	cfg SwarmConfig
	key crypto.PrivKey
	id  peer.ID
	dir string
	log *slog.Logger

	// Counters and recorders outlive restarts.
	bw    *metrics.BandwidthCounter
	rm    *streamCounter
	dials atomic.Int64 // connections opened (both directions), across restarts
	// silences counts the proposals of the node's earlier runs that an
	// owner left unanswered (matchmaking.Service.Silences).
	silences atomic.Uint64
	gossip   *gossipCounter
	rec      *nodeLog

	// clockShift is how far the node's clock runs ahead of the wall
	// clock (workloadEpoch).
	clockShift time.Duration

	// bootstrap are the peers this node dials when it (re)starts.
	bootstrap []*swarmNode
	// topics finds peers on offer topics.
	topics *directory

	mu      sync.Mutex // held by the node's worker and by start/stop
	h       host.Host
	ps      *pubsub.PubSub
	db      *badger.DB
	svc     *matchmaking.Service
	cancel  context.CancelFunc
	online  bool
	upSince time.Time
	// addr is where to dial the node while it is online; read without
	// n.mu, so two nodes dialling each other never wait on each other.
	addr atomic.Pointer[peer.AddrInfo]
}

func newSwarmNode(idx int, cfg SwarmConfig, dir string, rec *nodeLog, log *slog.Logger, topics *directory) (*swarmNode, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("deriving peer ID: %w", err)
	}
	n := &swarmNode{
		idx: idx, cfg: cfg, key: key, id: id, dir: dir, log: log, topics: topics,
		bw: metrics.NewBandwidthCounter(), rm: newStreamCounter(), gossip: newGossipCounter(), rec: rec,
	}
	topics.add(n)
	return n, nil
}

// start brings the node up; the caller holds n.mu.
func (n *swarmNode) start(extra ...pubsub.Option) error {
	cm, err := connmgr.NewConnManager(100, 400)
	if err != nil {
		return fmt.Errorf("creating connection manager: %w", err)
	}
	wire := []libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	}
	if n.cfg.Transport == "quic" {
		wire = []libp2p.Option{
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"),
			libp2p.Transport(quic.NewTransport),
		}
	}
	h, err := libp2p.New(append(wire,
		libp2p.Identity(n.key),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(n.rm),
		libp2p.BandwidthReporter(n.bw),
		libp2p.UserAgent("tandem-bench/"+node.Version),
		libp2p.DisableRelay(),
	)...)
	if err != nil {
		return fmt.Errorf("creating host: %w", err)
	}
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) { n.dials.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	fail := func(err error) error {
		cancel()
		h.Close()
		return err
	}
	n.gossip.reset()
	gate := matchmaking.NewGossipGate()
	ps, err := pubsub.NewGossipSub(ctx, h, append(node.PubSubOptions(gate), append(extra, pubsub.WithRawTracer(n.gossip))...)...)
	if err != nil {
		return fail(fmt.Errorf("starting gossipsub: %w", err))
	}
	db, err := store.Open(filepath.Join(n.dir, "store"), false, n.log)
	if err != nil {
		return fail(err)
	}
	svc, err := matchmaking.New(matchmaking.Config{
		Host: h, PubSub: ps, Gate: gate, DB: db, Name: fmt.Sprintf("bench-%d", n.idx), Log: n.log,
		StampBits: benchStampBits, // every bench node is a fresh identity
		NoLanes:   n.cfg.NoLanes, LaneVolume: n.cfg.LaneVolume, ClimbAlone: n.cfg.ClimbAlone, ClassLinger: n.cfg.ClassLinger, PartnerKeeps: n.cfg.PartnerKeeps,
		OnPlace:    func(e matchmaking.PlaceEvent) { n.rec.place(e) },
		OnBooking:  func(b matchmaking.Booking) { n.rec.booking(b) },
		OnOffer:    func(e matchmaking.OfferEvent) { n.rec.offer(e) },
		OnProposal: func(e matchmaking.ProposalEvent) { n.rec.proposal(e) },
		OnNote:     func(e matchmaking.NoteEvent) { n.rec.note(e) },
		OnShard:    func(e matchmaking.ShardEvent) { n.rec.shard(e) },
		Finder:     dirFinder{dir: n.topics, n: n, h: h},
		Now:        func() time.Time { return time.Now().Add(n.clockShift) },
		V1:         matchmaking.V1Off,
	})
	if err == nil {
		err = svc.Start(ctx)
	}
	if err != nil {
		db.Close()
		return fail(fmt.Errorf("starting matchmaking: %w", err))
	}
	n.h, n.ps, n.db, n.svc, n.cancel = h, ps, db, svc, cancel
	n.online, n.upSince = true, time.Now()
	n.addr.Store(&peer.AddrInfo{ID: n.id, Addrs: h.Addrs()})
	return nil
}

// stop takes the node offline as quitting the app does; the caller holds
// n.mu.
func (n *swarmNode) stop() {
	if !n.online {
		return
	}
	n.online = false
	n.addr.Store(nil)
	n.silences.Add(n.svc.Silences())
	n.svc.Close()
	n.cancel()
	n.h.Close()
	n.db.Close()
	n.h, n.ps, n.db, n.svc = nil, nil, nil, nil
}

// addrInfo is where to dial the node now (zero when offline).
func (n *swarmNode) addrInfo() peer.AddrInfo {
	if ai := n.addr.Load(); ai != nil {
		return *ai
	}
	return peer.AddrInfo{}
}

// dialBootstrap connects to every bootstrap peer that is online; the
// caller holds n.mu.
func (n *swarmNode) dialBootstrap(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range n.bootstrap {
		ai := b.addrInfo()
		if ai.ID == "" {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := n.h.Connect(cctx, ai); err != nil {
				n.log.Debug("bench: bootstrap dial failed", "err", err)
			}
		})
	}
	wg.Wait()
}

// silenceCount is how many of the node's proposals, over all its runs,
// an owner left unanswered.
func (n *swarmNode) silenceCount() uint64 {
	c := n.silences.Load()
	if svc := n.service(); svc != nil {
		c += svc.Silences()
	}
	return c
}

// service returns the running matcher, or nil when offline.
func (n *swarmNode) service() *matchmaking.Service {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.svc
}

// benchStampBits is the swarm's identity stamp difficulty. At the
// protocol's (seconds per identity) starting hundreds of fresh nodes would
// take minutes; checking a stamp costs one hash whatever its difficulty.
const benchStampBits = 8
