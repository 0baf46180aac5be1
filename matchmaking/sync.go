package matchmaking

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// MaxBoardResponse bounds one board sync answer.
const MaxBoardResponse = 1 << 20

// overAnyConn lets a stream use a limited (circuit relay) connection: two
// nodes behind NATs often reach each other only through a relay until
// hole punching gives them a direct connection, and without this option
// NewStream waits for that direct connection, which may never come. The
// matcher's and the board's messages are small, well within a relay's
// limits (2 min, 128 KiB per relayed connection by default); a direct
// connection, when there is one, is still preferred.
func overAnyConn(ctx context.Context) context.Context {
	return network.WithAllowLimitedConn(ctx, "tandem matchmaking")
}

// Board sync request limits: version 1's request is only a version;
// version 2's lists the topics wanted.
const (
	maxBoardRequestV1 = 64
	maxBoardRequestV2 = 4096
	maxBoardTopics    = 64
)

// syncBoard pulls p's board of shard sh, or of every shard the node is on
// if sh is nil (anti-entropy): gossip only reaches peers that were online
// when an offer was published. Version 2 peers send those shards only; a
// pull on version 1's topic, or from a version 1 peer, gets the peer's
// whole board, of which the node keeps the shards it is on.
func (s *Service) syncBoard(ctx context.Context, p peer.ID, sh *shardTopic) {
	s.pullBoard(ctx, p, sh, 0)
}

// pullBoard is syncBoard asking only for the records p took in the last
// recent (all of them if 0), and p's own open offers.
func (s *Service) pullBoard(ctx context.Context, p peer.ID, sh *shardTopic, recent time.Duration) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	req := &pb.BoardRequest{Version: protoVersion, Sealed: !s.v2Only, RecentS: uint32(recent.Seconds())}
	proto := protocol.ID(BoardProtocol)
	// A peer on a version 2 topic speaks version 2, whether or not
	// identify has told us yet: a newcomer's first pull often goes to a
	// peer it has only just connected to, and by version 1 it got that
	// peer's whole board and no withdrawal claims, which cuts the chain
	// that passes the topic's memory on (gone.go).
	onV2Topic := sh != nil && !sh.key.V1
	ok, err := s.h.Peerstore().SupportsProtocols(p, BoardProtocolV2)
	if onV2Topic || sh == nil && err == nil && len(ok) > 0 {
		proto = BoardProtocolV2
		if sh != nil {
			req.Topics = []string{sh.key.Topic()}
			// A newcomer's first pull: it holds no copy a withdrawal
			// would correct, so their number is all it needs of them.
			req.OpenOnly = recent == 0 && sh.lastPull.Load() == nil
		} else {
			req.Topics = s.OfferTopics()
		}
	}
	st, err := s.h.NewStream(overAnyConn(sctx), p, proto)
	if err != nil {
		return
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	if _, err := protodelim.MarshalTo(st, req); err != nil {
		return
	}
	st.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(st), resp); err != nil {
		s.log.Debug("board sync", "peer", p, "err", err)
		return
	}
	s.mergeBoard(resp.GetEnvelopes(), p)
	if !s.v2Only {
		s.mergeSealedReply(resp.GetSealed(), p)
	}
	if req.OpenOnly {
		sh.gone.adopt(s.now(), resp.GetWithdrawnTtlS(), resp.GetWithdrawnTag(), s.cfg.OfferTTL)
	}
	if sh != nil {
		now := s.now()
		sh.lastPull.Store(&now)
	}
}

// goneClaimsOf returns the live withdrawal claims of the topics named
// that the node is on (gone.go).
func (s *Service) goneClaimsOf(topics []string, now time.Time) []claim {
	var out []claim
	joined := s.joinedNow()
	for _, t := range topics {
		if k, err := shard.Parse(t); err == nil && joined[k] != nil {
			out = append(out, joined[k].gone.live(now)...)
		}
	}
	return out
}

// syncLoop pulls the board of one random joined shard from one random
// peer on it now and then. Gossip loses messages a relay forwards in the
// second before it has grafted a new peer into its mesh; this heals such
// gaps without waiting for the owner's next re-announcement. It asks only
// for what the peer took in the last syncRecent SyncIntervals: what the
// node missed before that, an earlier pull healed (and what it had before
// it joined, the join's full pull brought). A full board each time made
// a node's anti-entropy traffic grow with its shards' boards, that is
// with the network.
func (s *Service) syncLoop(ctx context.Context) {
	s.clk.every(ctx, s.cfg.SyncInterval, func() {
		if sh, p := s.randomShard(rand.IntN); sh != nil {
			s.pullBoard(ctx, p, sh, syncRecent*s.cfg.SyncInterval)
		}
	})
}

