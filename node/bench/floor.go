package bench

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node/store"
)

// Floor is what the stack underneath the matcher costs, measured in the
// same run on the same nodes, before the workload starts:
type Floor struct {
	// GossipDeliver: raw gossipsub (no validator) publish -> delivered,
	// one sample per (message, receiving node), on the same topology.
	GossipDeliver Dist `json:"gossip_deliver"`
	// GossipAll: publish -> delivered on every node, per message.
	GossipAll Dist `json:"gossip_all"`
	// StreamRTT: a new stream on an existing connection, 64 bytes there
	// and back (each negotiation message opens such a stream).
	StreamRTT Dist `json:"stream_rtt"`
	// DialRTT: connect to a peer not yet connected, then StreamRTT.
	DialRTT Dist `json:"dial_rtt"`
	// SyncedWrite: one badger transaction of a 400-byte value with
	// SyncWrites, as the matcher does for each booking change.
	SyncedWrite Dist `json:"synced_write"`
	// MatchMS is the least a match can take on this stack: the offer
	// reaches the proposer (GossipDeliver p50), Propose/Accept (StreamRTT
	// p50), the proposer's synced write, Confirm (counted as a whole
	// StreamRTT p50, though only its first half is on the path) and the
	// acceptor's synced write.
	MatchMS float64 `json:"match_ms"`
}

const (
	floorTopic = "/tandem/bench/floor/1"
	echoProto  = "/tandem/bench/echo/1"
)

// measureFloor runs the three floor measurements on the online nodes.
func measureFloor(ctx context.Context, nodes []*swarmNode, dir string, rng *rand.Rand, pr *progress) (Floor, error) {
	var f Floor
	var err error
	pr.set("floor", 0, 3)
	if f.GossipDeliver, f.GossipAll, err = gossipFloor(ctx, nodes, rng); err != nil {
		return f, err
	}
	pr.set("floor", 1, 3)
	if f.StreamRTT, f.DialRTT, err = streamFloor(ctx, nodes, rng); err != nil {
		return f, err
	}
	pr.set("floor", 2, 3)
	if f.SyncedWrite, err = writeFloor(filepath.Join(dir, "floor-store")); err != nil {
		return f, err
	}
	f.MatchMS = f.GossipDeliver.P50 + 2*f.StreamRTT.P50 + 2*f.SyncedWrite.P50
	return f, nil
}

func gossipFloor(ctx context.Context, nodes []*swarmNode, rng *rand.Rand) (one, all Dist, err error) {
	const msgs = 40
	type member struct {
		topic *pubsub.Topic
		sub   *pubsub.Subscription
	}
	members := make([]member, len(nodes))
	var mu sync.Mutex
	arrived := make([][]time.Time, msgs) // [msg][node]
	for i := range arrived {
		arrived[i] = make([]time.Time, len(nodes))
	}
	counts := make([]atomic.Int32, msgs)
	signal := make(chan int, msgs*len(nodes))
	rctx, cancel := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer func() {
		cancel()
		readers.Wait()
		for _, m := range members {
			if m.sub != nil {
				m.sub.Cancel()
			}
			if m.topic != nil {
				m.topic.Close()
			}
		}
	}()
	for i, n := range nodes {
		t, err := n.ps.Join(floorTopic)
		if err != nil {
			return one, all, fmt.Errorf("joining floor topic: %w", err)
		}
		sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
		if err != nil {
			return one, all, fmt.Errorf("subscribing to floor topic: %w", err)
		}
		members[i] = member{t, sub}
		self := n.id
		readers.Go(func() {
			for {
				m, err := sub.Next(rctx)
				if err != nil {
					return
				}
				if m.GetFrom() == self || len(m.GetData()) < 4 {
					continue
				}
				k := int(binary.BigEndian.Uint32(m.GetData()))
				if k >= msgs {
					continue
				}
				mu.Lock()
				if arrived[k][i].IsZero() {
					arrived[k][i] = time.Now()
					mu.Unlock()
					counts[k].Add(1)
					signal <- k
					continue
				}
				mu.Unlock()
			}
		})
	}
	// A mesh that is not complete by then is part of what is measured.
	waitMesh(ctx, nodes, floorTopic, 20*time.Second)
	if ctx.Err() != nil {
		return one, all, ctx.Err()
	}
	var perNode, toAll []time.Duration
	payload := make([]byte, 300)
	crand.Read(payload)
	for k := range msgs {
		src := rng.IntN(len(nodes))
		binary.BigEndian.PutUint32(payload, uint32(k))
		t0 := time.Now()
		if err := members[src].topic.Publish(ctx, payload); err != nil {
			return one, all, fmt.Errorf("publishing floor message: %w", err)
		}
		deadline := time.NewTimer(3 * time.Second)
	wait:
		for int(counts[k].Load()) < len(nodes)-1 {
			select {
			case <-signal:
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				deadline.Stop()
				return one, all, ctx.Err()
			}
		}
		deadline.Stop()
		mu.Lock()
		var last time.Duration
		complete := true
		for i, at := range arrived[k] {
			if i == src {
				continue
			}
			if at.IsZero() {
				complete = false
				continue
			}
			perNode = append(perNode, at.Sub(t0))
			last = max(last, at.Sub(t0))
		}
		mu.Unlock()
		if complete {
			toAll = append(toAll, last)
		}
	}
	return distOf(perNode), distOf(toAll), nil
}

