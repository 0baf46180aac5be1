package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
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
	// circleNS lists the DHT namespaces of the node's circles (members
	// find each other there); nil for none.
	circleNS func() []string

	mu      sync.Mutex
	dialing map[peer.ID]bool

	// st is what discovery tried and with what result (GET
	// /api/v1/discovery), updated where discovery acts.
	stMu sync.Mutex
	st   DiscoveryStatus
	lan  map[peer.ID]bool // peers mDNS has announced
}

// DiscoveryStatus is GET /api/v1/discovery: how this node looks for peers
// and what came of it, so the UI can say why nobody shows up.
type DiscoveryStatus struct {
	// LocalOnly: no bootstrap peers and no mDNS (see Config.LocalOnly).
	LocalOnly bool `json:"local_only"`
	// LANOnly: mDNS and nothing beyond the LAN (Config.LANOnly).
	LANOnly bool `json:"lan_only"`
	// PublicDHT: the bootstrap peers are the public (Amino DHT) defaults.
	PublicDHT bool `json:"public_dht"`
	// MDNS says whether LAN discovery is on; MDNSError why it could not
	// start; LANPeers how many peers it has announced so far.
	MDNS      bool   `json:"mdns"`
	MDNSError string `json:"mdns_error,omitempty"`
	LANPeers  int    `json:"lan_peers"`
	// Bootstrap and Static are the configured bootstrap peers and direct
	// peers (--peer), each with the result of the last dial.
	Bootstrap []SeedStatus `json:"bootstrap"`
	Static    []SeedStatus `json:"static"`
	// StartDialsDone: the dials at start are over (until then seeds are
	// "trying").
	StartDialsDone bool `json:"start_dials_done"`
	// Rendezvous is the DHT search for other Tandem nodes.
	Rendezvous RendezvousStatus `json:"rendezvous"`
	// ShareAddrs are this node's addresses with its peer ID, the ones
	// most worth sharing first (public, then LAN, relay, loopback).
	ShareAddrs []string `json:"share_addrs"`
}

// SeedStatus is one bootstrap or direct peer.
type SeedStatus struct {
	Peer string `json:"peer"`
	// Addr is its first configured address, with /p2p/.
	Addr string `json:"addr"`
	// State is the result of the last dial: "trying", "reached" or
	// "unreachable" (with Error).
	State   string    `json:"state"`
	Error   string    `json:"error,omitempty"`
	LastTry time.Time `json:"last_try,omitzero"`
	// Connected: the node holds a connection to it now.
	Connected bool `json:"connected"`
}

// Seed states.
const (
	SeedTrying      = "trying"
	SeedReached     = "reached"
	SeedUnreachable = "unreachable"
)

// RendezvousStatus is the DHT rendezvous: searches for the namespace and
// this node's own record in it.
type RendezvousStatus struct {
	// Rounds counts searches made; Skipped those skipped because the node
	// had no connection at all (the DHT has nobody to ask).
	Rounds  int `json:"rounds"`
	Skipped int `json:"skipped"`
	// LastSearch is when the last search began, LastFound how many other
	// nodes it returned, LastError why it failed.
	LastSearch time.Time `json:"last_search,omitzero"`
	LastFound  int       `json:"last_found"`
	LastError  string    `json:"last_error,omitempty"`
	// AdvertisedAt is the last time this node's record was stored in the
	// DHT; AdvertiseError why the last attempt failed.
	AdvertisedAt   time.Time `json:"advertised_at,omitzero"`
	AdvertiseError string    `json:"advertise_error,omitempty"`
}

// errAlreadyDialing: another goroutine is dialling that peer right now.
var errAlreadyDialing = errors.New("already dialling")

func newDiscovery(ctx context.Context, cfg Config, h host.Host, log *slog.Logger) (*discovery, error) {
	d := &discovery{host: h, log: log, ctx: ctx, dialing: map[peer.ID]bool{}, lan: map[peer.ID]bool{}}
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
	if !cfg.LANOnly {
		d.dht, err = dht.New(h, dht.Mode(mode), dht.BootstrapPeers(d.bootstrap...))
		if err != nil {
			return nil, fmt.Errorf("starting DHT: %w", err)
		}
	}
	if cfg.MDNS {
		d.mdns = mdns.NewMdnsService(h, mdnsService, d)
	}
	d.st = DiscoveryStatus{
		LocalOnly: cfg.LocalOnly(), LANOnly: cfg.LANOnly, PublicDHT: cfg.usesPublicDHT(), MDNS: cfg.MDNS,
		Bootstrap: seedStatuses(d.bootstrap), Static: seedStatuses(d.static),
	}
	return d, nil
}

