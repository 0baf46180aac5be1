package node

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/routing"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// topicPeers is how many peers on an offer topic the finder looks for:
// gossipsub's mesh degree, so a node's mesh on the topic can form.
const topicPeers = 6

// topicFinder finds peers on an offer topic through the DHT
// (matchmaking.PeerFinder): a node on a topic provides the topic's
// rendezvous key ("tandem-topic:" + topic, hashed into a CID as libp2p's
// routing discovery does) and looks up the others who do, connecting to a
// few while it has fewer than topicPeers on the topic. The matcher starts
// before discovery, so the DHT is filled in once discovery is up.
type topicFinder struct {
	disc atomic.Pointer[discovery]
	log  *slog.Logger
}

// topicNamespace is the DHT rendezvous namespace of an offer topic.
func topicNamespace(topic string) string { return "tandem-topic:" + topic }

// FindTopicPeers runs while the node is on topic (see matchmaking.PeerFinder).
func (f *topicFinder) FindTopicPeers(ctx context.Context, topic string, have func() int, nobody func()) {
	ns := topicNamespace(topic)
	var advertisedUntil time.Time
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		d := f.disc.Load()
		if d != nil && d.dht == nil {
			return // LAN-only: no DHT; mDNS connects the LAN's nodes
		}
		if d == nil || len(d.host.Network().Peers()) == 0 {
			wait = min(2*wait, 30*time.Second)
			continue
		}
		rd := routing.NewRoutingDiscovery(d.dht)
		if time.Now().After(advertisedUntil) {
			if ttl, err := rd.Advertise(ctx, ns); err != nil {
				f.log.Debug("advertising an offer topic", "topic", topic, "err", err)
			} else {
				advertisedUntil = time.Now().Add(7 * ttl / 8)
			}
		}
		if n := have(); n < topicPeers {
			if f.find(ctx, d, rd, ns, topicPeers-n) == 0 && n == 0 {
				nobody()
			}
			wait = min(2*wait, time.Minute)
		} else {
			wait = time.Minute
		}
	}
}

// find connects to up to n peers the DHT lists under ns, and returns how
// many other nodes it listed (-1 when the lookup failed).
func (f *topicFinder) find(ctx context.Context, d *discovery, rd *routing.RoutingDiscovery, ns string, n int) int {
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	found, err := rd.FindPeers(fctx, ns)
	if err != nil {
		f.log.Debug("looking up an offer topic", "namespace", ns, "err", err)
		return -1
	}
	others := 0
	for ai := range found {
		if ai.ID == d.host.ID() {
			continue
		}
		others++
		if n == 0 {
			return others
		}
		if len(ai.Addrs) == 0 || d.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		n--
		go func(ai peer.AddrInfo) { d.connect(d.ctx, ai) }(ai)
	}
	return others
}

// FindPeer asks the DHT where a peer is now (matchmaking.PeerLocator): the
// matcher does when a partner of a match cannot be reached at the
// addresses it knows, because both sides came back on new ones.
func (f *topicFinder) FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error) {
	d := f.disc.Load()
	if d == nil || d.dht == nil {
		return peer.AddrInfo{}, errNoDHT
	}
	return d.dht.FindPeer(ctx, id)
}

// The daemon's finder also locates partners.
var _ matchmaking.PeerLocator = (*topicFinder)(nil)

// errNoDHT: the node has no DHT (LAN-only, or discovery not up yet).
var errNoDHT = errors.New("no DHT to look peers up in")
