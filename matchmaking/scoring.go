package matchmaking

import (
	"net"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Gossipsub peer scoring for the offer topics. Without it a rejected
// message penalises nobody, and a peer that forwards forged or malformed
// offers keeps its place in every mesh. The values follow the shape of
// Lotus's and Ethereum's parameter sets, scaled to a small topic:
//
//   - an invalid message (ValidationReject) costs its forwarder
//     100 x (invalid count)^2, decaying by half in about ten minutes: five
//     forged offers put a peer under the graylist threshold, so everything
//     it sends is ignored, and it cannot publish to or gossip with us;
//   - first deliveries of valid offers earn a little (capped), so an
//     honest relay is never graylisted by one bad message it forwarded;
//   - gossipsub's behaviour penalty (broken IWANT promises) applies;
//   - IP colocation counts peers per IP, except on loopback and private
//     LANs (tests, and offices where every peer shares a subnet).
//
// Peer scores are kept per topic; OfferTopicScoreParams applies to every
// offer topic (each shard, version 1's, a circle's), set when the node
// joins it.

// PeerScoreParams are the node's global scoring parameters; pass them to
// pubsub.WithPeerScore with PeerScoreThresholds.
func PeerScoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:               topicScoreCap,
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    -10,
		IPColocationFactorThreshold: 10,
		IPColocationFactorWhitelist: localNets(),
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:               time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 30 * time.Minute,
	}
}

// PeerScoreThresholds: below -500 a peer gets no gossip from us, below
// -1000 we publish nothing to it, below -2500 everything it sends is
// ignored.
//
// Peer exchange (the peers a pruning mesh peer suggests, which gossipsub
// then dials) is never taken: acceptPX is above any score a peer can
// reach. Taken from anyone (threshold 0), every prune of a crowded
// topic's mesh dialled up to 16 more peers, whose meshes then overflowed
// and pruned in turn: in `tandem bench swarm` 79 % of all dials came from
// it and a node ended connected to half the network, so its cost grew
// with the network. Taken only from peers that had delivered ten offers
// first (threshold 10), it still made 60 % of the dials. It is also how a
// stranger would steer a node's connections toward its own identities
// (an eclipse). The topic finder (PeerFinder) finds peers for a shard
// instead, and stops at gossipsub's D. Nor does the node send peer
// exchange (node.PubSubOptions): nobody of version 2 or later takes it.
func PeerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             -500,
		PublishThreshold:            -1000,
		GraylistThreshold:           -2500,
		AcceptPXThreshold:           acceptPX,
		OpportunisticGraftThreshold: 5,
	}
}

// acceptPX is the score from which a peer's peer exchange would be taken:
// above the topic score cap, so never.
const acceptPX = topicScoreCap + 1

// topicScoreCap caps what the offer topics add to a peer's score.
const topicScoreCap = 100

// OfferTopicScoreParams scores one offer topic.
func OfferTopicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0.01,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  300,
		FirstMessageDeliveriesWeight:   1,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:      50,
		InvalidMessageDeliveriesWeight: -100,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
		// Mesh delivery rates are left out: a shard is often quiet, and
		// a quiet honest peer must not be punished for it.
	}
}

// scoreTopic applies OfferTopicScoreParams to a joined offer topic (a
// no-op where the node runs without peer scoring).
func (s *Service) scoreTopic(t *pubsub.Topic) {
	if err := t.SetScoreParams(OfferTopicScoreParams()); err != nil {
		s.log.Debug("offer topic without peer scoring", "topic", t.String(), "err", err)
	}
}

func localNets() []*net.IPNet {
	var out []*net.IPNet
	for _, c := range []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10"} {
		if _, n, err := net.ParseCIDR(c); err == nil {
			out = append(out, n)
		}
	}
	return out
}
