package node_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// pxCounter counts the prunes a host receives, and those with peer
// exchange among them.
type pxCounter struct{ prunes, withPX atomic.Int64 }

func (c *pxCounter) RecvRPC(rpc *pubsub.RPC) {
	for _, p := range rpc.GetControl().GetPrune() {
		c.prunes.Add(1)
		if len(p.GetPeers()) > 0 {
			c.withPX.Add(1)
		}
	}
}
func (*pxCounter) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*pxCounter) OnClosedOutboundStream(peer.ID)                       {}
func (*pxCounter) Join(string)                                          {}
func (*pxCounter) Leave(string)                                         {}
func (*pxCounter) Graft(peer.ID, string)                                {}
func (*pxCounter) Prune(peer.ID, string)                                {}
func (*pxCounter) ValidateMessage(*pubsub.Message)                      {}
func (*pxCounter) DeliverMessage(*pubsub.Message)                       {}
func (*pxCounter) RejectMessage(*pubsub.Message, string)                {}
func (*pxCounter) DuplicateMessage(*pubsub.Message)                     {}
func (*pxCounter) ThrottlePeer(peer.ID)                                 {}
func (*pxCounter) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (*pxCounter) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*pxCounter) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*pxCounter) UndeliverableMessage(*pubsub.Message)                 {}

// pxLab is a hub and its leaves on one offer topic, each with gossipsub
// on Tandem's options plus its own.
type pxLab struct {
	t   *testing.T
	ctx context.Context
}

const pxTopic = "/tandem/offers/2/2026-12-03/50"

// pxLeaves is more than gossipsub's Dhi (12), so the hub prunes some.
const pxLeaves = 16

func newPXLab(t *testing.T) *pxLab {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &pxLab{t: t, ctx: ctx}
}

func (lab *pxLab) host() host.Host {
	t := lab.t
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func (lab *pxLab) join(h host.Host, extra ...pubsub.Option) {
	t := lab.t
	ps, err := pubsub.NewGossipSub(lab.ctx, h, append(node.PubSubOptions(nil), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := ps.Join(pxTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.SetScoreParams(matchmaking.OfferTopicScoreParams()); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Subscribe(); err != nil {
		t.Fatal(err)
	}
}

// A node sends no peer exchange when it prunes: a hub on Tandem's options
// prunes its excess leaves with none. Nodes of version 2 and later never
// take it, and on the class topics that most leaves are from, a prune's
// suggestions were most of what it cost (0.3 KiB per node per minute at
// N = 1000 in `tandem bench swarm`).
func TestPeerExchangeNotSent(t *testing.T) {
	lab := newPXLab(t)
	hub := lab.host()
	lab.join(hub)
	var counts [pxLeaves]pxCounter
	for i := range counts {
		l := lab.host()
		lab.join(l, pubsub.WithRawTracer(&counts[i]))
		if err := l.Connect(lab.ctx, peer.AddrInfo{ID: hub.ID(), Addrs: hub.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	// The hub keeps at most 12 in its mesh, so it prunes at least four.
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		pruned := 0
		for i := range counts {
			if counts[i].prunes.Load() > 0 {
				pruned++
			}
		}
		return pruned >= pxLeaves-12
	}, "the hub pruning its excess leaves")
	for i := range counts {
		if n := counts[i].withPX.Load(); n > 0 {
			t.Fatalf("leaf %d got %d prunes with peer exchange from a hub on Tandem's options", i, n)
		}
	}
}

// A node does not dial the peers a pruning mesh peer suggests (peer
// exchange): a hub that sends it (another implementation, or an older
// node) prunes its excess leaves with peer exchange, and the leaves that
// run Tandem's options dial nobody. Canary leaves that take peer exchange
// from anyone (as every node did before, matchmaking/scoring.go) show
// that the suggestions arrived and were worth dialling.
func TestPeerExchangeNotTaken(t *testing.T) {
	lab := newPXLab(t)
	takeAnyPX := *matchmaking.PeerScoreThresholds()
	takeAnyPX.AcceptPXThreshold = 0

	hub := lab.host()
	lab.join(hub, pubsub.WithPeerExchange(true))
	type leaf struct {
		h      host.Host
		px     pxCounter
		canary bool
	}
	var ls []*leaf
	for i := range pxLeaves {
		l := &leaf{h: lab.host(), canary: i%2 == 0}
		opts := []pubsub.Option{pubsub.WithRawTracer(&l.px)}
		if l.canary {
			opts = append(opts, pubsub.WithPeerScore(matchmaking.PeerScoreParams(), &takeAnyPX))
		}
		lab.join(l.h, opts...)
		if err := l.h.Connect(lab.ctx, peer.AddrInfo{ID: hub.ID(), Addrs: hub.Addrs()}); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	dialledOut := func(l *leaf) bool {
		for _, c := range l.h.Network().Conns() {
			if c.RemotePeer() != hub.ID() && c.Stat().Direction == network.DirOutbound {
				return true
			}
		}
		return false
	}
	// The hub keeps at most 12 in its mesh, so at least two leaves of each
	// kind are pruned with peer exchange.
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		canaries, others := 0, 0
		for _, l := range ls {
			switch {
			case l.px.withPX.Load() == 0:
			case l.canary && !dialledOut(l):
				return false // suggestions received, not yet dialled
			case l.canary:
				canaries++
			default:
				others++
			}
		}
		return canaries > 0 && others > 0
	}, "the hub pruning leaves with peer exchange, and the canaries dialling its suggestions")
	for _, l := range ls {
		if !l.canary && l.px.withPX.Load() > 0 && dialledOut(l) {
			t.Fatalf("a leaf running Tandem's options dialled a peer the hub's peer exchange suggested")
		}
	}
}
