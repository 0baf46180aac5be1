package node

import pubsub "github.com/libp2p/go-libp2p-pubsub"

// PubSubOptions are the gossipsub options every Tandem node runs with. The
// swarm benchmark (node/bench) builds its nodes with them too, so what it
// measures is what users run.
func PubSubOptions() []pubsub.Option {
	return []pubsub.Option{
		// Without flood publishing a node whose mesh is still empty
		// publishes to nobody (go-libp2p-pubsub #331).
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerExchange(true),
		// The default queues (32) overflow when many offers arrive at once
		// (everyone booking the same hour): gossipsub then drops offers
		// ("validation queue full") that only a later re-announcement or
		// board sync repairs. Measured with the matchmaking storm
		// benchmark and `tandem bench swarm`.
		pubsub.WithValidateQueueSize(1024),
		pubsub.WithPeerOutboundQueueSize(128),
	}
}
