package matchmaking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
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

// syncBoard pulls p's board (anti-entropy): gossip only reaches peers that
// were online when an offer was published.
func (s *Service) syncBoard(ctx context.Context, p peer.ID) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
	defer cancel()
	st, err := s.h.NewStream(overAnyConn(sctx), p, BoardProtocol)
	if err != nil {
		return
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	if _, err := protodelim.MarshalTo(st, &pb.BoardRequest{Version: protoVersion}); err != nil {
		return
	}
	st.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxBoardResponse}).UnmarshalFrom(bufio.NewReader(st), resp); err != nil {
		s.log.Debug("board sync", "peer", p, "err", err)
		return
	}
	s.mergeBoard(resp.GetEnvelopes(), p)
	now := s.now()
	s.lastPull.Store(&now)
}

// syncLoop pulls the board from one random topic peer now and then. Gossip
// loses messages a relay forwards in the second before it has grafted a
// new peer into its mesh; this heals such gaps without waiting for the
// owner's next re-announcement.
func (s *Service) syncLoop(ctx context.Context) {
	s.clk.every(ctx, s.cfg.SyncInterval, func() {
		if peers := s.topic.ListPeers(); len(peers) > 0 {
			s.syncBoard(ctx, peers[rand.IntN(len(peers))])
		}
	})
}

// mergeBoard verifies every envelope on its own: the relay is not trusted.
// Records the board already has (same owner and booking, same or newer
// seq) are skipped before their signature is checked: a board sync
// mostly repeats what gossip delivered, and checking hundreds of
// signatures per sync was the largest CPU cost of a swarm.
func (s *Service) mergeBoard(envs [][]byte, from peer.ID) (added, bad int) {
	now := s.now()
	for _, env := range envs {
		if owner, id, seq, ok := peekOffer(env); ok && (owner == s.h.ID() || s.board.has(owner, id, seq)) {
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
		if owner == s.h.ID() {
			continue
		}
		if s.board.put(o, owner, env, now) {
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
// unexpired record we know.
func (s *Service) handleBoardStream(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(s.cfg.StreamTimeout)) // real time: a socket bound (clock.go)
	req := &pb.BoardRequest{}
	if err := (protodelim.UnmarshalOptions{MaxSize: 64}).UnmarshalFrom(bufio.NewReader(st), req); err != nil || req.GetVersion() != protoVersion {
		st.Reset()
		return
	}
	remote := st.Conn().RemotePeer()
	budget := s.syncBudget.grant(remote, time.Now())
	if budget == 0 {
		s.log.Debug("board sync over budget", "peer", remote)
		st.Reset()
		return
	}
	now := s.now()
	var own [][]byte
	for _, b := range s.Bookings() {
		if b.State != StateSearching || restricted(&b, now) {
			continue // a booking kept to its circle is not for everyone
		}
		if env, err := sealOffer(s.offerFor(b, now), s.key); err == nil {
			own = append(own, env)
		}
	}
	room := budget - 64 // the response's own framing
	for _, e := range own {
		room -= len(e) + 8
	}
	envs := append(own, s.board.envelopes(now, room)...)
	n, _ := protodelim.MarshalTo(st, &pb.BoardResponse{Envelopes: envs})
	s.syncBudget.spend(remote, n, time.Now())
}
