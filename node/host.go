package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"
)

// newHost builds the libp2p host: TCP and QUIC, Noise or TLS, yamux, with
// hole punching and circuit relay v2 for peers behind NAT. Hole punching
// is our own holepunch.Service (see newHolePunch), returned with the host.
func newHost(cfg Config, key crypto.PrivKey, reg prometheus.Registerer) (host.Host, *holePunch, error) {
	var self atomic.Pointer[host.Host] // set once the host exists
	cm, err := connmgr.NewConnManager(100, 400)
	if err != nil {
		return nil, nil, fmt.Errorf("creating connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.Listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("tandem/" + Version),
		libp2p.EnableRelay(),
		// NATed nodes reserve a slot on a connected peer that offers a
		// relay (see RelayService below), then upgrade to a direct
		// connection by hole punching (not libp2p.EnableHolePunching:
		// see newHolePunch).
		libp2p.EnableAutoRelayWithPeerSource(func(ctx context.Context, num int) <-chan peer.AddrInfo {
			return connectedPeers(ctx, &self, num)
		}, autorelay.WithMinCandidates(1)), // reserve on the first relay found (see earlyRelay)
		libp2p.EnableNATService(),
		// libp2p's own collectors go to the node's registry (GET /metrics),
		// not to the process-wide default one.
		libp2p.PrometheusRegisterer(reg),
	}
	if cfg.RelayService {
		// Once AutoNAT finds the node publicly reachable, it relays for
		// others (circuit relay v2, libp2p's default limits: 2 min and
		// 128 KiB per relayed connection, signalling-sized traffic).
		opts = append(opts, libp2p.EnableRelayService())
	}
	if cfg.LANOnly {
		opts = append(opts, libp2p.ConnectionGater(lanGater{}))
	}
	if cfg.wantsPortMap() {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.LowResources {
		opts = append(opts, libp2p.ResourceManager(&network.NullResourceManager{}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("creating libp2p host: %w", err)
	}
	self.Store(&h)
	hp, err := newHolePunch(h, reg)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	if hp.early, err = startEarlyRelay(h, slog.Default().With("pkg", "reach")); err != nil {
		hp.close()
		h.Close()
		return nil, nil, err
	}
	return h, hp, nil
}

// connectedPeers offers up to num connected peers as relay candidates;
// autorelay itself checks which of them run a relay service.
func connectedPeers(ctx context.Context, self *atomic.Pointer[host.Host], num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	defer close(out)
	hp := self.Load()
	if hp == nil {
		return out
	}
	h := *hp
	for _, p := range h.Network().Peers() {
		if len(out) == num || ctx.Err() != nil {
			break
		}
		out <- h.Peerstore().PeerInfo(p)
	}
	return out
}
