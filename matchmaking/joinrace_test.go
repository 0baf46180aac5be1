package matchmaking

import (
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// Offers that gossip cannot have delivered to a peer that has just joined
// their shard. The node clocks stand still in these tests, so neither a
// re-announcement nor the periodic board sync can cover a miss.

// stoppedClock returns a tune that runs a node on clk, stopped.
func stoppedClock(clk *testClock) func(*Config) {
	clk.stop()
	return func(c *Config) { c.Now = clk.now }
}

// onTopic reports whether n sees p on the offer topic of shard k.
func onTopic(n *testNode, k shard.Key, p peer.ID) bool {
	st := n.svc.joinedTopic(k)
	return st != nil && slices.Contains(st.topic.ListPeers(), p)
}

// hasOffer reports whether n's board holds booking id of owner.
func hasOffer(n *testNode, owner peer.ID, id string) bool {
	return n.svc.board.get(owner, id) != nil
}

// A node publishes an offer before it has learned that a peer has just
// joined the shard (its pubsub is slow to read that peer's subscription);
// the peer had already pulled the node's board, before the offer existed.
// The publish went to the peers the node knew of, and it already had one
// (so learning of this one is not its "first peer" re-announcement).
// Before, the peer saw the offer only at the next re-announcement.
func TestOfferPublishedBeforeJoinerKnown(t *testing.T) {
	clk := &testClock{}
	tune := stoppedClock(clk)
	x := newTestNode(t, tune)
	p := startTestNode(&testNode{t: t, key: newKey(t), dir: t.TempDir(), tune: tune, held: &heldRPCs{from: x.id()}})
	q := newTestNode(t, tune)
	at := nextSlot(3 * time.Hour)
	k := ShardOf(Booking{Kind: KindScheduled, Start: at, DurationMin: 25})
	p.view()
	q.view()
	connect(t, p, q)
	connect(t, x, p) // x reaches p only: nobody else can relay p's offer to it
	waitFor(t, 10*time.Second, "p to see q on the shard", func() bool { return onTopic(p, k, q.id()) })
	waitFor(t, 10*time.Second, "x to know p's topics", func() bool { return slices.Contains(x.ps.ListPeers(k.Topic()), p.id()) })

	p.held.hold()
	x.view() // x joins the shard; p does not read its subscription yet
	waitFor(t, 10*time.Second, "x to pull the shard from p", func() bool {
		st := x.svc.joinedTopic(k)
		return st != nil && st.lastPull.Load() != nil
	})
	bk := p.book(t, BookRequest{At: at, DurationMin: 25})
	waitFor(t, 10*time.Second, "q to get p's offer by gossip", func() bool { return hasOffer(q, p.id(), bk.ID) })
	if onTopic(p, k, x.id()) {
		t.Fatal("p knew x was on the shard when it published")
	}
	p.held.let()
	waitFor(t, 10*time.Second, "p to see x on the shard", func() bool { return onTopic(p, k, x.id()) })
	waitFor(t, 10*time.Second, "x to get p's offer", func() bool { return hasOffer(x, p.id(), bk.ID) })
}

func newKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// A node that has just joined a shard pulls the board of the first peer it
// finds there, and skips the pull from the next one found within
// joinPullGap (a fresh board gains nothing from another copy). But the
// first board lacked the second peer's fresh offer (the two peers are on
// separate parts of the shard, and the offer had not crossed yet), and
// the second peer, which already had a peer there, does not re-announce
// for a newcomer. Before, the offer came only with its next
// re-announcement.
func TestJoinPullGapSkipsOwnerOfMissingOffer(t *testing.T) {
	clk := &testClock{}
	tune := stoppedClock(clk)
	x, q, p, r := newTestNode(t, tune), newTestNode(t, tune), newTestNode(t, tune), newTestNode(t, tune)
	at := nextSlot(3 * time.Hour)
	k := ShardOf(Booking{Kind: KindScheduled, Start: at, DurationMin: 25})
	for _, n := range []*testNode{q, p, r} {
		n.view()
	}
	connect(t, p, r)
	waitFor(t, 10*time.Second, "p to see r on the shard", func() bool { return onTopic(p, k, r.id()) })
	bk := p.book(t, BookRequest{At: at, DurationMin: 25})
	waitFor(t, 10*time.Second, "r to get p's offer", func() bool { return hasOffer(r, p.id(), bk.ID) })

	connect(t, x, q)
	x.view()
	waitFor(t, 10*time.Second, "x to pull the shard from q", func() bool {
		st := x.svc.joinedTopic(k)
		return st != nil && st.lastPull.Load() != nil
	})
	connect(t, x, p) // within joinPullGap of that pull: the clock stands still
	waitFor(t, 10*time.Second, "p to see x on the shard", func() bool { return onTopic(p, k, x.id()) })
	waitFor(t, 10*time.Second, "x to get p's offer", func() bool { return hasOffer(x, p.id(), bk.ID) })
}
