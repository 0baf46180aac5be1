package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// Rendezvous is the DHT namespace Tandem nodes advertise under, and the mDNS
// service name on the LAN.
const (
	Rendezvous  = "tandem/v1"
	mdnsService = "_tandem-cowork._udp"
)

const dialTimeout = 10 * time.Second

// discovery finds peers: bootstrap and static peers, mDNS on the LAN and a
// rendezvous namespace on the Kademlia DHT.
type discovery struct {
	host      host.Host
	dht       *dht.IpfsDHT
	bootstrap []peer.AddrInfo
	static    []peer.AddrInfo
	log       *slog.Logger
	mdns      mdns.Service

	ctx context.Context // the node's lifetime, for dials started by mDNS

	mu      sync.Mutex
	dialing map[peer.ID]bool
}

func newDiscovery(ctx context.Context, cfg Config, h host.Host, log *slog.Logger) (*discovery, error) {
	d := &discovery{host: h, log: log, ctx: ctx, dialing: map[peer.ID]bool{}}
	var err error
	switch {
	case cfg.bootstrapNone():
	case cfg.usesPublicDHT():
		d.bootstrap = dht.GetDefaultBootstrapPeerAddrInfos()
	default:
		if d.bootstrap, err = parseAddrInfos(cfg.Bootstrap); err != nil {
			return nil, fmt.Errorf("parsing bootstrap peers: %w", err)
		}
	}
	if d.static, err = parseAddrInfos(cfg.Peers); err != nil {
		return nil, fmt.Errorf("parsing static peers: %w", err)
	}
	// On the public DHT let libp2p decide client or server by reachability.
	// In private and loopback swarms every node must answer, or nobody does.
	mode := dht.ModeServer
	if cfg.usesPublicDHT() {
		mode = dht.ModeAuto
	}
	d.dht, err = dht.New(h, dht.Mode(mode), dht.BootstrapPeers(d.bootstrap...))
	if err != nil {
		return nil, fmt.Errorf("starting DHT: %w", err)
	}
	if cfg.MDNS {
		d.mdns = mdns.NewMdnsService(h, mdnsService, d)
	}
	return d, nil
}

func parseAddrInfos(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, fmt.Errorf("%q: %w (want a multiaddr ending in /p2p/PEER_ID)", a, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// run connects to bootstrap and static peers, then advertises and searches
// the rendezvous namespace with a backoff, until ctx ends.
func (d *discovery) run(ctx context.Context) {
	if d.mdns != nil {
		if err := d.mdns.Start(); err != nil {
			d.log.Warn("mDNS discovery unavailable", "err", err)
		}
	}
	seeds := append(append([]peer.AddrInfo{}, d.bootstrap...), d.static...)
	reached := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, ai := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d.connect(ctx, ai) == nil {
				mu.Lock()
				reached++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	switch {
	case len(seeds) == 0:
		d.log.Info("no bootstrap peers configured: waiting for peers to dial in or appear on the LAN")
	case reached == 0:
		// Said once: the node keeps working and peers may still dial in.
		d.log.Warn("no bootstrap peer reachable; the node keeps running and will find peers when they connect", "tried", len(seeds))
	}
	if err := d.dht.Bootstrap(ctx); err != nil {
		d.log.Debug("DHT bootstrap", "err", err)
	}
	rd := routing.NewRoutingDiscovery(d.dht)
	var adv sync.WaitGroup
	defer adv.Wait()
	adv.Go(func() { d.advertise(ctx, rd) })
	backoff := time.Second
	for {
		d.findPeers(ctx, rd)
		d.redialStatic(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// advertise keeps this node's record under the rendezvous namespace in the
// DHT until ctx ends. The first attempt usually comes before the DHT has put
// the bootstrap peers in its routing table (it does so after identify, on
// its own goroutine) and fails with "failed to find any peer in table";
// util.Advertise would then wait 2 minutes, so failures retry sooner.
func (d *discovery) advertise(ctx context.Context, rd *routing.RoutingDiscovery) {
	retry := time.Second
	for {
		wait := retry
		ttl, err := rd.Advertise(ctx, Rendezvous)
		if err != nil {
			d.log.Debug("rendezvous advertise", "err", err)
			retry = min(retry*2, time.Minute)
		} else {
			wait, retry = 7*ttl/8, time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (d *discovery) findPeers(ctx context.Context, rd *routing.RoutingDiscovery) {
	if len(d.host.Network().Peers()) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	peers, err := rd.FindPeers(fctx, Rendezvous)
	if err != nil {
		d.log.Debug("rendezvous search", "err", err)
		return
	}
	for ai := range peers {
		if ai.ID == d.host.ID() || len(ai.Addrs) == 0 {
			continue
		}
		go d.connect(ctx, ai)
	}
}

func (d *discovery) redialStatic(ctx context.Context) {
	for _, ai := range d.static {
		if d.host.Network().Connectedness(ai.ID) != network.Connected {
			go d.connect(ctx, ai)
		}
	}
}

// connect dials once at a time per peer, with a timeout.
func (d *discovery) connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == d.host.ID() {
		return nil
	}
	d.mu.Lock()
	if d.dialing[ai.ID] {
		d.mu.Unlock()
		return nil
	}
	d.dialing[ai.ID] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.dialing, ai.ID)
		d.mu.Unlock()
	}()
	cctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	err := d.host.Connect(cctx, ai)
	if err != nil {
		d.log.Debug("dial failed", "peer", ai.ID, "err", err)
	}
	return err
}

// HandlePeerFound is called by mDNS, repeatedly and from many goroutines.
func (d *discovery) HandlePeerFound(ai peer.AddrInfo) {
	go d.connect(d.ctx, ai)
}

func (d *discovery) close() error {
	if d.mdns != nil {
		d.mdns.Close()
	}
	return d.dht.Close()
}
