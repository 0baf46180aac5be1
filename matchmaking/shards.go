package matchmaking

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// PeerFinder finds other nodes on an offer topic, beyond the connected
// peers gossipsub already knows are on it (they are used at once). The
// daemon uses the DHT; the swarm benchmark an in-process directory.
type PeerFinder interface {
	// FindTopicPeers runs while this node is on topic: it makes the node
	// findable under the topic and connects to nodes found there while
	// have() (peers on the topic) is below what gossip needs. It calls
	// nobody() when a lookup found no other node on the topic, so that a
	// booking placed there need not wait for a board pull that cannot
	// come (lanes.go). It returns when ctx ends.
	FindTopicPeers(ctx context.Context, topic string, have func() int, nobody func())
}

// PeerLocator is what a PeerFinder may also do: find where a peer can be
// reached now, by its ID alone (the DHT's FindPeer). The matcher asks it
// for a partner of a match it cannot reach at the addresses it knows
// (negotiate.go, roundTrip).
type PeerLocator interface {
	FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error)
}

// V1Mode says when a node also uses version 1's single offer topic.
type V1Mode string

const (
	// V1Auto: while a connected peer speaks version 1 only (identify says
	// it serves /tandem/board/1.0.0 and not /tandem/board/2.0.0).
	V1Auto V1Mode = "auto"
	// V1Always: always (every offer of the network, as version 1 costs).
	V1Always V1Mode = "always"
	// V1Off: never.
	V1Off V1Mode = "off"
)

// Timing of the shards.
const (
	// viewLease is how long a look at the calendar keeps its days' shards.
	viewLease = 10 * time.Minute
	// viewDays bounds the days one look joins (today and the horizon).
	viewDays = 15
)

// shardTopic is one joined offer topic and the goroutines that serve it.
type shardTopic struct {
	key       shard.Key
	topic     *pubsub.Topic
	sealed    *pubsub.Topic // the shard's sealed private offers (nil on version 1's topic)
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	connected atomic.Bool               // some peer is on the topic
	lastPull  atomic.Pointer[time.Time] // when a board pull of this shard last completed
	// gone: the shard's withdrawals the node knows of only by expiry
	// (gone.go).
	gone goneClaims
	// foundNobody: the finder looked the topic up and found no other node.
	foundNobody atomic.Bool
}

// ShardEvent tells Config.OnShard that this node joined a shard, that the
// shard's first peer appeared (gossip can reach the node from then on), or
// that it left.
type ShardEvent struct {
	Topic string
	State string // "joined", "ready" or "left"
}

// OfferTopics lists the offer topics this node is on now. Peer scoring
// attaches its parameters to each as it is joined (Config.OnTopic).
func (s *Service) OfferTopics() []string {
	joined := s.joinedNow()
	out := make([]string, 0, len(joined))
	for k := range joined {
		out = append(out, k.Topic())
	}
	slices.Sort(out)
	return out
}

// ShardOf is the shard of one of the node's bookings.
func ShardOf(b Booking) shard.Key {
	return shard.ForOffer(b.Kind == KindNow, b.Start.Unix(), b.DurationMin)
}

func shardOfOffer(o *pb.Offer) shard.Key {
	return shard.ForOffer(o.GetKind() == pb.Kind_KIND_NOW, o.GetStartUnix(), int(o.GetDurationMin()))
}

// trackLocked keeps the interest in sync with a booking's state: an open
// (searching) booking holds its shard. Called with s.mu held whenever a
// booking is stored.
func (s *Service) trackLocked(old *Booking, b Booking) {
	was := old != nil && old.State == StateSearching
	if is := b.State == StateSearching; is && !was {
		s.interest.Hold(s.openPlace(b), b.ID)
	} else if was && !is {
		if k := s.placeOf(*old); k.IsClass() {
			linger := cmp.Or(s.cfg.ClassLinger, classLinger)
			s.interest.ReleaseSooner(k, b.ID, time.Now(), linger)
			// Leave when the linger ends, not at the next check of the
			// node's shards (every 3.75 s): on a busy class those
			// seconds were most of a matched node's stay there, and of
			// the class traffic it took in.
			time.AfterFunc(linger, func() {
				s.goRun(func() {
					if s.ctx != nil {
						s.syncShards(s.ctx)
					}
				})
			})
		} else {
			s.interest.Release(k, b.ID, time.Now())
		}
	}
}

