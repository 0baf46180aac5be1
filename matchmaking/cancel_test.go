package matchmaking

import (
	"bufio"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// The ways a user's Cancel of a matched booking could fail to reach the
// partner's node, or be applied there and then undone, each leaving the
// partner holding a match the canceller has dropped (a one-sided
// booking).

// matchPair books one slot on a and b and waits until both hold the match
// confirmed.
func matchPair(t *testing.T, a, b *testNode) (ba, bb Booking) {
	t.Helper()
	slot := nextSlot(5 * time.Hour)
	ba = a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb = b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	return a.booking(ba.ID), b.booking(bb.ID)
}

// A node that dies between storing its user's Cancel and sending it (kill
// -9, power loss, the app quitting while the partner is slow to answer)
// sends it when it starts again. Before, the booking was stored cancelled
// and the mark that the Cancel was still owed was written only after a
// failed send, so a restart forgot it: the partner kept the match until
// it re-checked it itself, every 2 minutes, and could not even do that
// once the canceller came back on another port.
func TestCancelSentAfterCrashBeforeSend(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	ba, bb := matchPair(t, a, b)
	hit, release := crashAt(a, "cancel-stored")
	go a.svc.Cancel(context.Background(), ba.ID, "something came up")
	waitClosed(t, hit, "a storing the cancel")
	killHeld(a, release)
	a.start() // new port: b cannot dial a at the address it kept
	waitFor(t, 15*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
	if got := a.booking(ba.ID); got.State != StateCancelled {
		t.Fatalf("a's booking after the restart: %+v", got)
	}
	checkInvariants(t, []*testNode{a, b})
}

// A match whose re-check got no answer is re-checked again soon, not
// only at the next full re-check 2 minutes later. The partner b was
// offline when a cancelled; b came back while a was offline in turn (b's
// re-check at start found nobody), then a came back at its old address.
// a cannot reach b (b's kept address is stale: b started on another
// port), so only b's re-check can settle it: before, b waited for its
// 2-minute full re-check, holding a match its partner had cancelled.
func TestFailedRecheckRetriedSoon(t *testing.T) {
	a := newTestNode(t, nil)
	b := newTestNode(t, nil)
	connect(t, a, b)
	ba, bb := matchPair(t, a, b)
	b.stop()
	c, err := a.svc.Cancel(context.Background(), ba.ID, "something came up")
	if err != nil {
		t.Fatal(err)
	}
	if !c.CancelUnsent {
		t.Fatalf("cancel to an offline partner not marked unsent: %+v", c)
	}
	aAddrs := a.h.Addrs()
	a.stop()
	rechecked := make(chan struct{})
	var once sync.Once
	b.hook = func(p string) {
		if p == "rechecked" {
			once.Do(func() { close(rechecked) })
		}
	}
	b.start() // new port; its re-check of the match at start finds a offline
	waitClosed(t, rechecked, "b's re-check at start")
	// a comes back where b kept it.
	a.hostOpts = []libp2p.Option{libp2p.DisableRelay(), libp2p.ListenAddrs(aAddrs...)}
	a.start()
	waitFor(t, 15*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
	checkInvariants(t, []*testNode{a, b})
}

// A Cancel that could not be delivered while the partner stays connected
// (it timed out on a loaded partner, or the partner could not store it)
// is sent again within seconds, not on a backoff that grows to 30 s: the
// partner's user must learn promptly that the session is off, and a
// connected partner costs a stream, not a dial.
func TestCancelResentSoonWhileConnected(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	ba, bb := matchPair(t, a, b)
	var refused atomic.Int32
	count := func(key string, _ any) {
		if key == bookingPrefix+bb.ID {
			refused.Add(1)
		}
	}
	b.svc.db.beforeWrite.Store(&count)
	b.svc.db.failWrites.Store(true)
	if _, err := a.svc.Cancel(context.Background(), ba.ID, "plans changed"); err != nil {
		t.Fatal(err)
	}
	// Before, the fifth refusal left a's next try 8 s away, the sixth 16 s.
	waitFor(t, 30*time.Second, "b refusing five Cancels", func() bool { return refused.Load() >= 5 })
	a.svc.mu.Lock()
	r := a.svc.cancelRetries[ba.ID]
	a.svc.mu.Unlock()
	if r.delay > connectedRetry {
		t.Errorf("a re-sends its Cancel to a connected partner after %v", r.delay)
	}
	b.svc.db.failWrites.Store(false)
	waitFor(t, 30*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
}

// A Propose and a Confirm of the canceller's that arrive after its
// Cancel (sent earlier, held up on a loaded node: streams are handled
// concurrently, so a later stream can be served first) must not match
// the partner's booking with the cancelled one. Before, the Cancel freed
// b's booking, the late Propose took a fresh hold on it and the late
// Confirm committed the match: b held a match with a booking a had
// cancelled, and a, its Cancel acknowledged, no longer told anyone.
func TestLateProposeAfterCancelDoesNotRematch(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	offer := a.sealedOffer(t, ba) // as a's proposals carried it while searching
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	waitFor(t, 15*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if _, err := a.svc.Cancel(context.Background(), ba.ID, "plans changed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "b freed by the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	reply, done := lateProposal(t, a, b, ba, b.booking(bb.ID), offer)
	if got := b.booking(bb.ID); got.State != StateSearching {
		t.Fatalf("a late Propose (%v) and Confirm (%v) from a cancelled booking matched b's: %+v", reply, done, got)
	}
	checkInvariants(t, []*testNode{a, b})
}

// lateProposal sends, from a's host, a's Propose of its booking ba to b's
// booking bb (carrying offer) and, if accepted, its Confirm: what a's node
// sent while ba was searching and matching, arriving late.
func lateProposal(t *testing.T, a, b *testNode, ba, bb Booking, offer []byte) (reply, done *pb.MatchMessage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.id(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	st, err := a.h.NewStream(ctx, b.id(), MatchProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := bufio.NewReader(st)
	if err := writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: ba.ID, ToBooking: bb.ID, StartUnix: ba.Start.Unix(), DurationMin: uint32(ba.DurationMin),
		Kind: kindToPB(ba.Kind), Activity: activityToPB(ba.Activity), Quiet: ba.Quiet, Name: "a", Offer: offer,
	}}}); err != nil {
		t.Fatal(err)
	}
	if reply, err = readMsg(r); err != nil {
		t.Fatal(err)
	}
	if reply.GetAccept() == nil {
		return reply, nil
	}
	if err := writeMsg(st, &pb.MatchMessage{Body: &pb.MatchMessage_Confirm{Confirm: &pb.Confirm{
		FromBooking: ba.ID, ToBooking: bb.ID, StartUnix: ba.Start.Unix(), DurationMin: uint32(ba.DurationMin), Name: "a",
	}}}); err != nil {
		t.Fatal(err)
	}
	if done, err = readMsg(r); err != nil {
		t.Fatal(err)
	}
	return reply, done
}

// A proposer whose Confirm got no answer, and that is no longer connected
// to the acceptor, re-checks the match by dialling it soon, not only at
// its next full re-check 2 minutes later. Here the acceptor goes down
// between its Accept and the proposer's Confirm (its hold is lost; its
// user may cancel the booking or keep it searching) and comes back at its
// old address without dialling anyone: before, the proposer held the
// match, unconfirmed, for those 2 minutes while the acceptor searched.
func TestUnconfirmedMatchRecheckedWhenNotConnected(t *testing.T) {
	x, y := newTestNode(t, nil), newTestNode(t, nil)
	proposer, acceptor := x, y
	if y.id() < x.id() {
		proposer, acceptor = y, x
	}
	hit, release := crashAt(proposer, "proposer-persisted")
	connect(t, proposer, acceptor)
	slot := nextSlot(6 * time.Hour)
	ba := acceptor.book(t, BookRequest{At: slot, DurationMin: 50})
	bp := proposer.book(t, BookRequest{At: slot, DurationMin: 50})
	waitClosed(t, hit, "the proposer storing the match")
	addrs := acceptor.h.Addrs()
	acceptor.stop()
	release() // the proposer's Confirm goes nowhere
	waitFor(t, 15*time.Second, "the proposer's negotiation over", func() bool {
		proposer.svc.mu.Lock()
		defer proposer.svc.mu.Unlock()
		return !proposer.svc.inflight[bp.ID]
	})
	if b := proposer.booking(bp.ID); b.State == StateMatched && b.Confirmed {
		// A re-check of the fresh match, on another goroutine than the
		// held negotiation, confirmed it before the acceptor stopped
		// (seen once under -race and load): the case under test did
		// not arise.
		t.Skipf("the match was confirmed before the acceptor stopped: %+v", b)
	} else if b.State != StateMatched {
		t.Fatalf("the proposer's booking: %+v; want matched, unconfirmed", b)
	}
	acceptor.hostOpts = []libp2p.Option{libp2p.DisableRelay(), libp2p.ListenAddrs(addrs...)}
	acceptor.start()
	waitFor(t, 15*time.Second, "the pair settled", func() bool {
		b := proposer.booking(bp.ID)
		return b.State != StateMatched || (b.Confirmed && acceptor.booking(ba.ID).Confirmed)
	})
	checkInvariants(t, []*testNode{proposer, acceptor})
}

// Both sides of a match restart, one after the other, each on a new port
// (as the daemon does: it listens on port 0). a restarts first and
// re-checks the match with b; b keeps a's new addresses with the match.
// Then b goes offline, a's user cancels, and b comes back: b re-checks
// the match at a's new address and learns of the cancel. Before, b kept
// the addresses from when the match was made: after its restart it
// dialled a where a no longer was, and a dialled b where b no longer
// was, so neither reached the other and b held the match its partner had
// cancelled (seen in the swarm benchmark: node 42 / node 95, N = 100).
func TestPartnerAddrsFollowRestarts(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	ba, bb := matchPair(t, a, b)
	a.stop()
	a.start() // new port; its re-check at start reaches b
	newAddr := a.h.Addrs()[0].String()
	waitFor(t, 15*time.Second, "b keeping a's new address with the match", func() bool {
		return slices.Contains(b.booking(bb.ID).PartnerAddrs, newAddr)
	})
	b.stop()
	c, err := a.svc.Cancel(context.Background(), ba.ID, "something came up")
	if err != nil {
		t.Fatal(err)
	}
	if !c.CancelUnsent {
		t.Fatalf("cancel to an offline partner not marked unsent: %+v", c)
	}
	b.start() // new port; nobody knows it
	waitFor(t, 15*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
	checkInvariants(t, []*testNode{a, b})
}

// addrBook is a test PeerFinder that finds nobody on topics and a node's
// current addresses by its peer ID, as the DHT's FindPeer does; the test
// records each node's addresses after it (re)starts.
type addrBook struct {
	mu    sync.Mutex
	addrs map[peer.ID][]multiaddr.Multiaddr
}

func (b *addrBook) FindTopicPeers(ctx context.Context, topic string, have func() int, nobody func()) {
	<-ctx.Done()
}

func (b *addrBook) FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.addrs[id]) == 0 {
		return peer.AddrInfo{}, errors.New("not found")
	}
	return peer.AddrInfo{ID: id, Addrs: b.addrs[id]}, nil
}

func (b *addrBook) record(n *testNode) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs[n.id()] = n.h.Addrs()
}

// Both sides of a match are offline at overlapping times and come back on
// new ports, so neither's re-check at start reaches the other; then a's
// user cancels. a's Cancel cannot reach b at the address it knows, so a
// asks its finder where b is now and delivers it there. Before, a re-sent
// the Cancel to b's old address until the booked time was over and b
// kept the match (one-sided; seen in the swarm benchmark at N = 500 and
// N = 1000, seed 2).
func TestCancelReachesPartnerThatMovedWhileWeWereAway(t *testing.T) {
	book := &addrBook{addrs: map[peer.ID][]multiaddr.Multiaddr{}}
	withBook := func(c *Config) { c.Finder = book }
	a, b := newTestNode(t, withBook), newTestNode(t, withBook)
	connect(t, a, b)
	ba, bb := matchPair(t, a, b)
	b.stop()
	a.stop()
	a.start() // new port; b is offline, so a's re-check fails
	book.record(a)
	b.start() // new port; b's re-check dials a's old address
	book.record(b)
	if _, err := a.svc.Cancel(context.Background(), ba.ID, "something came up"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "b learns of the cancel", func() bool {
		return b.booking(bb.ID).State == StateSearching
	})
	waitFor(t, 15*time.Second, "a's cancel acknowledged", func() bool { return !a.booking(ba.ID).CancelUnsent })
	checkInvariants(t, []*testNode{a, b})
}

// A re-check's Confirm that crossed the partner's "no such match": the
// partner answered our first Confirm "no such match" (its own proposal was
// under way), we freed the booking, and then our re-check's Confirm, sent
// while we still held the match, reached it and committed it. The answer
// "Confirmed" arrives for a booking we hold free again: it takes the match
// back. Before, settle ignored it and the partner held a match we did not
// (one-sided) until its next re-check, two minutes later
// (TestStormSameSlot took 121 s in about 1 run of 3 under the race
// detector and load).
func TestConfirmedAfterFreeingTakesTheMatchBack(t *testing.T) {
	a, b := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, b)
	slot := nextSlot(7 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	sent := a.booking(ba.ID) // as it was while matched
	sent.State, sent.Partner, sent.PartnerName, sent.PartnerBooking = StateMatched, b.id().String(), "b", "b-booking"
	a.svc.settle(context.Background(), sent, confirmedMsg())
	got := a.booking(ba.ID)
	if got.State != StateMatched || got.Partner != b.id().String() || got.PartnerBooking != "b-booking" || !got.Confirmed {
		t.Fatalf("after the partner confirmed a match we had freed: %+v", got)
	}
}

// TestCancelRacingConfirmKeepsReason: the proposer's user cancels while
// its Confirm is on the way, and the acceptor's "Confirmed" comes back
// before the cancel's own Cancel has gone out. The proposer then tells
// the acceptor its match is gone, with the user's reason: the partner's
// screen and notices say "partner cancelled: sick today", never
// "matched elsewhere", which was not what happened.
func TestCancelRacingConfirmKeepsReason(t *testing.T) {
	x, y := newTestNode(t, nil), newTestNode(t, nil)
	proposer, acceptor := x, y
	if y.id() < x.id() {
		proposer, acceptor = y, x
	}
	// The acceptor has committed and not yet answered: the proposer's
	// user cancels. The proposer's Cancel is held back (cancel-stored)
	// until the acceptor has heard from the proposer's Confirm answer.
	stored := make(chan struct{})
	heard := make(chan struct{})
	var once, onceStored atomic.Bool
	var proposed atomic.Pointer[string] // the proposer's booking ID
	acceptor.svc.setTestHook(func(p string) {
		if p != "acceptor-committed" || !once.CompareAndSwap(false, true) {
			return
		}
		go proposer.svc.Cancel(context.Background(), *proposed.Load(), "sick today")
		<-stored
	})
	proposer.svc.setTestHook(func(p string) {
		if p != "cancel-stored" || !onceStored.CompareAndSwap(false, true) {
			return
		}
		close(stored)
		<-heard
	})
	connect(t, x, y)
	slot := nextSlot(6 * time.Hour)
	bp := proposer.book(t, BookRequest{At: slot, DurationMin: 50})
	proposed.Store(&bp.ID)
	ba := acceptor.book(t, BookRequest{At: slot, DurationMin: 50})
	waitFor(t, 15*time.Second, "the acceptor freed by the proposer's answer", func() bool {
		return acceptor.booking(ba.ID).State == StateSearching && acceptor.booking(ba.ID).Note != ""
	})
	close(heard)
	if got, want := acceptor.booking(ba.ID).Note, "partner cancelled: sick today"; got != want {
		t.Fatalf("the acceptor's booking says %q, want %q", got, want)
	}
	waitFor(t, 15*time.Second, "the user's Cancel acknowledged", func() bool { return !proposer.booking(bp.ID).CancelUnsent })
	if b := proposer.booking(bp.ID); b.State != StateCancelled {
		t.Fatalf("the proposer's booking is %s, want cancelled", b.State)
	}
	checkInvariants(t, []*testNode{x, y})
}
