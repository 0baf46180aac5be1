package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/util"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/peerturn"
	"github.com/tandem-cowork/tandem/session"
)

// HelperRendezvous is the DHT namespace under which nodes that offer a
// STUN/TURN relay advertise themselves.
const HelperRendezvous = "tandem/turn/v1"

// Peer helpers as seen from the asking side.
const (
	maxHelpersUsed  = 2                // relays offered to one connection attempt
	grantMargin     = 10 * time.Minute // ask again this long before a grant expires
	helperFailPause = time.Minute      // a helper that failed is skipped this long
	helperSearch    = 5 * time.Minute  // DHT search for helpers, while fewer than maxHelpersUsed are connected
)

// turnHelper runs this node's STUN/TURN server for others while it should
// (TURNConfig.Offer), and asks other nodes' helpers for credentials.
type turnHelper struct {
	n   *Node
	log *slog.Logger

	mu      sync.Mutex
	srv     *peerturn.Server
	stopAdv context.CancelFunc // ends the DHT advertisement
	advDone chan struct{}      // closed when the advertisement has ended
	status  string
	grants  map[peer.ID]peerturn.Grant
	failed  map[peer.ID]time.Time
}

func newTURNHelper(n *Node) *turnHelper {
	t := &turnHelper{n: n, log: n.log.With("pkg", "turn"), grants: map[peer.ID]peerturn.Grant{}, failed: map[peer.ID]time.Time{}}
	t.status = "off"
	if n.cfg.TURN.offer() != TURNOfferOff {
		t.status = "waiting: offered while this node is publicly reachable"
	}
	return t
}

// Status says whether this node relays for others, for `tandem status`.
func (t *turnHelper) Status() string {
	if t == nil {
		return "off"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

// run serves as a helper while it should and searches the DHT for
// helpers, until ctx ends.
func (t *turnHelper) run(ctx context.Context, rd *routing.RoutingDiscovery) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if t.n.cfg.TURN.usePeers() && rd != nil {
		wg.Go(func() { t.searchLoop(ctx, rd) })
	}
	defer t.stop()
	switch t.n.cfg.TURN.offer() {
	case TURNOfferOff:
		return
	case TURNOfferOn:
		t.start(ctx, rd)
		<-ctx.Done()
		return
	}
	// The reachability emitter is stateful: a late subscriber gets the
	// last verdict.
	sub, err := t.n.host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		t.log.Warn("following reachability: not offering a relay", "err", err)
		return
	}
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			if e.(event.EvtLocalReachabilityChanged).Reachability == network.ReachabilityPublic {
				t.start(ctx, rd)
			} else {
				t.stop()
			}
		}
	}
}

// relayIP picks the address relay candidates carry: the configured one,
// else the first public IPv4 address the host knows, else (a node whose
// traffic stays on loopback) 127.0.0.1, else with offer = "on" a LAN one.
func (t *turnHelper) relayIP() (net.IP, error) {
	if t.n.cfg.TURN.RelayIP != "" {
		return net.ParseIP(t.n.cfg.TURN.RelayIP), nil
	}
	if t.n.loopbackOnly() {
		return net.IPv4(127, 0, 0, 1), nil
	}
	var lan net.IP
	for _, a := range t.n.host.Addrs() {
		ip, err := manet.ToIP(a)
		if err != nil || ip.To4() == nil || ip.IsLoopback() {
			continue
		}
		if manet.IsPublicAddr(a) {
			return ip, nil
		}
		if lan == nil {
			lan = ip
		}
	}
	if lan != nil && t.n.cfg.TURN.offer() == TURNOfferOn {
		return lan, nil
	}
	return nil, errors.New("no public IPv4 address known for this node (set turn.relay_ip)")
}

