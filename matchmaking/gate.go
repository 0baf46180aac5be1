package matchmaking

import (
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// GossipGate looks at the messages of every gossipsub RPC a node receives
// before gossipsub checks their signatures, and drops the needless
// re-announcements (Service.needlessRefresh). It does so here, not in the
// topic validator, because gossipsub verifies a message's signature and
// queues it before any validator sees it: under a stranger's stream of
// re-signed records that alone cost its victims as much as all the rest.
// Gossipsub takes an inspector only when it is built, before the Service
// exists, so the gate is made first (NewGossipGate, passed to gossipsub
// with pubsub.WithAppSpecificRpcInspector(gate.Inspect)) and the Service
// takes it from Config.Gate when it starts.
type GossipGate struct {
	svc atomic.Pointer[Service]
}

// NewGossipGate returns a gate that lets everything through until a Service
// is started with it.
func NewGossipGate() *GossipGate { return &GossipGate{} }

// Inspect is the gossipsub RPC inspector (pubsub.WithAppSpecificRpcInspector).
// It never refuses an RPC; it only leaves needless re-announcements out of
// its messages (gossipsub reads them after the inspector returns).
func (g *GossipGate) Inspect(from peer.ID, rpc *pubsub.RPC) error {
	s := g.svc.Load()
	if s == nil || len(rpc.Publish) == 0 {
		return nil
	}
	now := s.now()
	keep := rpc.Publish[:0]
	for _, m := range rpc.Publish {
		author, err := peer.IDFromBytes(m.GetFrom())
		if err != nil || author == s.h.ID() || !s.needlessRefresh(m.GetData(), author, m.GetTopic(), now) {
			keep = append(keep, m)
		}
	}
	clear(rpc.Publish[len(keep):])
	rpc.Publish = keep
	return nil
}
