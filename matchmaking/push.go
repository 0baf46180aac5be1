package matchmaking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// Offers to peers reached only through a relay.
//
// Gossipsub never opens a stream over a limited (circuit relay)
// connection, so two nodes that reach each other only through a relay (a
// symmetric NAT on either side, or both behind one router that does not
// hairpin) exchange offers by board pulls alone. On their own those come
// every relayedSyncInterval, and the NAT lab's relayed pairs took about 5 s
// to see each other's offers. Three things make it a round trip:
//
//   - the node pushes each new offer and each withdrawal of its own to the
//     peers it reaches only through a relay (OfferPushProtocol): one
//     envelope per stream, which the receiver checks exactly as gossip;
//   - when one of its bookings opens, it pulls those peers' boards at once
//     (they may have offered before it was on the shard, when it dropped
//     their pushes);
//   - when such a peer connects (identify completes) while a booking
//     searches, it pulls that peer's board at once.
//
// The same push also reaches a peer that appears on one of the node's
// shard topics (pushOwnTo): gossip sent before the node knew of it may
// have missed it.

// OfferPushProtocol carries one offer record from its owner to a peer the
// owner reaches only through a relay.
const OfferPushProtocol = "/tandem/offer-push/1.0.0"

// maxPushFrame bounds an OfferPush frame: one envelope and its framing.
const maxPushFrame = MaxOfferSize + 64

// maxRelayedPushes bounds the peers one record is pushed to.
const maxRelayedPushes = 8

// relayedPeers returns, in random order, up to limit peers the node
// reaches only through a relay (limited connections) that speak one of
// protos.
func (s *Service) relayedPeers(limit int, protos ...protocol.ID) []peer.ID {
	var out []peer.ID
	for _, p := range s.h.Network().Peers() {
		if s.h.Network().Connectedness(p) != network.Limited {
			continue
		}
		if ok, err := s.h.Peerstore().SupportsProtocols(p, protos...); err != nil || len(ok) == 0 {
			continue
		}
		out = append(out, p)
	}
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(len(out), limit)]
}

// pushOffer sends env, a record of the node's own, to the peers it
// reaches only through a relay, each on its own stream in the background.
// A receiver not on the record's shard drops it unread; gossip reaches
// the others.
func (s *Service) pushOffer(env []byte) {
	if s.ctx == nil {
		return
	}
	for _, p := range s.relayedPeers(maxRelayedPushes, OfferPushProtocol) {
		s.goRun(func() { s.pushTo(s.ctx, p, env) })
	}
}

// pushToClass sends env, the new offer of booking b, straight to the
// owners of offers in b's slot class that the node is directly connected
// to (at most classReach, those of standing or that answered us lately
// first): the peers the class plan may pair it with. By gossip alone it
// waited in their validation queues behind whatever else was being
// verified: with 1,000 ground identities re-announcing in the class, an
// honest pair's new offer reached its partner 60-230 ms late, against
// 7-13 ms without them. A receiver checks the record as gossip would
// (takePush); the gossip copy that follows changes nothing.
func (s *Service) pushToClass(b *Booking, env []byte) {
	if s.ctx == nil {
		return
	}
	now := s.now()
	class := s.classOf(b, now)
	self := s.h.ID()
	type cand struct {
		p     peer.ID
		first bool
	}
	var cands []cand
	seen := map[peer.ID]bool{}
	s.mu.Lock()
	for _, e := range class {
		if e.owner == self || seen[e.owner] || s.shunnedLocked(e.owner, now) {
			continue
		}
		seen[e.owner] = true
		if s.h.Network().Connectedness(e.owner) != network.Connected {
			continue
		}
		_, answered := s.answered[e.owner]
		cands = append(cands, cand{e.owner, answered || s.rankLocked(e.owner, now) > 0})
	}
	s.mu.Unlock()
	mrand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	slices.SortStableFunc(cands, func(x, y cand) int {
		switch {
		case x.first == y.first:
			return 0
		case x.first:
			return -1
		}
		return 1
	})
	for _, c := range cands[:min(len(cands), classReach)] {
		if ok, err := s.h.Peerstore().SupportsProtocols(c.p, OfferPushProtocol); err != nil || len(ok) == 0 {
			continue
		}
		s.goRun(func() { s.pushTo(s.ctx, c.p, env) })
	}
}