// start runs the server and serves credentials, if not running yet.
func (t *turnHelper) start(ctx context.Context, rd *routing.RoutingDiscovery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.srv != nil {
		return
	}
	relay, err := t.relayIP()
	if err != nil {
		t.status = "not offered: " + err.Error()
		t.log.Warn("not offering a STUN/TURN relay", "err", err)
		return
	}
	listen := net.IPv4zero
	if t.n.loopbackOnly() {
		listen = net.IPv4(127, 0, 0, 1)
	}
	c := t.n.cfg.TURN
	cfg := peerturn.ServerConfig{
		ListenIP: listen, RelayIP: relay, Port: c.Port, TLS: c.tls(), TLSPort: c.TLSPort,
		MaxAllocationsPerPeer: c.MaxAllocationsPerPeer, MaxAllocations: c.MaxAllocations,
		PeerBandwidth: c.PeerKbps * 1000 / 8, TotalBandwidth: c.TotalKbps * 1000 / 8,
		Now: t.n.now, Log: t.log,
	}
	srv, err := peerturn.NewServer(cfg)
	if err != nil && cfg.TLS && cfg.TLSPort != 0 {
		t.log.Info("TURN-over-TLS port busy, using a free one", "port", cfg.TLSPort, "err", err)
		cfg.TLSPort = 0
		srv, err = peerturn.NewServer(cfg)
	}
	if err != nil && cfg.Port != 0 {
		t.log.Info("STUN/TURN port busy, using a free one", "port", cfg.Port, "err", err)
		cfg.Port = 0
		srv, err = peerturn.NewServer(cfg)
	}
	if err != nil {
		t.status = "not offered: " + err.Error()
		t.log.Warn("starting the STUN/TURN relay", "err", err)
		return
	}
	t.srv = srv
	t.n.host.SetStreamHandler(peerturn.Protocol, peerturn.NewHandler(srv).HandleStream)
	urls := srv.URLs()
	if u := srv.TLSURL(); u != "" {
		urls = append(urls, u)
	}
	t.status = "offering " + strings.Join(urls, " ")
	t.log.Info("offering a STUN/TURN relay to other Tandem nodes", "urls", urls)
	if rd != nil {
		actx, cancel := context.WithCancel(ctx)
		t.stopAdv, t.advDone = cancel, make(chan struct{})
		go func(done chan struct{}) {
			defer close(done)
			advertiseHelper(actx, rd, t.log)
		}(t.advDone)
	}
}

