package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
	"github.com/tandem-cowork/tandem/matchmaking/sybil"
)

// Attackers in the swarm (SwarmConfig.Sybils). Each is one identity with
// its own host, written from docs/protocol.md alone (package sybil), that
// paid its stamp and then, for as long as the workload runs:
//
//   - is on every offer topic of the coming days and, for each honest
//     offer it sees, publishes an offer of its own in that offer's slot
//     class (as fast as the gossip rate limit lets one author: 2 a
//     second), giving its real address;
//   - never answers a proposal: it takes the stream and says nothing
//     (sybil.Silent), so it never matches and never shows up;
//   - proposes to the honest offers it sees, one after another, and never
//     confirms what is accepted: it holds each until the victim's hold
//     runs out.
//
// What the honest nodes do meanwhile is measured as without attackers.
type sybilSwarm struct {
	ids  []*sybil.Identity
	hs   []host.Host
	stop func()
	wg   sync.WaitGroup

	published, proposals, held atomic.Int64
	// now is the swarm nodes' clock, on which offers expire.
	now func() time.Time
}

// sybilTopicDays is how many days of shards an attacker is on (the
// workload books up to four days ahead).
const sybilTopicDays = 5

func startSybils(ctx context.Context, s *swarm, k int, rng *rand.Rand) (*sybilSwarm, error) {
	ctx, cancel := context.WithCancel(ctx)
	a := &sybilSwarm{now: s.now}
	a.stop = func() {
		cancel()
		for _, h := range a.hs {
			h.Close()
		}
		a.wg.Wait()
	}
	// Every attacker knows the others: it mirrors honest offers only.
	mates := map[peer.ID]bool{}
	now := a.now()
	var topics []string
	for _, sk := range shard.All(now, sybilTopicDays*24*time.Hour) {
		topics = append(topics, sk.Topic())
	}
	var matesMu sync.Mutex
	isMate := func(p peer.ID) bool {
		matesMu.Lock()
		defer matesMu.Unlock()
		return mates[p]
	}
	for i := range k {
		id, err := sybil.NewIdentity(benchStampBits)
		if err != nil {
			a.stop()
			return nil, err
		}
		h, err := libp2p.New(libp2p.Identity(id.Key),
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"),
			libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
		if err != nil {
			a.stop()
			return nil, fmt.Errorf("starting attacker %d: %w", i, err)
		}
		a.ids, a.hs = append(a.ids, id), append(a.hs, h)
		matesMu.Lock()
		mates[id.ID] = true
		matesMu.Unlock()
		sybil.Silent(h)
		ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true))
		if err != nil {
			a.stop()
			return nil, err
		}
		joined := map[string]*pubsub.Topic{}
		seen := make(chan *pb.Offer, 256)
		for _, name := range topics {
			tp, err := ps.Join(name)
			if err != nil {
				a.stop()
				return nil, err
			}
			joined[name] = tp
			sub, err := tp.Subscribe()
			if err != nil {
				a.stop()
				return nil, err
			}
			a.wg.Go(func() {
				defer sub.Cancel()
				for {
					m, err := sub.Next(ctx)
					if err != nil {
						return
					}
					if o, owner, err := sybil.Open(m.GetData()); err == nil && !isMate(owner) && !o.GetWithdrawn() {
						select {
						case seen <- o:
						default: // the attacker keeps up with what it can
						}
					}
				}
			})
		}
		// It joins the swarm as any node does: a few random peers.
		for _, j := range rng.Perm(len(s.nodes))[:min(s.cfg.Degree, len(s.nodes))] {
			if ai := s.nodes[j].addrInfo(); ai.ID != "" {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				h.Connect(cctx, ai)
				ccancel()
			}
		}
		a.wg.Go(func() { a.run(ctx, id, h, joined, seen) })
	}
	return a, nil
}

// run is one attacker's loop: mirror each honest offer it sees with an
// offer of its own in the same class, and propose to it and never
// confirm.
func (a *sybilSwarm) run(ctx context.Context, id *sybil.Identity, h host.Host, topics map[string]*pubsub.Topic, seen <-chan *pb.Offer) {
	pace := time.NewTicker(500 * time.Millisecond) // the gossip rate limit: 2 offers a second per author
	defer pace.Stop()
	n := 0
	for {
		var o *pb.Offer
		select {
		case <-ctx.Done():
			return
		case o = <-seen:
		}
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		now := a.now()
		n++
		mine := &pb.Offer{BookingId: fmt.Sprintf("sybil-%d", n), StartUnix: o.GetStartUnix(), DurationMin: o.GetDurationMin(),
			Kind: o.GetKind(), Activity: o.GetActivity(), Quiet: o.GetQuiet(), Name: "sybil",
			ExpiresUnix: now.Add(90 * time.Second).Unix(), Seq: uint64(now.UnixMicro())}
		for _, ad := range h.Addrs() {
			mine.Addrs = append(mine.Addrs, ad.Bytes())
		}
		if o.GetKind() == pb.Kind_KIND_NOW {
			mine.StartUnix = now.Unix()
		}
		if env, err := id.Seal(mine); err == nil {
			k := shard.ForOffer(o.GetKind() == pb.Kind_KIND_NOW, o.GetStartUnix(), int(o.GetDurationMin()))
			if tp := topics[k.Topic()]; tp != nil && tp.Publish(ctx, env, pubsub.WithSecretKeyAndPeerId(id.Key, id.ID)) == nil {
				a.published.Add(1)
			}
		}
		// Hold the honest offer: propose, and never confirm.
		owner, err := peer.IDFromBytes(o.GetOwner())
		if err != nil {
			continue
		}
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		a.proposals.Add(1)
		target := o
		if o.GetKind() == pb.Kind_KIND_NOW {
			target = &pb.Offer{BookingId: o.GetBookingId(), StartUnix: now.Unix(), DurationMin: o.GetDurationMin(),
				Kind: o.GetKind(), Activity: o.GetActivity(), Quiet: o.GetQuiet()}
		}
		ai := peer.AddrInfo{ID: owner}
		for _, b := range o.GetAddrs() {
			if m, err := multiaddr.NewMultiaddrBytes(b); err == nil {
				ai.Addrs = append(ai.Addrs, m)
			}
		}
		if ok, _ := id.Hold(hctx, h, ai, target, now.Add(90*time.Second).Unix(), uint64(now.UnixMicro())); ok {
			a.held.Add(1)
			a.wg.Go(func() { <-hctx.Done(); hcancel() }) // the hold ends with hctx
		} else {
			hcancel()
		}
	}
}
