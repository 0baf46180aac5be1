package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
)

// holePunch is libp2p's hole punching (DCUtR) service, set up by the node
// rather than by libp2p.EnableHolePunching, for two reasons the NAT lab
// (node/natlab_test.go) showed:
//
//   - libp2p registers the /libp2p/dcutr handler only once the host knows a
//     public address of its own, checking from 250 ms after start with a
//     backoff. A node that starts later is reached through its partner's
//     relay within about 200 ms; the partner starts the hole punch at once,
//     gets "protocols not supported", and libp2p never tries again on that
//     connection, so the pair stayed relayed until the relay closed the
//     circuit two minutes later. Here the handler is registered before the
//     host is returned, so before the node dials anyone.
//   - Its DirectConnect lets the node try again when a partner is still
//     reachable only through a relay at match or session time (upgrade).
type holePunch struct {
	h     host.Host
	svc   *holepunch.Service
	ready bool // the handler was registered; DirectConnect would block forever otherwise
	sub   event.Subscription
	done  chan struct{}
	early *earlyRelay // nil until newHost started it

	mu       sync.Mutex
	observed []ma.Multiaddr // our public addresses as peers saw them, newest last
}

// maxObserved bounds the observed addresses kept for hole punching.
const maxObserved = 8

// registerTimeout bounds the wait for the handler at start; it is
// registered at once in practice (the check is a goroutine's first step).
const registerTimeout = 5 * time.Second

func newHolePunch(h host.Host, reg prometheus.Registerer) (*holePunch, error) {
	idh, ok := h.(interface{ IDService() identify.IDService })
	if !ok {
		return nil, fmt.Errorf("starting hole punching: host %T has no identify service", h)
	}
	hp := &holePunch{h: h, done: make(chan struct{})}
	var err error
	if hp.sub, err = h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted)); err != nil {
		return nil, fmt.Errorf("starting hole punching: %w", err)
	}
	go hp.watchObserved()
	protos, err := h.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
	if err != nil {
		hp.close()
		return nil, fmt.Errorf("starting hole punching: %w", err)
	}
	defer protos.Close()
	var opts []holepunch.Option
	if reg != nil {
		opts = append(opts, holepunch.WithMetricsTracer(holepunch.NewMetricsTracer(holepunch.WithRegisterer(reg))))
	}
	if hp.svc, err = holepunch.NewService(h, idh.IDService(), hp.addrs, opts...); err != nil {
		hp.close()
		return nil, fmt.Errorf("starting hole punching: %w", err)
	}
	timeout := time.NewTimer(registerTimeout)
	defer timeout.Stop()
	for !slices.Contains(h.Mux().Protocols(), holepunch.Protocol) {
		select {
		case <-protos.Out():
		case <-timeout.C:
			// A host with no address at all: no hole punching, and
			// upgrade must not call DirectConnect (it would wait forever).
			return hp, nil
		}
	}
	hp.ready = true
	return hp, nil
}

// watchObserved keeps the public addresses peers report seeing us at
// (identify's observed address), as libp2p's own hole punching does with
// every address seen by at least one peer: host.Addrs lists an observed
// address only once four peers have seen it.
func (hp *holePunch) watchObserved() {
	defer close(hp.done)
	for e := range hp.sub.Out() {
		ev := e.(event.EvtPeerIdentificationCompleted)
		a := ev.ObservedAddr
		if a == nil || ev.Conn == nil || ev.Conn.Stat().Limited || isCircuit(a) || !manet.IsPublicAddr(a) ||
			!hp.fromListenPort(ev.Conn.LocalMultiaddr()) {
			continue
		}
		hp.mu.Lock()
		hp.observed = slices.DeleteFunc(hp.observed, a.Equal)
		hp.observed = append(hp.observed, a)
		if len(hp.observed) > maxObserved {
			hp.observed = hp.observed[len(hp.observed)-maxObserved:]
		}
		hp.mu.Unlock()
	}
}

// fromListenPort: local (our end of a connection) uses the port of one of
// our listen addresses, so what the peer saw is where others can reach
// that listener through our NAT. A connection from an ephemeral port says
// nothing about that.
func (hp *holePunch) fromListenPort(local ma.Multiaddr) bool {
	proto, port, ok := transportPort(local)
	if !ok {
		return false
	}
	for _, l := range hp.h.Network().ListenAddresses() {
		if p, q, ok := transportPort(l); ok && p == proto && q == port {
			return true
		}
	}
	return false
}

// transportPort is the transport (tcp or udp) and port of a multiaddr.
func transportPort(a ma.Multiaddr) (int, string, bool) {
	for _, code := range []int{ma.P_TCP, ma.P_UDP} {
		if v, err := a.ValueForProtocol(code); err == nil {
			return code, v, true
		}
	}
	return 0, "", false
}

// addrs are the addresses hole punching tells a partner to dial: our
// public ones (listen addresses on a public IP, addresses peers observed).
// Before we know any, our other direct addresses: a punch then reaches a
// partner behind the same router and fails harmlessly elsewhere, and the
// service registers its handler at once (it waits for a non-empty list).
func (hp *holePunch) addrs() []ma.Multiaddr {
	var public, lan, loop []ma.Multiaddr
	for _, a := range hp.h.Addrs() {
		switch {
		case isCircuit(a):
		case manet.IsPublicAddr(a):
			public = append(public, a)
		case manet.IsIPLoopback(a):
			loop = append(loop, a)
		default:
			lan = append(lan, a)
		}
	}
	hp.mu.Lock()
	public = append(public, hp.observed...)
	hp.mu.Unlock()
	switch {
	case len(public) > 0:
		return ma.Unique(public)
	case len(lan) > 0:
		return lan
	}
	if len(loop) > 0 {
		return loop
	}
	// A host that listens nowhere has nothing to offer.
	return hp.listenAddrs()
}

