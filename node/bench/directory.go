package bench

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// directory stands in for the DHT's rendezvous records of offer topics
// (node/topicfind.go) inside the benchmark: one in-process map from topic
// to the nodes on it, so that 1000 nodes do not each run a Kademlia DHT
// in one process. A node on a topic finds others there and connects to a
// few while it has fewer than dirPeers on the topic, as the daemon's
// finder does; what a DHT lookup costs (O(log N) requests) is left out of
// the measured traffic.
type directory struct {
	mu     sync.Mutex
	topics map[string]map[*swarmNode]bool
	// nodes are all the swarm's nodes by peer ID, online or not: where a
	// node is now, as the daemon's DHT FindPeer answers it.
	nodes map[peer.ID]*swarmNode
	// dials counts the finders' dials, failed ones and their summed
	// duration, for the progress line: a swarm whose dials stall shows
	// it there.
	dials, dialFails, dialNanos atomic.Int64
	// locates counts the partners found by FindPeer.
	locates atomic.Int64
}

// dirPeers is how many peers on a topic a node looks for (gossipsub's D).
const dirPeers = 6

func newDirectory() *directory {
	return &directory{topics: map[string]map[*swarmNode]bool{}, nodes: map[peer.ID]*swarmNode{}}
}

// add lists n by its peer ID.
func (d *directory) add(n *swarmNode) {
	d.mu.Lock()
	d.nodes[n.id] = n
	d.mu.Unlock()
}

// errOffline: a node looked up by its ID is not running.
var errOffline = errors.New("peer not found: offline")

// FindPeer says where node id is now (matchmaking.PeerLocator): the
// daemon asks the DHT (node/topicfind.go). What a lookup would cost on
// the wire is left out of the measured traffic, as for topic lookups.
func (f dirFinder) FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error) {
	f.dir.mu.Lock()
	n := f.dir.nodes[id]
	f.dir.mu.Unlock()
	if n == nil {
		return peer.AddrInfo{}, errOffline
	}
	ai := n.addrInfo()
	if ai.ID == "" {
		return peer.AddrInfo{}, errOffline
	}
	f.dir.locates.Add(1)
	return ai, nil
}

var _ matchmaking.PeerLocator = dirFinder{}

// dirFinder is node n's matchmaking.PeerFinder.
type dirFinder struct {
	dir *directory
	n   *swarmNode
	h   host.Host
}

// FindTopicPeers registers n on topic until ctx ends and connects it to up
// to dirPeers others there while it has fewer, every 500 ms at first,
// backing off to 10 s.
func (f dirFinder) FindTopicPeers(ctx context.Context, topic string, have func() int, nobody func()) {
	d, n, h := f.dir, f.n, f.h
	d.mu.Lock()
	m := d.topics[topic]
	if m == nil {
		m = map[*swarmNode]bool{}
		d.topics[topic] = m
	}
	m[n] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.topics[topic], n)
		if len(d.topics[topic]) == 0 {
			delete(d.topics, topic)
		}
		d.mu.Unlock()
	}()
	wait := 50 * time.Millisecond
	for {
		if k := have(); k < dirPeers {
			found := d.pick(topic, n, dirPeers-k)
			if len(found) == 0 && k == 0 {
				nobody()
			}
			for _, ai := range found {
				if h.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				err := h.Connect(cctx, ai)
				d.dials.Add(1)
				d.dialNanos.Add(int64(time.Since(t0)))
				if err != nil {
					d.dialFails.Add(1)
					n.log.Debug("bench: topic peer dial failed", "err", err)
				}
				cancel()
			}
			wait = min(2*wait, 10*time.Second)
		} else {
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// pick returns up to k random online nodes on topic other than self.
func (d *directory) pick(topic string, self *swarmNode, k int) []peer.AddrInfo {
	d.mu.Lock()
	var all []*swarmNode
	for o := range d.topics[topic] {
		if o != self {
			all = append(all, o)
		}
	}
	d.mu.Unlock()
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	var out []peer.AddrInfo
	for _, o := range all {
		if len(out) == k {
			break
		}
		if ai := o.addrInfo(); ai.ID != "" {
			out = append(out, ai)
		}
	}
	return out
}