// View joins the shards of the days [from, to) touches (and the focus-now
// shard) for a while: the calendar shows them. A zero from is today, a
// zero to a week after from.
func (s *Service) View(from, to time.Time) {
	now := s.now()
	if from.IsZero() || from.Before(now.Add(-24*time.Hour)) {
		from = now
	}
	if to.IsZero() {
		to = from.Add(7 * 24 * time.Hour)
	}
	if horizon := now.Add(MaxAhead + 24*time.Hour); to.After(horizon) {
		to = horizon
	}
	ks := append(shard.Days(from, to, viewDays), shard.NowKey)
	s.interest.View(ks, time.Now().Add(viewLease))
	if s.ctx != nil {
		s.syncShards(s.ctx)
	}
}

// WatchFocusNow keeps the node on the focus-now shard until Close,
// whatever its own bookings: a node that answers other people's "Focus
// now" requests from its board (the demo's partners) must receive them,
// and no booking of its own would put it there.
func (s *Service) WatchFocusNow() {
	s.interest.Hold(shard.NowKey, "watching focus now")
	if s.ctx != nil {
		s.syncShards(s.ctx)
	}
}

// wantV1 reports whether the node should be on version 1's topic now.
func (s *Service) wantV1() bool {
	switch s.cfg.V1 {
	case V1Always:
		return true
	case V1Off:
		return false
	}
	for _, p := range s.h.Network().Peers() {
		if isV1Peer(s.h, p) {
			return true
		}
	}
	return false
}

// isV1Peer: identify says p serves version 1's board sync and not
// version 2's, so it announces and listens on version 1's topic only.
func isV1Peer(h host.Host, p peer.ID) bool {
	ok, err := h.Peerstore().SupportsProtocols(p, BoardProtocol, BoardProtocolV2)
	return err == nil && len(ok) == 1 && ok[0] == BoardProtocol
}

// syncShards joins the shards the node wants and leaves the others.
func (s *Service) syncShards(ctx context.Context) {
	s.shardMu.Lock()
	defer s.shardMu.Unlock()
	if ctx.Err() != nil || s.shardsClosed {
		return
	}
	// Read under shardMu: a sync that read an older interest must not
	// leave a shard a newer one has just joined.
	wanted := s.interest.Wanted(time.Now())
	if s.v1Only {
		wanted = nil
	}
	if s.v1Only || s.wantV1() {
		wanted = append(wanted, shard.V1Key)
	}
	want := map[shard.Key]bool{}
	for _, k := range wanted {
		want[k] = true
		if s.joined[k] == nil {
			if err := s.joinLocked(ctx, k); err != nil {
				s.log.Error("joining offer topic", "topic", k.Topic(), "err", err)
			}
		}
	}
	var left []shard.Key
	for k, st := range s.joined {
		if !want[k] {
			s.leaveLocked(st)
			left = append(left, k)
		}
	}
	s.publishJoinedLocked()
	if len(left) > 0 {
		s.dropUnwantedLocked()
	}
}

// publishJoinedLocked makes the joined set visible to readers that must
// not wait for shardMu (gossip readers run while a leave waits for them).
func (s *Service) publishJoinedLocked() {
	m := make(map[shard.Key]*shardTopic, len(s.joined))
	for k, st := range s.joined {
		m[k] = st
	}
	s.joinedSnap.Store(&m)
}

// joinedNow is the joined set as last published.
func (s *Service) joinedNow() map[shard.Key]*shardTopic {
	if m := s.joinedSnap.Load(); m != nil {
		return *m
	}
	return nil
}

