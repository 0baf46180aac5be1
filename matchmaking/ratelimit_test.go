package matchmaking

import (
	"context"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
)

// pubsub runs the topic validator on a node's own publishes too. The
// per-author rate limit is for other peers: a node that cancels and
// rebooks in quick succession, or announces all its open offers when its
// first peer appears, must not drop its own records (it did: a withdrawal
// or a reopened offer never left the node, and a rematch waited for the
// next re-announcement).
func TestOwnOffersAreNotRateLimited(t *testing.T) {
	n := newTestNode(t, nil)
	_, other := mustKey(t)
	now := time.Now()
	msg := func(author []byte, seq uint64) *pubsub.Message {
		o := validOffer(n.id(), now)
		o.Owner, o.Seq = author, seq
		key := n.key
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		return &pubsub.Message{Message: &pubsubpb.Message{From: author, Data: env}}
	}
	for i := range 3 * 20 {
		if r := n.svc.validateGossip(context.Background(), n.id(), msg([]byte(n.id()), uint64(i+1))); r != pubsub.ValidationAccept {
			t.Fatalf("own record %d: %v, want accepted", i+1, r)
		}
	}
	// Another author is still limited (its records fail the signature
	// check here, but the limit comes first).
	ignored := 0
	for i := range 3 * 20 {
		if n.svc.validateGossip(context.Background(), other, msg([]byte(other), uint64(i+1))) == pubsub.ValidationIgnore {
			ignored++
		}
	}
	if ignored == 0 {
		t.Fatal("another author's burst was not rate limited")
	}
}

// A proposal answered "not available" while a newer record of the offer
// arrived (its match was cancelled meanwhile) must not keep the proposer
// away from the reopened offer for a minute.
func TestBackoffYieldsToANewerRecord(t *testing.T) {
	n := newTestNode(t, nil)
	key, owner := mustKey(t)
	now := time.Now()
	put := func(seq uint64) *boardEntry {
		o := validOffer(owner, now)
		o.Seq = seq
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		n.svc.board.put(o, owner, env, now)
		return n.svc.board.get(owner, o.GetBookingId())
	}
	old := put(1)
	put(2) // reopened while we were proposing to record 1
	n.svc.setBackoff(old, time.Minute)
	n.svc.mu.Lock()
	_, backedOff := n.svc.backoff[boardKey{owner, old.offer.GetBookingId()}]
	n.svc.mu.Unlock()
	if backedOff {
		t.Fatal("backed off from an offer whose newer record had arrived")
	}
	cur := n.svc.board.get(owner, old.offer.GetBookingId())
	n.svc.setBackoff(cur, time.Minute)
	n.svc.mu.Lock()
	_, backedOff = n.svc.backoff[boardKey{owner, old.offer.GetBookingId()}]
	n.svc.mu.Unlock()
	if !backedOff {
		t.Fatal("no backoff from the current record")
	}
}
