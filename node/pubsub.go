package node

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// PubSubOptions are the gossipsub options every Tandem node runs with. The
// swarm benchmark (node/bench) builds its nodes with them too, so what it
// measures is what users run. gate, if not nil, is the matcher's gossip
// gate (matchmaking.GossipGate), to be given to its Config too.
func PubSubOptions(gate *matchmaking.GossipGate) []pubsub.Option {
	opts := []pubsub.Option{
		// Without flood publishing a node whose mesh is still empty
		// publishes to nobody (go-libp2p-pubsub #331).
		pubsub.WithFloodPublish(true),
		// No peer exchange in prunes: no node of version 2 or later takes
		// it (matchmaking/scoring.go), and most prunes are of short stays
		// on slot class topics, where the suggestions were most of what a
		// prune cost.
		pubsub.WithPeerExchange(false),
		// The default queues (32) overflow when many offers arrive at once
		// (everyone booking the same hour): gossipsub then drops offers
		// ("validation queue full") that only a later re-announcement or
		// board sync repairs. Measured with the matchmaking storm
		// benchmark and `tandem bench swarm`.
		pubsub.WithValidateQueueSize(1024),
		pubsub.WithPeerOutboundQueueSize(128),
		pubsub.WithGossipSubParams(gossipParams()),
		// Forwarders of forged or malformed offers lose their standing
		// (matchmaking/scoring.go); each offer topic is scored as it is
		// joined.
		pubsub.WithPeerScore(matchmaking.PeerScoreParams(), matchmaking.PeerScoreThresholds()),
	}
	if gate != nil {
		// Re-announcements that change nothing, sent too often, are
		// dropped before gossipsub verifies their signatures.
		opts = append(opts, pubsub.WithAppSpecificRpcInspector(gate.Inspect))
	}
	return opts
}

// gossipParams are gossipsub's defaults with a 300 ms heartbeat instead of
// 1 s. A node that has just (re)started has no mesh until its first
// heartbeat after connecting, and until then offers reach it only from
// directly connected publishers; the shorter heartbeat shrinks that blind
// spot threefold (offer propagation p95 at 100 nodes: 160-680 ms with
// 1 s, 50-160 ms with 300 ms). The message cache keeps its 4.5 s of
// history (15 heartbeats); gossip still advertises the last 3 heartbeats.
// idontwantThreshold: messages at least this large are announced with
// IDONTWANT to the mesh as they arrive (every offer is).
const idontwantThreshold = 128

func gossipParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.HeartbeatInterval = 300 * time.Millisecond
	p.HistoryLength = 15
	// An offer (about 0.5-1 KiB) is below the default 1 KiB threshold at
	// which a node tells its mesh peers IDONTWANT as a message arrives, so
	// on a busy class topic each offer reached a member from most of its
	// mesh: at N = 1000 in `tandem bench swarm`, 70% of the class topics'
	// messages received were duplicates. The IDONTWANT costs one message
	// ID per mesh peer, a small fraction of the copy it saves.
	p.IDontWantMessageThreshold = idontwantThreshold
	return p
}