// joinLocked joins one offer topic: its validator, subscription, peer
// watcher and peer finder.
func (s *Service) joinLocked(ctx context.Context, k shard.Key) error {
	name := k.Topic()
	if err := s.cfg.PubSub.RegisterTopicValidator(name, s.validatorFor(k)); err != nil {
		return fmt.Errorf("registering offer validator: %w", err)
	}
	s.closeFanout(k) // pubsub has one handle per topic
	t, err := s.cfg.PubSub.Join(name)
	if err != nil {
		s.cfg.PubSub.UnregisterTopicValidator(name)
		return fmt.Errorf("joining: %w", err)
	}
	fail := func(err error) error {
		t.Close()
		s.cfg.PubSub.UnregisterTopicValidator(name)
		return err
	}
	s.scoreTopic(t)
	if s.cfg.OnTopic != nil {
		s.cfg.OnTopic(name, t)
	}
	sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
	if err != nil {
		return fail(fmt.Errorf("subscribing: %w", err))
	}
	events, err := t.EventHandler()
	if err != nil {
		sub.Cancel()
		return fail(fmt.Errorf("watching peers: %w", err))
	}
	sctx, cancel := context.WithCancel(ctx)
	st := &shardTopic{key: k, topic: t, cancel: cancel}
	st.gone.claims = s.takeLeftClaimsLocked(k)
	if k.SealedTopic() != "" && !s.v2Only {
		if err := s.joinSealed(sctx, st); err != nil {
			cancel()
			sub.Cancel()
			events.Cancel()
			return fail(err)
		}
	}
	s.joined[k] = st
	s.publishJoinedLocked()
	st.wg.Go(func() { s.readGossip(sctx, sub) })
	st.wg.Go(func() { s.watchPeers(sctx, st, events) })
	if f := s.cfg.Finder; f != nil && !k.V1 {
		st.wg.Go(func() {
			f.FindTopicPeers(sctx, name, func() int { return len(t.ListPeers()) }, func() { st.foundNobody.Store(true) })
		})
	}
	s.shardEvent(name, "joined")
	return nil
}

// leaveLocked stops a topic's goroutines and leaves it.
func (s *Service) leaveLocked(st *shardTopic) {
	s.keepLeftClaimsLocked(st)
	delete(s.joined, st.key)
	s.publishJoinedLocked()
	st.cancel()
	st.wg.Wait()
	st.topic.Close()
	s.cfg.PubSub.UnregisterTopicValidator(st.key.Topic())
	if st.sealed != nil {
		st.sealed.Close()
		s.cfg.PubSub.UnregisterTopicValidator(st.key.SealedTopic())
	}
	s.shardEvent(st.key.Topic(), "left")
}

// dropUnwantedLocked forgets the board's records of shards the node has
// left: its memory follows what it subscribes to, not the network.
func (s *Service) dropUnwantedLocked() {
	if s.joined[shard.V1Key] != nil {
		return
	}
	keep := func(k shard.Key, owner peer.ID) bool { return carries(s.joined, k, owner) }
	s.board.keepOnly(keep)
	s.sealedBoard.keepOnly(keep)
}

// wantsOffer reports whether a record of owner whose finest topic key is
// k (classKeyOf; a sealed record's day shard) belongs on the board: the
// node is on a topic that carries it (version 1's carries every one).
func (s *Service) wantsOffer(k shard.Key, owner peer.ID) bool {
	return carries(s.joinedNow(), k, owner)
}

// carries reports whether one of the joined topics carries a record of
// owner whose finest topic key is k.
func carries(joined map[shard.Key]*shardTopic, k shard.Key, owner peer.ID) bool {
	if joined[k] != nil {
		return true
	}
	for j := range joined {
		if j.Contains(k, []byte(owner)) {
			return true
		}
	}
	return false
}

// topicsFor returns the topics booking b's offer is published on: the
// one it is placed on (lanes.go), its day shard, and version 1's topic
// while the node is on it. The day shard is the calendar's: a node that
// is not on it publishes there without subscribing (gossipsub's fanout),
// so its record reaches the connected peers that view the day, which
// gossip it on among themselves, and nobody when nobody views it.
func (s *Service) topicsFor(b Booking) []*pubsub.Topic {
	joined := s.joinedNow()
	var out []*pubsub.Topic
	place := s.placeOf(b)
	for _, k := range []shard.Key{place, place.DayKey(), shard.V1Key} {
		st := joined[k]
		switch {
		case st != nil && !slices.Contains(out, st.topic):
			out = append(out, st.topic)
		case st == nil && k == place.DayKey() && place.IsClass() && len(out) > 0:
			if t := s.fanout(k); t != nil {
				out = append(out, t)
			}
		}
	}
	return out
}