// invitePlanPartner pushes the open offer of booking b straight to p, the
// lower peer the class plan pairs it with. The lower of a plan's pair
// proposes, so p must have b's offer, and gossip need not bring it: b may
// still be choosing its lane (it announces nothing until it settles) or
// be announced on a lane p is not on. With 1,000 ground identities in the
// class, their volume sent honest bookings a lane deeper, and in half the
// runs of TestAttackGroundIDSybils the pair's higher member had its
// partner's offer within a millisecond while its own reached the partner
// 0.7-0.9 s later, by a lane climb. One push per plan partner and
// booking: the partner drops a record it has unverified.
func (s *Service) invitePlanPartner(b Booking, p peer.ID) {
	now := s.now()
	if s.ctx == nil || s.stamp.Load() == nil || restricted(&b, now) {
		return
	}
	if ok, err := s.h.Peerstore().SupportsProtocols(p, OfferPushProtocol); err != nil || len(ok) == 0 {
		return
	}
	if _, env, ok := s.ownRecord(b, now); ok {
		s.pushTo(s.ctx, p, env)
	}
}

// pushTo writes one OfferPush to p.
func (s *Service) pushTo(ctx context.Context, p peer.ID, env []byte) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(overAnyConn(sctx), p, OfferPushProtocol)
	if err != nil {
		s.log.Debug("pushing offer", "peer", p, "err", err)
		return
	}
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	if _, err := protodelim.MarshalTo(st, &pb.OfferPush{Version: protoVersion, Envelope: env}); err != nil {
		s.log.Debug("pushing offer", "peer", p, "err", err)
		st.Reset()
		return
	}
	st.Close()
}

// handlePushStream takes one pushed record. A frame that does not decode,
// or a record that fails the checks, is refused like a bad record in a
// board sync (counted and logged) and the stream reset.
func (s *Service) handlePushStream(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	from := st.Conn().RemotePeer()
	msg := &pb.OfferPush{}
	err := (protodelim.UnmarshalOptions{MaxSize: maxPushFrame}).UnmarshalFrom(bufio.NewReader(st), msg)
	if err == nil {
		err = s.takePush(from, msg)
	} else {
		s.refuseOffer(from, fmt.Errorf("in a push: %w", err))
	}
	if err != nil {
		st.Reset()
	}
}

// takePush checks a pushed record as the gossip validator checks a
// message whose author is from (the pusher must own the record; the
// author's rate limit, which gossip shares, applies; envelope, stamp and
// fields are verified) and puts it on the board. Records of shards the
// node is not on, and records it already has, are dropped before their
// signature is checked: the pusher cannot know which shards the node is
// on. It returns an error for a record it refused (counted and logged);
// stale or over-rate records are dropped without one, as gossip ignores
// them.
func (s *Service) takePush(from peer.ID, msg *pb.OfferPush) error {
	if msg.GetVersion() != protoVersion {
		err := fmt.Errorf("in a push: version %d not supported", msg.GetVersion())
		s.refuseOffer(from, err)
		return err
	}
	env := msg.GetEnvelope()
	now := s.now()
	if o, ok := peekRecord(env); ok && (!s.takesPushed(classKeyOf(o), peer.ID(o.GetOwner())) || s.board.has(peer.ID(o.GetOwner()), o.GetBookingId(), o.GetSeq()) ||
		(len(o.GetWith()) > 0 && peer.ID(o.GetWith()) != s.h.ID())) {
		// Not ours to take (a private offer is only its invited peer's).
		return nil
	}
	if !s.limit.allow(from, now) {
		return nil
	}
	o, err := s.openGossipOffer(env, now, from)
	if err != nil {
		var stale errStale
		if errors.As(err, &stale) {
			return nil
		}
		err = fmt.Errorf("in a push: %w", err)
		s.refuseOffer(from, err)
		return err
	}
	switch {
	case !s.takesPushed(classKeyOf(o), peer.ID(o.GetOwner())):
	case len(o.GetWith()) == 0:
		s.addOffer(o, from, env, OfferPushed)
	case peer.ID(o.GetWith()) == s.h.ID():
		// A private offer pushed to us by its owner (private.go). If it
		// is news and we wait for its owner, ours goes back at once: the
		// owner pushed because it booked or connected, and may not have
		// ours yet (a push it already has is dropped unverified, and
		// changes nothing, so this ends there).
		if s.takePrivate(o, from, env, from, OfferPushed) && !o.GetWithdrawn() && s.awaitedPeers()[from] && s.ctx != nil {
			s.goRun(func() { s.pushPrivateTo(s.ctx, from) })
		}
	}
	return nil
}