func seedStatuses(ais []peer.AddrInfo) []SeedStatus {
	out := []SeedStatus{}
	for _, ai := range ais {
		s := SeedStatus{Peer: ai.ID.String(), State: SeedTrying}
		if addrs, err := peer.AddrInfoToP2pAddrs(&ai); err == nil && len(addrs) > 0 {
			s.Addr = addrs[0].String()
		}
		out = append(out, s)
	}
	return out
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
			d.update(func(st *DiscoveryStatus) { st.MDNSError = err.Error() })
		}
	}
	seeds := len(d.bootstrap) + len(d.static)
	reached := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, ai := range append(append([]peer.AddrInfo{}, d.bootstrap...), d.static...) {
		static, j := i >= len(d.bootstrap), i
		if static {
			j -= len(d.bootstrap)
		}
		wg.Go(func() {
			if err := d.dialSeed(ctx, ai, static, j); err == nil || errors.Is(err, errAlreadyDialing) {
				mu.Lock()
				reached++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	d.update(func(st *DiscoveryStatus) { st.StartDialsDone = true })
	switch {
	case seeds == 0:
		d.log.Info("no bootstrap peers configured: waiting for peers to dial in or appear on the LAN")
	case reached == 0:
		// Said once: the node keeps working and peers may still dial in.
		d.log.Warn("no bootstrap peer reachable; the node keeps running and will find peers when they connect", "tried", seeds)
	}
	if d.dht == nil { // LAN-only: mDNS finds the peers
		for {
			d.redialStatic(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
		}
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
		d.findCircles(ctx, rd)
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
			if ctx.Err() != nil {
				return
			}
			d.log.Debug("rendezvous advertise", "err", err)
			retry = min(retry*2, time.Minute)
			d.update(func(st *DiscoveryStatus) { st.Rendezvous.AdvertiseError = shortErr(err) })
		} else {
			wait, retry = 7*ttl/8, time.Second
			d.update(func(st *DiscoveryStatus) {
				st.Rendezvous.AdvertisedAt, st.Rendezvous.AdvertiseError = time.Now(), ""
			})
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
		d.update(func(st *DiscoveryStatus) { st.Rendezvous.Skipped++ })
		return
	}
	started := time.Now()
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	peers, err := rd.FindPeers(fctx, Rendezvous)
	if err != nil {
		d.log.Debug("rendezvous search", "err", err)
		d.update(func(st *DiscoveryStatus) {
			st.Rendezvous.Rounds++
			st.Rendezvous.LastSearch, st.Rendezvous.LastFound, st.Rendezvous.LastError = started, 0, shortErr(err)
		})
		return
	}
	found := 0
	for ai := range peers {
		if ai.ID == d.host.ID() || len(ai.Addrs) == 0 {
			continue
		}
		found++
		go d.connect(ctx, ai)
	}
	if ctx.Err() != nil {
		return
	}
	d.update(func(st *DiscoveryStatus) {
		st.Rendezvous.Rounds++
		st.Rendezvous.LastSearch, st.Rendezvous.LastFound, st.Rendezvous.LastError = started, found, ""
	})
}

// findCircles advertises this node under each of its circles' rendezvous
// keys and dials the members found there, so that members meet even when
// nothing else connects them (their circle topic needs a connection to
// carry anything). The keys are hashes of the circles' secrets: a DHT
// node learns that some peers share a key, not what circle it is.
func (d *discovery) findCircles(ctx context.Context, rd *routing.RoutingDiscovery) {
	if d.circleNS == nil || len(d.host.Network().Peers()) == 0 {
		return
	}
	for _, ns := range d.circleNS() {
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if _, err := rd.Advertise(fctx, ns); err != nil {
			d.log.Debug("circle rendezvous advertise", "err", err)
		}
		peers, err := rd.FindPeers(fctx, ns)
		if err == nil {
			for ai := range peers {
				if ai.ID != d.host.ID() && len(ai.Addrs) > 0 && d.host.Network().Connectedness(ai.ID) != network.Connected {
					go d.connect(ctx, ai)
				}
			}
		}
		cancel()
	}
}

func (d *discovery) redialStatic(ctx context.Context) {
	for i, ai := range d.static {
		if d.host.Network().Connectedness(ai.ID) != network.Connected {
			go d.dialSeed(ctx, ai, true, i)
		}
	}
}

// dialSeed dials bootstrap peer i (or static peer i) and records the result.
func (d *discovery) dialSeed(ctx context.Context, ai peer.AddrInfo, static bool, i int) error {
	err := d.connect(ctx, ai)
	if errors.Is(err, errAlreadyDialing) || ctx.Err() != nil {
		return err
	}
	d.update(func(st *DiscoveryStatus) {
		list := st.Bootstrap
		if static {
			list = st.Static
		}
		s := &list[i]
		// A redial within the swarm's backoff tried nothing new: the
		// last real error says more than "dial backoff".
		msg := ""
		if err != nil {
			msg = shortErr(err)
		}
		if msg == errBackoffMsg && s.State == SeedUnreachable {
			return
		}
		s.LastTry, s.State, s.Error = time.Now(), SeedReached, ""
		if err != nil {
			s.State, s.Error = SeedUnreachable, msg
		}
	})
	return err
}

// connect dials once at a time per peer, with a timeout.
func (d *discovery) connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == d.host.ID() {
		return nil
	}
	d.mu.Lock()
	if d.dialing[ai.ID] {
		d.mu.Unlock()
		return errAlreadyDialing
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
	if ai.ID != d.host.ID() {
		d.stMu.Lock()
		if len(d.lan) < 1024 {
			d.lan[ai.ID] = true
		}
		d.st.LANPeers = len(d.lan)
		d.stMu.Unlock()
	}
	go d.connect(d.ctx, ai)
}

// update changes the discovery status under its lock.
func (d *discovery) update(f func(*DiscoveryStatus)) {
	d.stMu.Lock()
	f(&d.st)
	d.stMu.Unlock()
}

// status is a copy of the discovery status, with the seeds' connections
// and the addresses to share as they are now.
func (d *discovery) status() DiscoveryStatus {
	d.stMu.Lock()
	st := d.st
	st.Bootstrap = slices.Clone(d.st.Bootstrap)
	st.Static = slices.Clone(d.st.Static)
	d.stMu.Unlock()
	for _, list := range [][]SeedStatus{st.Bootstrap, st.Static} {
		for i := range list {
			s := &list[i]
			if id, err := peer.Decode(s.Peer); err == nil {
				s.Connected = d.host.Network().Connectedness(id) == network.Connected
			}
			// Dialled by someone else (mDNS, the DHT, or it dialled us).
			if s.Connected && s.State != SeedReached {
				s.State, s.Error = SeedReached, ""
			}
		}
	}
	st.ShareAddrs = shareAddrs(d.host)
	return st
}

// shareAddrs are h's listen addresses with its peer ID (as Node.Addrs),
// the most useful to a friend first: public, then LAN, then relayed, then
// loopback and link-local ones.
func shareAddrs(h host.Host) []string {
	rank := func(a ma.Multiaddr) int {
		switch {
		case isCircuit(a):
			return 2
		case manet.IsIPLoopback(a) || manet.IsIP6LinkLocal(a):
			return 3
		case manet.IsPublicAddr(a):
			return 0
		default:
			return 1
		}
	}
	addrs := slices.Clone(h.Addrs())
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int { return cmp.Compare(rank(a), rank(b)) })
	p2p, err := ma.NewMultiaddr("/p2p/" + h.ID().String())
	out := []string{}
	if err != nil {
		return out
	}
	for _, a := range addrs {
		out = append(out, a.Encapsulate(p2p).String())
	}
	return out
}

// shortErr is the gist of a dial or DHT error, on one line: libp2p's dial
// errors list every address tried, one per line ("* [ADDR] CAUSE"); the
// first cause other than the swarm's backoff says the most.
func shortErr(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	msg := strings.TrimSpace(lines[len(lines)-1])
	var causes []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if _, cause, ok := strings.Cut(l, "] "); ok && strings.HasPrefix(l, "* [") {
			causes = append(causes, cause)
		}
	}
	if len(causes) > 0 {
		msg = causes[0]
		for _, c := range causes {
			if c != swarm.ErrDialBackoff.Error() {
				msg = c
				break
			}
		}
	}
	if msg == swarm.ErrDialBackoff.Error() {
		return errBackoffMsg
	}
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// errBackoffMsg: every address of the peer failed moments ago (perhaps
// dialled by the DHT), and the swarm waits before dialling it again.
const errBackoffMsg = "failed moments ago; waiting before dialling it again (dial backoff)"

func (d *discovery) close() error {
	if d.mdns != nil {
		d.mdns.Close()
	}
	if d.dht == nil {
		return nil
	}
	return d.dht.Close()
}