func (hp *holePunch) listenAddrs() []ma.Multiaddr {
	out := []ma.Multiaddr{}
	for _, a := range hp.h.Network().ListenAddresses() {
		if !isCircuit(a) {
			out = append(out, a)
		}
	}
	return out
}

// close stops the service; a DirectConnect in progress returns.
func (hp *holePunch) close() error {
	var err error
	if hp.svc != nil {
		err = hp.svc.Close()
	}
	if hp.early != nil {
		hp.early.close()
	}
	hp.sub.Close()
	<-hp.done
	return err
}

// pathState is how we are connected to a peer.
type pathState int

const (
	pathNone    pathState = iota // no connection
	pathDirect                   // at least one direct connection
	pathRelayed                  // only through circuit relays
)

func peerPath(h host.Host, p peer.ID) (pathState, []network.Conn) {
	conns := h.Network().ConnsToPeer(p)
	if len(conns) == 0 {
		return pathNone, nil
	}
	for _, c := range conns {
		if !c.Stat().Limited && !isCircuit(c.RemoteMultiaddr()) {
			return pathDirect, conns
		}
	}
	return pathRelayed, conns
}

// upgrader tries to turn a partner's relayed connection into a direct one:
// hole punching runs once by itself when a relayed connection comes in,
// and when that fails (or never ran) the partner stays relayed. Matching
// and signalling work through the relay and never wait for this.
type upgrader struct {
	h   host.Host
	hp  *holePunch
	log *slog.Logger

	mu     sync.Mutex
	active map[peer.ID]bool
	// rest: after a round of tries failed, the next round for that peer
	// waits until then (the log says so once a round, not every second).
	rest map[peer.ID]time.Time
	wg   sync.WaitGroup
}

// upgradeTries and upgradeBackoff pace the attempts for one partner: a
// DCUtR try takes up to about 30 s (three punches with a 10 s dial
// timeout), so a round covers a minute or two; syncSessions asks again
// upgradeRest after a round failed, for as long as the match lasts.
const (
	upgradeTries   = 4
	upgradeBackoff = 2 * time.Second
	upgradeRest    = 2 * time.Minute
)

func newUpgrader(h host.Host, hp *holePunch, log *slog.Logger) *upgrader {
	return &upgrader{h: h, hp: hp, log: log, active: map[peer.ID]bool{}, rest: map[peer.ID]time.Time{}}
}

// want makes sure p is being upgraded if it is reachable only through a
// relay; why says what the partner is to us (logged). It returns at once.
func (u *upgrader) want(ctx context.Context, p peer.ID, why string) {
	if ctx.Err() != nil {
		return
	}
	if st, _ := peerPath(u.h, p); st != pathRelayed {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.active[p] || time.Now().Before(u.rest[p]) {
		return
	}
	u.active[p] = true
	u.wg.Go(func() {
		direct := u.upgrade(ctx, p, why)
		u.mu.Lock()
		delete(u.active, p)
		delete(u.rest, p)
		if !direct {
			u.rest[p] = time.Now().Add(upgradeRest)
		}
		// Forget peers long rested, so the map stays small.
		for q, t := range u.rest {
			if time.Since(t) > upgradeRest {
				delete(u.rest, q)
			}
		}
		u.mu.Unlock()
	})
}

// upgrade logs that p is relayed and tries hole punching a few times; it
// reports whether p ended up directly connected (or not connected at all,
// with nothing left to upgrade). Only the side whose relayed connection
// is inbound can start DCUtR (the protocol's rule); the other side's node
// does the same from its end.
func (u *upgrader) upgrade(ctx context.Context, p peer.ID, why string) bool {
	st, conns := peerPath(u.h, p)
	if st != pathRelayed {
		return true
	}
	u.log.Info("peer reachable only through a relay: matching and signalling go through it; trying a direct connection (hole punching)",
		"peer", p, "peer_is", why, "via", conns[0].RemoteMultiaddr())
	start := time.Now()
	wait := upgradeBackoff
	for try := 1; ; {
		var err error
		if u.hp.ready && hasInbound(conns) {
			err = u.hp.svc.DirectConnect(p)
		}
		switch st, conns = peerPath(u.h, p); st {
		case pathDirect:
			u.log.Info("direct connection to peer", "peer", p, "peer_is", why, "after", time.Since(start).Round(time.Millisecond), "tries", try)
			return true
		case pathNone:
			u.log.Info("connection to peer lost while trying a direct one", "peer", p, "peer_is", why)
			return true
		}
		pause := wait
		if errors.Is(err, holepunch.ErrHolePunchActive) {
			// libp2p's own punch (or another) is running: not a try of
			// ours; look again shortly, to follow up at once if it fails.
			pause = upgradeBackoff
		} else {
			if err != nil {
				u.log.Debug("hole punch", "peer", p, "try", try, "err", err)
			}
			if try == upgradeTries {
				break
			}
			try++
			wait *= 2
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return true
		case <-t.C:
		}
	}
	u.log.Warn("peer still reachable only through a relay: hole punching did not get through (a symmetric NAT or a strict firewall on either side); matching and signalling keep going through the relay",
		"peer", p, "peer_is", why, "tried_for", time.Since(start).Round(time.Second), "next_round_in", upgradeRest)
	return false
}

func hasInbound(conns []network.Conn) bool {
	for _, c := range conns {
		if c.Stat().Direction == network.DirInbound {
			return true
		}
	}
	return false
}

// wait waits for every upgrade goroutine (after ctx is cancelled and the
// hole punching service closed).
func (u *upgrader) wait() { u.wg.Wait() }
