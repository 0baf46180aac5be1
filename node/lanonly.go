package node

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// LAN-only mode (--lan-only, lan_only = true): a node for an office or a
// classroom that finds peers by mDNS and talks to nothing beyond its LAN:
// no bootstrap peers, no DHT, no public STUN, no UPnP, and a connection
// gater that refuses every address outside the private, loopback and
// link-local ranges, inbound and outbound.

// errLANOnlyConflict: a setting that reaches beyond the LAN was combined
// with LAN-only mode.
var errLANOnlyConflict = errors.New("lan_only: uses mDNS and nothing else")

// withLANOnly returns cfg as LAN-only mode runs it: mDNS on, bootstrap
// "none" (so no DHT), no port mapping. Settings that reach beyond the LAN
// (bootstrap peers, ICE servers) are refused rather than ignored.
func (c Config) withLANOnly() (Config, error) {
	if !c.LANOnly {
		return c, nil
	}
	if c.Bootstrap != nil && !c.bootstrapNone() {
		return c, errors.Join(errLANOnlyConflict, errors.New("drop the bootstrap peers"))
	}
	if len(c.ICEServers) > 0 {
		return c, errors.Join(errLANOnlyConflict, errors.New("drop ice_servers (sessions on the LAN need no STUN or TURN)"))
	}
	c.Bootstrap = []string{BootstrapNone}
	c.MDNS, c.NATPortMap = true, false
	return c, nil
}

// iceServers are the STUN/TURN servers sessions use: the configured ones,
// else the public defaults, except for nodes that must not leave the
// machine or the LAN.
func (c Config) iceServers() []ICEServer {
	if c.ICEServers != nil || c.LocalOnly() || c.LANOnly {
		return c.ICEServers
	}
	return DefaultICEServers
}

// lanAddr reports whether a is on the LAN side: a private, loopback or
// link-local IP (a relayed address counts by its relay's).
func lanAddr(a ma.Multiaddr) bool {
	return manet.IsPrivateAddr(a) || manet.IsIPLoopback(a) || manet.IsIP6LinkLocal(a)
}

// lanGater is the connection gater of a LAN-only node.
type lanGater struct{}

func (lanGater) InterceptPeerDial(peer.ID) bool                   { return true }
func (lanGater) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool { return lanAddr(a) }
func (lanGater) InterceptAccept(c network.ConnMultiaddrs) bool {
	return lanAddr(c.RemoteMultiaddr())
}
func (lanGater) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (lanGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