// syncRecent is how many SyncIntervals back an anti-entropy pull reaches:
// a node pulls one of its shards every SyncInterval, so with a few shards
// each is pulled every few intervals, and the windows overlap.
const syncRecent = 6

// relayedSyncInterval paces relayedSyncLoop. A pull asks only for the
// shards the node is on, so a relayed connection's data limit (128 KiB by
// default) lasts its whole two minutes at this pace for small boards.
const relayedSyncInterval = 5 * time.Second

// maxRelayedPulls bounds the peers pulled from in one round.
const maxRelayedPulls = 8

// relayedSyncLoop pulls the boards of peers the node reaches only through
// a circuit relay, while it has a booking searching for a partner: every
// relayedSyncInterval, and at once when a booking opens (kickRelayedPull).
// Gossipsub never uses a relayed (limited) connection, so two nodes behind
// NATs that found each other in a shard's DHT namespace but could not hole
// punch (a symmetric NAT) exchange offers through no one when no node in
// between is on the shard: without this they never saw each other's
// offers (the NAT lab's symmetric-symmetric cell). New offers and
// withdrawals also come pushed (push.go); the pulls bring the rest of the
// peer's board and keep its records fresh.
func (s *Service) relayedSyncLoop(ctx context.Context) {
	for s.clk.wait(ctx, relayedSyncInterval, s.relayedKick) {
		if !s.searching() {
			continue
		}
		for _, p := range s.relayedPeers(maxRelayedPulls, BoardProtocolV2, BoardProtocol) {
			if ctx.Err() != nil {
				return
			}
			s.syncBoard(ctx, p, nil)
		}
		s.at("relayed pull done")
	}
}

// searching reports whether any booking is looking for a partner.
func (s *Service) searching() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bookings {
		if b.State == StateSearching {
			return true
		}
	}
	return false
}

// mergeBoard verifies every envelope on its own: the relay is not trusted.
// Records the board already has (same owner and booking, same or newer
// seq) are skipped before their signature is checked: a board sync
// mostly repeats what gossip delivered, and checking hundreds of
// signatures per sync was the largest CPU cost of a swarm.
func (s *Service) mergeBoard(envs [][]byte, from peer.ID) (added, bad int) {
	now := s.now()
	for _, env := range envs {
		if o, ok := peekRecord(env); ok && (peer.ID(o.GetOwner()) == s.h.ID() || s.board.has(peer.ID(o.GetOwner()), o.GetBookingId(), o.GetSeq()) || !s.wantsOffer(classKeyOf(o), peer.ID(o.GetOwner())) ||
			!s.board.wouldAdmit(peer.ID(o.GetOwner()), o.GetBookingId(), s.admitRank(peer.ID(o.GetOwner()), now, s.booksIn(classKeyOf(o))), from, now)) {
			// Ours, known, of a shard the node is not on (a version 1
			// peer sends its whole board), or refused by the board's
			// admission rules whatever it holds: not worth a signature
			// check (a hostile responder re-serving a flood would
			// otherwise cost thousands a sync).
			continue
		}
		o, owner, err := s.openOffer(env, now)
		if err != nil {
			var stale errStale
			if !errors.As(err, &stale) {
				bad++
				s.refuseOffer(from, fmt.Errorf("in a board sync: %w", err))
			}
			continue
		}
		if owner == s.h.ID() || !s.wantsOffer(classKeyOf(o), owner) {
			continue
		}
		if s.board.admit(o, owner, env, now, s.admitRank(owner, now, s.booksIn(classKeyOf(o))), from) {
			s.observe(o, owner, OfferSync)
			s.forgetBackoff(owner, o.GetBookingId())
			s.learnAddrs(o, owner)
			added++
		}
	}
	if added > 0 {
		s.cfg.OnBoard()
		s.wake()
	}
	return added, bad
}

