package node

import (
	"context"

	"github.com/tandem-cowork/tandem/node/apiv1"

	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// RendezvousProviders lists the peers whose rendezvous record n's DHT
// stores (a test hook: black-box tests cannot see whether a record reached
// a peer, because small swarms connect through DHT lookups anyway).
func RendezvousProviders(ctx context.Context, n *Node) ([]peer.ID, error) {
	h, err := mh.Sum([]byte(Rendezvous), mh.SHA2_256, -1)
	if err != nil {
		return nil, err
	}
	ais, err := n.disc.dht.ProviderStore().GetProviders(ctx, h)
	var ids []peer.ID
	for _, ai := range ais {
		ids = append(ids, ai.ID)
	}
	return ids, err
}

// TopicProviders lists the peers n's DHT stores as being on an offer
// topic (under the topic's rendezvous key).
func TopicProviders(ctx context.Context, n *Node, topic string) ([]peer.ID, error) {
	h, err := mh.Sum([]byte(topicNamespace(topic)), mh.SHA2_256, -1)
	if err != nil {
		return nil, err
	}
	ais, err := n.disc.dht.ProviderStore().GetProviders(ctx, h)
	var ids []peer.ID
	for _, ai := range ais {
		ids = append(ids, ai.ID)
	}
	return ids, err
}

// Subscribe follows n's events in process, with a buffer deep enough
// that a test reading them at once loses none.
func Subscribe(n *Node) (<-chan apiv1.Event, func()) { return n.events.subscribeN(1 << 14) }

// HelperProviders lists the peers n's DHT stores under the namespace of
// nodes that offer a STUN/TURN relay.
func HelperProviders(ctx context.Context, n *Node) ([]peer.ID, error) {
	h, err := mh.Sum([]byte(HelperRendezvous), mh.SHA2_256, -1)
	if err != nil {
		return nil, err
	}
	ais, err := n.disc.dht.ProviderStore().GetProviders(ctx, h)
	var ids []peer.ID
	for _, ai := range ais {
		ids = append(ids, ai.ID)
	}
	return ids, err
}