// advertiseHelper keeps this node's record under HelperRendezvous in the
// DHT until ctx ends. Like discovery.advertise, a failure (the DHT's table
// still empty at start) is retried within seconds, not util.Advertise's
// 2 minutes.
func advertiseHelper(ctx context.Context, rd *routing.RoutingDiscovery, log *slog.Logger) {
	retry := time.Second
	for {
		wait := retry
		ttl, err := rd.Advertise(ctx, HelperRendezvous)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Debug("advertising the relay in the DHT", "err", err)
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

// stop ends the server and the DHT advertisement, if running.
func (t *turnHelper) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.srv == nil {
		return
	}
	t.n.host.RemoveStreamHandler(peerturn.Protocol)
	if t.stopAdv != nil {
		t.stopAdv()
		<-t.advDone
		t.stopAdv, t.advDone = nil, nil
	}
	if err := t.srv.Close(); err != nil {
		t.log.Debug("closing the STUN/TURN relay", "err", err)
	}
	t.srv = nil
	if t.n.cfg.TURN.offer() != TURNOfferOff {
		t.status = "waiting: offered while this node is publicly reachable"
	}
	t.log.Info("stopped offering a STUN/TURN relay")
}

// helpers are the connected peers that serve peerturn.Protocol (identify
// told us), those with a grant still valid first.
func (t *turnHelper) helpers(now time.Time) []peer.ID {
	h := t.n.host
	var out []peer.ID
	for _, p := range h.Network().Peers() {
		if p == h.ID() {
			continue
		}
		if ps, err := h.Peerstore().SupportsProtocols(p, peerturn.Protocol); err == nil && len(ps) > 0 {
			out = append(out, p)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, at := range t.failed {
		if now.Sub(at) >= helperFailPause {
			delete(t.failed, p)
		}
	}
	for p, g := range t.grants {
		if !now.Before(g.Expires) {
			delete(t.grants, p)
		}
	}
	out = slices.DeleteFunc(out, func(p peer.ID) bool { _, failed := t.failed[p]; return failed })
	valid := func(p peer.ID) bool { g, ok := t.grants[p]; return ok && g.Expires.Sub(now) > grantMargin }
	slices.SortStableFunc(out, func(a, b peer.ID) int {
		switch va, vb := valid(a), valid(b); {
		case va && !vb:
			return -1
		case vb && !va:
			return 1
		}
		return strings.Compare(string(a), string(b))
	})
	return out
}

// peerICE is session.Config.PeerICE: the STUN/TURN servers of up to
// maxHelpersUsed helpers among this node's peers, with credentials asked
// for over peerturn.Protocol and kept until shortly before they expire.
func (t *turnHelper) peerICE(ctx context.Context) []session.PeerICEServer {
	now := t.n.now()
	cand := t.helpers(now)
	if len(cand) > maxHelpersUsed {
		cand = cand[:maxHelpersUsed]
	}
	grants := make([]peerturn.Grant, len(cand))
	var wg sync.WaitGroup
	for i, p := range cand {
		t.mu.Lock()
		g, ok := t.grants[p]
		t.mu.Unlock()
		if ok && g.Expires.Sub(now) > grantMargin {
			grants[i] = g
			continue
		}
		wg.Go(func() {
			g, err := peerturn.Request(ctx, t.n.host, p, now)
			t.mu.Lock()
			defer t.mu.Unlock()
			if err != nil {
				t.log.Debug("asking a helper for TURN credentials", "helper", p, "err", err)
				t.failed[p] = now
				delete(t.grants, p)
				return
			}
			t.grants[p] = g
			grants[i] = g
		})
	}
	wg.Wait()
	var out []session.PeerICEServer
	for _, g := range grants {
		g = g.KnownAddrs(t.n.host)
		urls := iceURLs(g)
		if len(urls) == 0 {
			continue
		}
		out = append(out, session.PeerICEServer{Helper: g.Helper, TLSFingerprint: g.TLSFingerprint, ICEServer: webrtc.ICEServer{
			URLs: urls, Username: g.Username, Credential: g.Credential, CredentialType: webrtc.ICECredentialTypePassword,
		}})
	}
	return out
}

// iceURLs are the URLs of a helper's grant that a connection attempt
// gives ICE: its STUN and UDP TURN ones, and one over TCP for networks
// that block UDP: turns: (pinned) when the helper offers TLS, else plain
// turn:...?transport=tcp. ICE makes an allocation for every TURN URL, and
// the helper allows few per peer: TLS reaches every network plain TCP
// does, and more.
func iceURLs(g peerturn.Grant) []string {
	var out []string
	for _, u := range g.URLs {
		if g.TLSURL != "" && strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "?transport=tcp") {
			continue
		}
		out = append(out, u)
	}
	if g.TLSURL != "" && len(out) > 0 {
		out = append(out, g.TLSURL)
	}
	return out
}

// searchLoop looks for helpers in the DHT while fewer than
// maxHelpersUsed are connected, and connects to the ones it finds (then
// identify tells which protocols they serve).
func (t *turnHelper) searchLoop(ctx context.Context, rd *routing.RoutingDiscovery) {
	wait := 20 * time.Second // let the DHT fill its table first
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = helperSearch
		if len(t.helpers(t.n.now())) >= maxHelpersUsed || len(t.n.host.Network().Peers()) == 0 {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		found, err := util.FindPeers(fctx, rd, HelperRendezvous)
		cancel()
		if err != nil {
			t.log.Debug("searching the DHT for helpers", "err", err)
			continue
		}
		n := 0
		for _, ai := range found {
			if ai.ID == t.n.host.ID() || len(ai.Addrs) == 0 || n == 3 {
				continue
			}
			n++
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			if err := t.n.host.Connect(dctx, ai); err != nil {
				t.log.Debug("dialling a helper", "helper", ai.ID, "err", err)
			}
			cancel()
		}
	}
}