// fanout is a publish-only handle of day shard k's topic.
func (s *Service) fanout(k shard.Key) *pubsub.Topic {
	s.fanMu.Lock()
	defer s.fanMu.Unlock()
	if f := s.fanouts[k]; f != nil {
		f.used = time.Now()
		return f.topic
	}
	if s.joinedNow()[k] != nil {
		return nil
	}
	t, err := s.cfg.PubSub.Join(k.Topic())
	if err != nil {
		// Joined meanwhile (a view): the next announcement uses it.
		return nil
	}
	s.fanouts[k] = &fanoutTopic{topic: t, used: time.Now()}
	return t
}

// fanoutTopic is a topic the node publishes on without subscribing.
type fanoutTopic struct {
	topic *pubsub.Topic
	used  time.Time
}

// closeFanout closes k's publish-only handle, if any.
func (s *Service) closeFanout(k shard.Key) {
	s.fanMu.Lock()
	defer s.fanMu.Unlock()
	if f := s.fanouts[k]; f != nil {
		f.topic.Close()
		delete(s.fanouts, k)
	}
}

// closeIdleFanouts closes the publish-only handles not used for a while
// (all of them when idle is 0).
func (s *Service) closeIdleFanouts(idle time.Duration) {
	s.fanMu.Lock()
	defer s.fanMu.Unlock()
	for k, f := range s.fanouts {
		if idle == 0 || time.Since(f.used) > idle {
			f.topic.Close()
			delete(s.fanouts, k)
		}
	}
}

// joinedTopic returns the joined topic of k, or nil.
func (s *Service) joinedTopic(k shard.Key) *shardTopic { return s.joinedNow()[k] }

// randomShard picks a joined shard that has peers, and one of them.
func (s *Service) randomShard(pick func(int) int) (*shardTopic, peer.ID) {
	var all []*shardTopic
	for _, st := range s.joinedNow() {
		all = append(all, st)
	}
	slices.SortFunc(all, func(a, b *shardTopic) int {
		if a.key.Topic() < b.key.Topic() {
			return -1
		}
		return 1
	})
	for len(all) > 0 {
		i := pick(len(all))
		st := all[i]
		if peers := st.topic.ListPeers(); len(peers) > 0 {
			return st, peers[pick(len(peers))]
		}
		all = append(all[:i], all[i+1:]...)
	}
	return nil, ""
}

// closeShards leaves every topic; nothing joins after it.
func (s *Service) closeShards() {
	s.shardMu.Lock()
	defer s.shardMu.Unlock()
	s.shardsClosed = true
	for _, st := range s.joined {
		s.leaveLocked(st)
	}
	s.closeIdleFanouts(0)
	s.publishJoinedLocked()
}

func (s *Service) shardEvent(topic, state string) {
	if s.cfg.OnShard != nil {
		s.cfg.OnShard(ShardEvent{Topic: topic, State: state})
	}
}

// validatorFor is the gossip validator of one offer topic: an offer must
// travel on its own shard's topic (or version 1's).
func (s *Service) validatorFor(k shard.Key) func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
	return func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		res := s.validateGossip(ctx, from, msg)
		if res != pubsub.ValidationAccept {
			return res
		}
		o := msg.ValidatorData.(*pb.Offer)
		if !k.Contains(classKeyOf(o), o.GetOwner()) || (k.IsClass() && len(o.GetWith()) > 0) {
			// Published where it does not belong: a private offer
			// travels sealed on its day shard only.
			s.refuseOffer(msg.GetFrom(), fmt.Errorf("offer of %s published on %s", classKeyOf(o), k))
			return pubsub.ValidationReject
		}
		return res
	}
}

