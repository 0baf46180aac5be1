package node

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	manet "github.com/multiformats/go-multiaddr/net"
)

// earlyRelay gets a node behind a NAT a relay address seconds after start
// instead of after AutoNAT's verdict. AutoNAT (v1) waits 15 s before its
// first probe, and AutoRelay reserves a relay slot only once reachability
// is "private", so two nodes that both just started could not reach each
// other for about 20 s (the NAT lab's cone-cone-simultaneous cell).
//
// A host that lists no public address of its own (none on its interfaces,
// none confirmed as observed) is behind a NAT in all likelihood. Once it
// has identified a peer that offers a relay, earlyRelay announces
// "private" on the host's event bus, once; AutoRelay then reserves a slot
// and the host advertises the /p2p-circuit address. AutoNAT's later
// verdict replaces the presumption either way: "public" stops AutoRelay
// and drops the relay address again.
type earlyRelay struct {
	sub  event.Subscription
	done chan struct{}
}

func startEarlyRelay(h host.Host, log *slog.Logger) (*earlyRelay, error) {
	sub, err := h.EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtLocalReachabilityChanged)})
	if err != nil {
		return nil, fmt.Errorf("subscribing for the early relay: %w", err)
	}
	em, err := h.EventBus().Emitter(new(event.EvtLocalReachabilityChanged), eventbus.Stateful)
	if err != nil {
		sub.Close()
		return nil, fmt.Errorf("creating the early relay's emitter: %w", err)
	}
	er := &earlyRelay{sub: sub, done: make(chan struct{})}
	go func() {
		defer close(er.done)
		defer em.Close()
		for e := range sub.Out() {
			switch ev := e.(type) {
			case event.EvtLocalReachabilityChanged:
				if ev.Reachability != network.ReachabilityUnknown {
					return // AutoNAT decided first
				}
			case event.EvtPeerIdentificationCompleted:
				if ev.Conn == nil || ev.Conn.Stat().Limited || !slices.Contains(ev.Protocols, proto.ProtoIDv2Hop) ||
					hasPublicListenAddr(h) {
					continue
				}
				log.Debug("no public address: presuming private until AutoNAT decides", "relay", ev.Peer)
				if err := em.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPrivate}); err != nil {
					log.Debug("announcing presumed reachability", "err", err)
				}
				return
			}
		}
	}()
	return er, nil
}

// close stops the watch; it is safe to call more than once.
func (er *earlyRelay) close() {
	er.sub.Close()
	<-er.done
}

// hasPublicListenAddr: one of the host's own interface addresses is public
// (observed addresses do not count: behind a cone NAT peers see a public
// address that the router's firewall still closes).
func hasPublicListenAddr(h host.Host) bool {
	addrs, err := h.Network().InterfaceListenAddresses()
	return err != nil || slices.ContainsFunc(addrs, manet.IsPublicAddr)
}
