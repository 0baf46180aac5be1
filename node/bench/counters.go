package bench

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// gossipCounter is a gossipsub RawTracer that counts what one node sends
// and receives, and tracks its mesh per topic. One counter lives as long as
// the benchmark node, across restarts of its host.
type gossipCounter struct {
	rpcsSent, rpcsRecv atomic.Int64
	msgsSent, msgsRecv atomic.Int64 // published messages inside RPCs
	ctrlSent           atomic.Int64 // IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT entries
	bytesSent          atomic.Int64 // protobuf size of the RPCs queued
	// partBytes splits bytesSent by what carried it (partPublish...).
	partBytes                 [numGossipParts]atomic.Int64
	delivered, dups, rejected atomic.Int64
	dropped, undeliverable    atomic.Int64
	mu                        sync.Mutex
	mesh                      map[string]map[peer.ID]bool
	rejects                   map[string]int64 // by reason
	// recvByKind counts the published messages received (duplicates
	// too) by the kind of topic they came on (topicKind); dupByKind the
	// duplicates among them; recvByTopic the same by topic name.
	recvByKind, dupByKind, recvByTopic map[string]int64
}

func newGossipCounter() *gossipCounter {
	return &gossipCounter{mesh: map[string]map[peer.ID]bool{}, rejects: map[string]int64{},
		recvByKind: map[string]int64{}, dupByKind: map[string]int64{}, recvByTopic: map[string]int64{}}
}

var _ pubsub.RawTracer = (*gossipCounter)(nil)

func (g *gossipCounter) meshSize(topic string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.mesh[topic])
}

// reset forgets the mesh (the host restarted).
func (g *gossipCounter) reset() {
	g.mu.Lock()
	g.mesh = map[string]map[peer.ID]bool{}
	g.mu.Unlock()
}

func (g *gossipCounter) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (g *gossipCounter) OnClosedOutboundStream(peer.ID)                       {}
func (g *gossipCounter) AddPeer(peer.ID, protocol.ID)                         {}
func (g *gossipCounter) Join(string)                                          {}
func (g *gossipCounter) ValidateMessage(*pubsub.Message)                      {}
func (g *gossipCounter) ThrottlePeer(peer.ID)                                 {}
func (g *gossipCounter) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

func (g *gossipCounter) RemovePeer(p peer.ID) {
	g.mu.Lock()
	for _, m := range g.mesh {
		delete(m, p)
	}
	g.mu.Unlock()
}

func (g *gossipCounter) Leave(topic string) {
	g.mu.Lock()
	delete(g.mesh, topic)
	g.mu.Unlock()
}

func (g *gossipCounter) Graft(p peer.ID, topic string) {
	g.mu.Lock()
	if g.mesh[topic] == nil {
		g.mesh[topic] = map[peer.ID]bool{}
	}
	g.mesh[topic][p] = true
	g.mu.Unlock()
}

func (g *gossipCounter) Prune(p peer.ID, topic string) {
	g.mu.Lock()
	delete(g.mesh[topic], p)
	g.mu.Unlock()
}

func (g *gossipCounter) DeliverMessage(*pubsub.Message)        { g.delivered.Add(1) }
func (g *gossipCounter) RejectMessage(*pubsub.Message, string) { g.rejected.Add(1) }
func (g *gossipCounter) DuplicateMessage(m *pubsub.Message) {
	g.dups.Add(1)
	g.mu.Lock()
	g.dupByKind[topicKind(m.GetTopic())]++
	g.mu.Unlock()
}
func (g *gossipCounter) DropRPC(*pubsub.RPC, peer.ID)         { g.dropped.Add(1) }
func (g *gossipCounter) UndeliverableMessage(*pubsub.Message) { g.undeliverable.Add(1) }

func (g *gossipCounter) RecvRPC(rpc *pubsub.RPC) {
	g.rpcsRecv.Add(1)
	g.msgsRecv.Add(int64(len(rpc.GetPublish())))
	if len(rpc.GetPublish()) == 0 {
		return
	}
	g.mu.Lock()
	for _, m := range rpc.GetPublish() {
		g.recvByKind[topicKind(m.GetTopic())]++
		g.recvByTopic[m.GetTopic()]++
	}
	g.mu.Unlock()
}

// topicKind names the kind of an offer topic: "day" (a day shard),
// "class" (a slot class), "lane", "now" (the now shard), "now class",
// "now lane", "sealed" or "v1".
func topicKind(topic string) string {
	if strings.HasPrefix(topic, shard.SealedPrefix) {
		return "sealed"
	}
	k, err := shard.Parse(topic)
	switch {
	case err != nil:
		return "other"
	case k.V1:
		return "v1"
	case k.Now && k.Slot == "":
		return "now"
	case k.Now && k.Lane != "":
		return "now lane"
	case k.Now:
		return "now class"
	case k.Lane != "":
		return "lane"
	case k.Slot != "":
		return "class"
	}
	return "day"
}