// handleBoardStream answers a board sync with our own open offers and every
// unexpired record we know: on version 2 those of the topics asked for,
// on version 1 all of them.
func (s *Service) handleBoardStream(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	v2 := st.Protocol() == BoardProtocolV2
	limit := int64(maxBoardRequestV1)
	if v2 {
		limit = maxBoardRequestV2
	}
	req := &pb.BoardRequest{}
	if err := (protodelim.UnmarshalOptions{MaxSize: limit}).UnmarshalFrom(bufio.NewReader(st), req); err != nil || req.GetVersion() != protoVersion {
		st.Reset()
		return
	}
	remote := st.Conn().RemotePeer()
	want, err := boardFilter(v2, req)
	if err != nil {
		s.log.Debug("refusing board request", "peer", remote, "err", err)
		st.Reset()
		return
	}
	tctx, cancel := context.WithTimeout(s.ctx, s.cfg.StreamTimeout)
	done, ok := s.syncBudget.turn(tctx, remote)
	cancel()
	if !ok {
		st.Reset()
		return
	}
	defer done()
	budget := s.syncBudget.grant(remote, time.Now())
	if budget == 0 {
		s.log.Debug("board sync over budget", "peer", remote)
		s.slowRefusal()
		st.Reset()
		return
	}
	now := s.now()
	sealed := req.GetSealed() && !s.v2Only
	var since time.Time // zero: every record
	if r := req.GetRecentS(); r > 0 {
		since = now.Add(-time.Duration(r) * time.Second)
	}
	var own, ownSealed [][]byte
	for _, b := range s.Bookings() {
		// Until our identity stamp is ready, our offers are not out yet
		// (peers would refuse them: prepareStamp).
		if s.stamp.Load() == nil || b.State != StateSearching || !want.accepts(classKeyOfBooking(b), s.h.ID()) {
			continue
		}
		private := b.With != "" && !s.v2Only
		switch {
		case private && sealed:
			// Sealed to the invited peer, whoever asks.
			if env, err := sealPrivateOffer(s.offerFor(b, now), s.key, s.privateHandle(b.ID)); err == nil {
				ownSealed = append(ownSealed, env)
			}
		case private && remote.String() == b.With:
			// The invited peer is a version 2 node (it reads no sealed
			// records): it gets the offer in the clear, on this stream
			// only, which no one else reads.
			if env, err := sealOffer(s.offerFor(b, now), s.key); err == nil {
				own = append(own, env)
			}
		case private:
			// Nobody else learns of it.
		case restricted(&b, now):
			// A booking kept to its circle is not for everyone.
		default:
			if env, err := sealOffer(s.offerFor(b, now), s.key); err == nil {
				own = append(own, env)
			}
		}
	}
	room := budget - 64 // the response's own framing
	for _, e := range append(own, ownSealed...) {
		room -= len(e) + 8
	}
	// When both boards hold more than fits, the sealed records get half
	// the room: a flood of public offers must not crowd every sealed
	// record out of a relay's replies (nor the reverse). What one side
	// leaves unused the other takes.
	var sealedEnvs [][]byte
	if sealed {
		sealedEnvs = s.sealedBoard.envelopesFor(now, since, room/2, want)
	}
	var envs [][]byte
	var goneTTLs, goneTags []uint32
	if v2 && req.GetOpenOnly() {
		var gone []goneRec
		envs, gone = s.board.openEnvelopesFor(now, since, room-framedSize(sealedEnvs), want)
		goneTTLs, goneTags = listGone(now, gone, s.goneClaimsOf(req.GetTopics(), now))
	} else {
		envs = s.board.envelopesFor(now, since, room-framedSize(sealedEnvs), want)
	}
	if sealed {
		if left := room - framedSize(envs); left > framedSize(sealedEnvs) {
			sealedEnvs = s.sealedBoard.envelopesFor(now, since, left, want)
		}
	}
	n, _ := writeBoardResponse(st, [][][]byte{own, envs}, [][][]byte{ownSealed, sealedEnvs}, goneTTLs, goneTags)
	s.syncBudget.settle(remote, budget, n, time.Now())
}

// writeBoardResponse writes a BoardResponse whose envelopes are those of
// envs, whose sealed records are those of sealed, in order, and whose
// withdrawn_ttl_s and withdrawn_tag are goneTTLs and goneTags (left out
// if none), framed as
// protodelim frames it (the size, then the message), and returns the
// bytes written. It writes the records where they lie: marshalling the
// response first built a copy of up to 1 MiB per reply, which under a
// memory limit kept the collector busy (16 requesters pulling a full
// board in a loop).
func writeBoardResponse(w io.Writer, envs, sealed [][][]byte, goneTTLs, goneTags []uint32) (int, error) {
	var tail []byte
	if len(goneTTLs) > 0 {
		var packed []byte
		for _, g := range goneTTLs {
			packed = protowire.AppendVarint(packed, uint64(g))
		}
		tail = protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), packed)
	}
	if len(goneTags) > 0 {
		var packed []byte
		for _, g := range goneTags {
			packed = protowire.AppendFixed32(packed, g)
		}
		tail = protowire.AppendBytes(protowire.AppendTag(tail, 4, protowire.BytesType), packed)
	}
	size := len(tail)
	for _, lists := range [][][][]byte{envs, sealed} {
		for _, l := range lists {
			for _, e := range l {
				size += 1 + protowire.SizeBytes(len(e))
			}
		}
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	n := 0
	write := func(b []byte) {
		m, _ := bw.Write(b)
		n += m
	}
	var hdr [2 * binary.MaxVarintLen64]byte
	write(protowire.AppendVarint(hdr[:0], uint64(size)))
	for i, lists := range [][][][]byte{envs, sealed} {
		field := protowire.Number(1 + i) // envelopes = 1, sealed = 2
		for _, l := range lists {
			for _, e := range l {
				write(protowire.AppendVarint(protowire.AppendTag(hdr[:0], field, protowire.BytesType), uint64(len(e))))
				write(e)
			}
		}
	}
	write(tail)
	return n, bw.Flush()
}

