package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking/shard"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestShardPeersFoundThroughDHT: B and C know only A, which has no
// booking and so is on no offer topic. B books a slot and, while it
// searches there, provides the slot class's topic in the DHT (A, its DHT
// peer, stores the record); C books the same slot, can find B there, and
// they match. (In a swarm this small they also meet through the node-wide
// rendezvous; the provider records are what a large swarm relies on.) C's
// own record is not waited for: a booking that matches at once leaves the
// topic 300 ms later (matchmaking's classLinger), which can be before its
// provide completed, and a record of a node no longer there would only
// send others to it.
func TestShardPeersFoundThroughDHT(t *testing.T) {
	cfgA, cfgB, cfgC := nodetest.Config(t), nodetest.Config(t), nodetest.Config(t)
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	nodetest.Link(t, &cfgC, a)
	b, c := nodetest.Start(t, cfgB), nodetest.Start(t, cfgC)
	cb, cc := apiClientFor(b), apiClientFor(c)
	ctx := context.Background()
	slot := time.Now().Add(3 * time.Hour).Truncate(15 * time.Minute)
	topic := shard.Class(slot, 75, false).Topic() // where a public booking is placed first
	bb, err := cb.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 75})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 60*time.Second, func() bool {
		ids, err := node.TopicProviders(ctx, a, topic)
		return err == nil && slices.Contains(ids, b.ID())
	}, "A's DHT to list B on %s", topic)
	if _, err := cc.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 75}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 60*time.Second, func() bool {
		bs, err := cb.Bookings(ctx)
		return err == nil && len(bs) == 1 && bs[0].ID == bb.ID && bs[0].Confirmed && bs[0].Partner == c.ID().String()
	}, "B and C to match")
	if topics := a.Matchmaking().OfferTopics(); len(topics) != 0 {
		t.Fatalf("A is on %v; it has no booking and views nothing", topics)
	}
}