// joinSealed joins the sealed topic of st's shard (private.go): its
// validator, subscription and reader, which run until ctx ends. Peers are
// found through the shard's own topic: version 3 nodes on it are on both.
func (s *Service) joinSealed(ctx context.Context, st *shardTopic) error {
	name := st.key.SealedTopic()
	k := st.key
	// Inline: gossipsub runs an asynchronous validator in a goroutine of
	// its own per message, so a flood's backlog (hundreds of records)
	// was hundreds of runnable goroutines, and every stream of the
	// node's own (a push, a proposal, a board sync) waited behind all of
	// them at each of its wake-ups. Inline, the backlog waits in the
	// validation queue and only gossipsub's workers (one per core) run
	// it; validateSealed yields once per record so that they do not hold
	// a core for the scheduler's 10 ms slices either.
	if err := s.cfg.PubSub.RegisterTopicValidator(name, func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		return s.validateSealed(k, msg)
	}, pubsub.WithValidatorInline(true)); err != nil {
		return fmt.Errorf("registering sealed offer validator: %w", err)
	}
	t, err := s.cfg.PubSub.Join(name)
	if err != nil {
		s.cfg.PubSub.UnregisterTopicValidator(name)
		return fmt.Errorf("joining %s: %w", name, err)
	}
	s.scoreTopic(t)
	sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
	if err != nil {
		t.Close()
		s.cfg.PubSub.UnregisterTopicValidator(name)
		return fmt.Errorf("subscribing to %s: %w", name, err)
	}
	st.sealed = t
	st.wg.Go(func() { s.readSealed(ctx, sub) })
	return nil
}

// validateSealed is a sealed topic's validator. What any node can check
// (signature, author, outer fields, shard, stamp) is rejected when wrong,
// which penalises the forwarder. A record sealed to us whose inside is bad
// is ignored (a relay could not have known) and counted against its
// author. Everything else is accepted and forwarded unread.
func (s *Service) validateSealed(k shard.Key, msg *pubsub.Message) pubsub.ValidationResult {
	s.validated.Add(1)
	runtime.Gosched() // let the node's other goroutines in between records (joinSealed)
	now := s.now()
	author := msg.GetFrom()
	if author != s.h.ID() && !s.limit.allow(author, now) {
		return pubsub.ValidationIgnore
	}
	in, err := s.openSealedIn(msg.GetData(), now)
	var stale errStale
	var inside insideBad
	switch {
	case errors.As(err, &stale):
		return pubsub.ValidationIgnore
	case errors.As(err, &inside):
		s.refuseOffer(author, fmt.Errorf("sealed to us: %w", err))
		return pubsub.ValidationIgnore
	case err != nil:
		s.refuseOffer(author, err)
		return pubsub.ValidationReject
	case in.owner != author:
		s.refuseOffer(author, fmt.Errorf("sealed offer of %s published by %s", in.owner, author))
		return pubsub.ValidationReject
	case in.shard != k:
		s.refuseOffer(author, fmt.Errorf("sealed offer of shard %s published on %s", in.shard, k))
		return pubsub.ValidationReject
	}
	msg.ValidatorData = in
	if in.offer != nil && author != s.h.ID() && s.wantsOffer(in.shard, author) {
		// A record sealed to us is taken here, once (gossip validates
		// a message once), not left to readSealed: under a flood of
		// records for others the subscription's buffer can be full,
		// and pubsub drops what does not fit, so the one record that
		// matters to us would be lost until its next announcement.
		s.takeSealed(in, author, OfferGossip)
	}
	return pubsub.ValidationAccept
}

// readSealed stores the sealed records the topic brings.
func (s *Service) readSealed(ctx context.Context, sub *pubsub.Subscription) {
	defer sub.Cancel()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		in, ok := msg.ValidatorData.(sealedIn)
		if !ok || msg.GetFrom() == s.h.ID() || !s.wantsOffer(in.shard, in.owner) {
			continue
		}
		s.takeSealed(in, msg.GetFrom(), OfferGossip)
	}
}