// mergeSealed takes the sealed records of a board sync: each is verified
// outside on its own (the responder is not trusted) and stored to serve
// on; those sealed to us are opened and their offers put on the board.
// Records the sealed board already has (owner, handle, seq) are skipped
// unverified, as in mergeBoard, and so are those its admission rules
// would refuse, unless their owner is a peer one of our private bookings
// waits for: the sealed board is a relay's store, and a flood that fills
// it (or the responder's quota on it) must not keep from us the one
// record sealed to us.
func (s *Service) mergeSealed(envs [][]byte, from peer.ID) (added, bad int) {
	now := s.now()
	awaited := s.awaitedPeers()
	for _, env := range envs {
		if s.skipsSealed(env, from, now, awaited) {
			continue
		}
		in, err := s.openSealedIn(env, now)
		if err != nil {
			var stale errStale
			var inside insideBad
			switch {
			case errors.As(err, &stale):
			case errors.As(err, &inside):
				// The responder could not have known; its author could.
				s.refuseOffer(in.owner, fmt.Errorf("sealed to us, in a board sync: %w", err))
			default:
				bad++
				s.refuseOffer(from, fmt.Errorf("sealed, in a board sync: %w", err))
			}
			continue
		}
		if in.owner == s.h.ID() || !s.wantsOffer(in.shard, in.owner) {
			continue
		}
		if s.takeSealed(in, from, OfferSync) {
			added++
		}
	}
	return added, bad
}

// skipsSealed reports whether mergeSealed would skip a sealed record from
// a board sync unchecked: by what it says of itself (unverified), it is
// ours, the sealed board has it, it is of a shard we are not on, or the
// board's admission would refuse it and its owner is no peer we wait for.
func (s *Service) skipsSealed(env []byte, from peer.ID, now time.Time, awaited map[peer.ID]bool) bool {
	owner, handle, seq, k, ok := peekSealed(env)
	return ok && (owner == s.h.ID() || s.sealedBoard.has(owner, handle, seq) || !s.wantsOffer(k, owner) ||
		(!awaited[owner] && !s.sealedBoard.wouldAdmit(owner, handle, s.admitRank(owner, now, true), from, now)))
}

// boardFilter says which shards a board request asks for: all of them on
// version 1, the listed topics on version 2 (each an offer topic; version
// 1's topic stands for all).
func boardFilter(v2 bool, req *pb.BoardRequest) (boardWant, error) {
	if !v2 {
		return boardWant{all: true, name: "*"}, nil
	}
	if len(req.GetTopics()) > maxBoardTopics {
		return boardWant{}, fmt.Errorf("board request lists %d topics, at most %d", len(req.GetTopics()), maxBoardTopics)
	}
	var keys []shard.Key
	var names []string
	for _, t := range req.GetTopics() {
		k, err := shard.Parse(t)
		if err != nil {
			return boardWant{}, fmt.Errorf("board request: %w", err)
		}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
			names = append(names, k.Topic())
		}
	}
	// The filter's name, for the board's cache of what it serves: the
	// same topics in any order are the same filter.
	slices.Sort(names)
	return wantTopics(keys, strings.Join(names, "\n")), nil
}

// awaitedPeers is the set of peers our searching private bookings name in
// `with`.
func (s *Service) awaitedPeers() map[peer.ID]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[peer.ID]bool
	for _, b := range s.bookings {
		if b.State != StateSearching || b.With == "" {
			continue
		}
		if id, err := peer.Decode(b.With); err == nil {
			if out == nil {
				out = map[peer.ID]bool{}
			}
			out[id] = true
		}
	}
	return out
}

// framedSize is what envs take in a board response (each with its field
// framing, counted as 8 bytes as the boards count it).
func framedSize(envs [][]byte) int {
	n := 0
	for _, e := range envs {
		n += len(e) + 8
	}
	return n
}