// takesPushed reports whether the node takes a pushed record of owner
// whose slot class is k: one of its topics carries it, or one of its
// bookings is placed in that class, on whichever lane (a plan partner's
// invitation, invitePlanPartner: lanes spread a class's gossip, not who
// may pair).
func (s *Service) takesPushed(k shard.Key, owner peer.ID) bool {
	return s.wantsOffer(k, owner) || s.booksIn(k)
}

// pushOwnTo sends p, which has just appeared on the topic of shard k,
// this node's open offers of k announced in the last joinPullGap, as they
// were announced (a peer that has one already drops it unverified).
// Pubsub learns a peer's subscription only when it reads it, which a
// loaded node may do after publishing: that gossip then went to the peers
// known before, none of which may reach p (a node with peers on the shard
// already does not announce again when one more appears), and p's own
// pull of this node's board, when it joined, may have come before the
// offer existed. One announced longer ago has been through the shard's
// gossip, so the board p pulls when it joins (the first of joinPullGap)
// holds it. A booking still choosing its lane on k is pushed too
// (pushPlacing). A booking kept to its circle is never pushed, and a
// private offer only to its invited peer (as pushPrivate).
func (s *Service) pushOwnTo(ctx context.Context, p peer.ID, k shard.Key) {
	if k.V1 {
		return
	}
	// A peer whose identify has not completed yet (its subscription can
	// come first) is tried: the stream waits for identify.
	if protos, err := s.h.Peerstore().GetProtocols(p); err == nil && len(protos) > 0 && !slices.Contains(protos, OfferPushProtocol) {
		return
	}
	now := s.now()
	s.pushOwnWhere(ctx, p, func(id string, b *Booking) bool {
		return s.travelsOn(*b, k) && elapsed(now, s.announced[id]) < joinPullGap &&
			(b.With == "" || b.With == p.String()) && !restricted(b, now)
	})
	s.pushPlacing(ctx, p, k, now)
}

// pushPlacing sends p the offers of this node's bookings placed on class
// topic k that are still choosing their lane (placeLoop): not announced
// yet, since that waits for a pull of k's board and then the next
// placement check. p, already on k, learns of such a booking when it
// pulls this node's board (its own join pull of us serves our open
// offers first), but that pull brings the board of k with it: with
// 1,000 ground Sybils re-announcing in the class, an honest partner's
// offer took 5-10 ms to come that way, behind the building, sending and
// reading of hundreds of their records. The push is the same offer
// alone, as soon as the node sees p on k.
func (s *Service) pushPlacing(ctx context.Context, p peer.ID, k shard.Key, now time.Time) {
	if s.stamp.Load() == nil || !k.IsClass() {
		return // nothing goes out before the stamp (prepareStamp)
	}
	var due []Booking
	s.mu.Lock()
	for id, b := range s.bookings {
		if b.State == StateSearching && b.With == "" && !restricted(b, now) && !s.settledPlace(id) && s.placeOf(*b) == k {
			due = append(due, *b)
		}
	}
	s.mu.Unlock()
	for _, b := range due {
		env, err := sealOffer(s.offerFor(b, now), s.key)
		if err != nil {
			s.log.Error("signing offer", "booking", b.ID, "err", err)
			continue
		}
		s.pushTo(ctx, p, env)
	}
}

// pushOwnWhere pushes p the offers of our searching bookings that pick
// (called under s.mu) selects, as last announced.
func (s *Service) pushOwnWhere(ctx context.Context, p peer.ID, pick func(id string, b *Booking) bool) {
	var due []*pb.Offer
	s.mu.Lock()
	for id, o := range s.lastOffer {
		if b := s.bookings[id]; b != nil && b.State == StateSearching && pick(id, b) {
			due = append(due, o)
		}
	}
	s.mu.Unlock()
	for _, o := range due {
		env, err := sealOffer(o, s.key)
		if err != nil {
			s.log.Error("signing offer", "booking", o.GetBookingId(), "err", err)
			continue
		}
		s.pushTo(ctx, p, env)
	}
}

// kickRelayedPull makes relayedSyncLoop pull at once.
func (s *Service) kickRelayedPull() {
	select {
	case s.relayedKick <- struct{}{}:
	default:
	}
}