// recvCounts is a copy of the received messages by topic kind, of the
// duplicates among them by kind, and of the received messages by topic.
func (g *gossipCounter) recvCounts() (byKind, dupsByKind, byTopic map[string]int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.recvByKind), maps.Clone(g.dupByKind), maps.Clone(g.recvByTopic)
}

func (g *gossipCounter) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	g.rpcsSent.Add(1)
	g.bytesSent.Add(int64(proto.Size(&rpc.RPC)))
	g.msgsSent.Add(int64(len(rpc.GetPublish())))
	g.partBytes[partPublish].Add(sizes(rpc.GetPublish()))
	g.partBytes[partSubscriptions].Add(sizes(rpc.GetSubscriptions()))
	if c := rpc.GetControl(); c != nil {
		g.ctrlSent.Add(int64(len(c.GetIhave()) + len(c.GetIwant()) + len(c.GetGraft()) + len(c.GetPrune()) + len(c.GetIdontwant())))
		g.partBytes[partIHave].Add(sizes(c.GetIhave()))
		g.partBytes[partIWant].Add(sizes(c.GetIwant()))
		g.partBytes[partGraft].Add(sizes(c.GetGraft()))
		g.partBytes[partPrune].Add(sizes(c.GetPrune()))
		g.partBytes[partIDontWant].Add(sizes(c.GetIdontwant()))
	}
}

// The parts of a gossipsub RPC whose bytes are counted apart.
const (
	partPublish = iota
	partSubscriptions
	partIHave
	partIWant
	partGraft
	partPrune
	partIDontWant
	numGossipParts
)

var gossipPartNames = [numGossipParts]string{"publish", "subscriptions", "ihave", "iwant", "graft", "prune", "idontwant"}

func sizes[M proto.Message](ms []M) int64 {
	var n int64
	for _, m := range ms {
		n += int64(proto.Size(m))
	}
	return n
}

// gossipCounts is a snapshot of a gossipCounter.
type gossipCounts struct {
	RPCsSent, RPCsRecv, MsgsSent, MsgsRecv, CtrlSent, Delivered, Dups, Rejected, Dropped, BytesSent int64
	PartBytes                                                                                       [numGossipParts]int64
}

func (g *gossipCounter) snapshot() gossipCounts {
	var parts [numGossipParts]int64
	for i := range parts {
		parts[i] = g.partBytes[i].Load()
	}
	return gossipCounts{PartBytes: parts,
		RPCsSent: g.rpcsSent.Load(), RPCsRecv: g.rpcsRecv.Load(), MsgsSent: g.msgsSent.Load(),
		MsgsRecv: g.msgsRecv.Load(), CtrlSent: g.ctrlSent.Load(), Delivered: g.delivered.Load(),
		Dups: g.dups.Load(), Rejected: g.rejected.Load(), Dropped: g.dropped.Load() + g.undeliverable.Load(),
		BytesSent: g.bytesSent.Load(),
	}
}

func (a gossipCounts) sub(b gossipCounts) gossipCounts {
	var parts [numGossipParts]int64
	for i := range parts {
		parts[i] = a.PartBytes[i] - b.PartBytes[i]
	}
	return gossipCounts{PartBytes: parts,
		RPCsSent: a.RPCsSent - b.RPCsSent, RPCsRecv: a.RPCsRecv - b.RPCsRecv, MsgsSent: a.MsgsSent - b.MsgsSent,
		MsgsRecv: a.MsgsRecv - b.MsgsRecv, CtrlSent: a.CtrlSent - b.CtrlSent, Delivered: a.Delivered - b.Delivered,
		Dups: a.Dups - b.Dups, Rejected: a.Rejected - b.Rejected, Dropped: a.Dropped - b.Dropped,
		BytesSent: a.BytesSent - b.BytesSent,
	}
}

func (a gossipCounts) add(b gossipCounts) gossipCounts {
	return a.sub(gossipCounts{}.sub(b))
}

// streamCounter is a resource manager that limits nothing (like
// network.NullResourceManager, which go-libp2p's own tests use for many
// hosts in one process) and counts the streams opened, by protocol.
type streamCounter struct {
	network.NullResourceManager
	mu     sync.Mutex
	byProt map[protocol.ID]int64
}

func newStreamCounter() *streamCounter { return &streamCounter{byProt: map[protocol.ID]int64{}} }

func (c *streamCounter) OpenStream(peer.ID, network.Direction) (network.StreamManagementScope, error) {
	return &countedStream{c: c}, nil
}

// Close keeps the counter usable by the node's next host.
func (c *streamCounter) Close() error { return nil }

func (c *streamCounter) snapshot() map[protocol.ID]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[protocol.ID]int64, len(c.byProt))
	for k, v := range c.byProt {
		out[k] = v
	}
	return out
}

type countedStream struct {
	network.NullScope
	c *streamCounter
}

// SetProtocol is called once per stream, on both ends, when its protocol
// has been negotiated.
func (s *countedStream) SetProtocol(p protocol.ID) error {
	s.c.mu.Lock()
	s.c.byProt[p]++
	s.c.mu.Unlock()
	return nil
}
