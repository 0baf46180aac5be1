package matchmaking

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// OfferSource says how an offer record reached an OfferEvent.
type OfferSource string

const (
	// OfferPublished: this node announced the record on gossip.
	OfferPublished OfferSource = "publish"
	// OfferGossip: the record entered this node's board from gossip.
	OfferGossip OfferSource = "gossip"
	// OfferSync: the record entered this node's board from a board sync.
	OfferSync OfferSource = "sync"
	// OfferPushed: the record entered this node's board from a push by
	// its owner: one that reaches the node only through a relay, or that
	// has just seen the node appear on the record's shard (push.go).
	OfferPushed OfferSource = "push"
)

// OfferEvent describes one offer record seen by Config.OnOffer. Owner,
// BookingID and Seq identify the record; a board holds, per owner and
// booking, only the record with the highest Seq, so an event is reported
// only for records newer than what the board had.
type OfferEvent struct {
	Owner     peer.ID
	BookingID string
	Seq       uint64
	Withdrawn bool
	Source    OfferSource
	// Topic is the offer topic a published record went out on (its
	// slot class, lane or day shard); empty for records received.
	Topic string
}

func (s *Service) observe(o *pb.Offer, owner peer.ID, src OfferSource) {
	if s.cfg.OnOffer == nil {
		return
	}
	s.cfg.OnOffer(OfferEvent{Owner: owner, BookingID: o.GetBookingId(), Seq: o.GetSeq(), Withdrawn: o.GetWithdrawn(), Source: src})
}

// observePublished observes a record this node publishes on topic.
func (s *Service) observePublished(o *pb.Offer, topic string) {
	if s.cfg.OnOffer != nil {
		s.cfg.OnOffer(OfferEvent{Owner: s.h.ID(), BookingID: o.GetBookingId(), Seq: o.GetSeq(), Withdrawn: o.GetWithdrawn(), Source: OfferPublished, Topic: topic})
	}
}