// waitMesh waits until every node has grafted a mesh for topic of
// min(its peers, 4) peers, or the deadline passes.
func waitMesh(ctx context.Context, nodes []*swarmNode, topic string, timeout time.Duration) error {
	return pollUntil(ctx, timeout, func() bool {
		for _, n := range nodes {
			want := min(len(n.h.Network().Peers()), 4)
			if n.gossip.meshSize(topic) < want {
				return false
			}
		}
		return true
	})
}

func streamFloor(ctx context.Context, nodes []*swarmNode, rng *rand.Rand) (rtt, dial Dist, err error) {
	for _, n := range nodes {
		n.h.SetStreamHandler(echoProto, func(s network.Stream) {
			defer s.Close()
			s.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			if _, err := io.ReadFull(s, buf); err == nil {
				s.Write(buf)
			}
		})
	}
	defer func() {
		for _, n := range nodes {
			n.h.RemoveStreamHandler(echoProto)
		}
	}()
	// echo returns how long the round trip took, or, when it failed
	// (over its 5 s bound on a loaded machine), how long it was tried.
	echo := func(a *swarmNode, b peer.ID) (time.Duration, error) {
		t0 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := a.h.NewStream(sctx, b, echoProto)
		if err != nil {
			return time.Since(t0), err
		}
		defer s.Close()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		if _, err := s.Write(buf); err != nil {
			return time.Since(t0), err
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			return time.Since(t0), err
		}
		return time.Since(t0), nil
	}
	failed := 0
	defer func() {
		if err == nil && failed > 0 {
			rtt.Failed = failed
		}
	}()
	var rtts, dials []time.Duration
	for range 200 {
		a := nodes[rng.IntN(len(nodes))]
		peers := a.h.Network().Peers()
		if len(peers) == 0 {
			continue
		}
		d, err := echo(a, peers[rng.IntN(len(peers))])
		if err != nil {
			// Over the bound: kept as a sample of at least what it
			// took, not a reason to abandon the run.
			if ctx.Err() != nil {
				return rtt, dial, ctx.Err()
			}
			failed++
		}
		rtts = append(rtts, d)
	}
	for range 40 {
		a, b := nodes[rng.IntN(len(nodes))], nodes[rng.IntN(len(nodes))]
		if a == b || a.h.Network().Connectedness(b.id) == network.Connected {
			continue
		}
		a.h.Peerstore().AddAddrs(b.id, b.h.Addrs(), time.Minute)
		d, err := echo(a, b.id)
		if err != nil {
			if ctx.Err() != nil {
				return rtt, dial, ctx.Err()
			}
			failed++
		}
		dials = append(dials, d)
		a.h.Network().ClosePeer(b.id) // keep the topology as it was
	}
	rtt, dial = distOf(rtts), distOf(dials)
	return rtt, dial, nil
}

func writeFloor(dir string) (Dist, error) {
	db, err := store.Open(dir, false, nil)
	if err != nil {
		return Dist{}, err
	}
	defer db.Close()
	val := make([]byte, 400)
	crand.Read(val)
	var ds []time.Duration
	for i := range 200 {
		t0 := time.Now()
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set(fmt.Appendf(nil, "floor/%d", i%20), val)
		})
		if err != nil {
			return Dist{}, fmt.Errorf("synced write: %w", err)
		}
		ds = append(ds, time.Since(t0))
	}
	return distOf(ds), nil
}

// pollUntil checks cond every 20 ms until it holds, the timeout passes
// (an error) or ctx ends.
func pollUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
