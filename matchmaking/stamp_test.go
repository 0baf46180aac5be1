package matchmaking

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOffersWaitForStamp: a new identity's stamp is minted in the
// background (here held back by the test until it lets it finish). A
// booking made meanwhile is stored and searching, but nothing of it goes
// out: no announcement, no proposal, nothing in a board sync (peers would
// refuse a record without a stamp). The moment the stamp is ready the
// offer is announced, not at the next re-announcement (ten minutes away
// here), and matched. The stamp is stored: a restart does not mint again.
func TestOffersWaitForStamp(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	letMint := func() { once.Do(func() { close(release) }) }
	var mints atomic.Int32
	hold := func(p string) {
		if p == "stamp-ready" {
			mints.Add(1)
			<-release
		}
	}
	var mu sync.Mutex
	var events []OfferEvent // A's and B's
	record := func(ev OfferEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}
	seen := func(src OfferSource, booking string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			if ev.Source == src && ev.BookingID == booking && !ev.Withdrawn {
				return true
			}
		}
		return false
	}
	slow := func(c *Config) {
		c.AnnounceInterval = 10 * time.Minute
		c.OnOffer = record
	}
	b := newTestNode(t, slow)
	// A has the lower peer ID: of a compatible pair, the lower one
	// proposes, so A would propose to B if it could.
	key, id := mustKey(t)
	for id >= b.id() {
		key, id = mustKey(t)
	}
	a := startTestNode(&testNode{t: t, key: key, dir: t.TempDir(), tune: slow, hook: hold})
	t.Cleanup(letMint) // runs before a's stop, which waits for the mint
	connect(t, a, b)

	slot := nextSlot(time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 50})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 50})
	waitFor(t, 10*time.Second, "B's offer on A's board", func() bool {
		return len(a.svc.Board(time.Time{}, time.Time{})) == 1
	})
	waitFor(t, 10*time.Second, "A's mint held back", func() bool { return mints.Load() == 1 })
	if st := a.svc.Stamp(); st.Ready {
		t.Fatalf("stamp %+v before the test lets it be ready", st)
	}
	// Nothing to propose with: A's matcher has B's offer, and would
	// propose to it, but does not (a proposal carries A's stamped offer).
	// A proposal leaves a mark: under way, or a backoff from B's offer
	// once B refused it.
	a.svc.matchOnce(context.Background())
	a.svc.mu.Lock()
	proposed := len(a.svc.proposing) + len(a.svc.backoff)
	a.svc.mu.Unlock()
	if proposed != 0 {
		t.Errorf("A proposes before its stamp is ready")
	}
	// Nor does a board sync from A bring A's offer (B would refuse it).
	b.svc.syncBoard(context.Background(), a.id(), nil)
	for _, o := range b.svc.Board(time.Time{}, time.Time{}) {
		t.Errorf("B has A's offer %s on its board before A's stamp is ready", o.BookingID)
	}
	if n := b.svc.RefusedOffers(); n != 0 {
		t.Errorf("B refused %d offer records from A", n)
	}
	if seen(OfferPublished, ba.ID) {
		t.Errorf("A announced booking %s before its stamp was ready", ba.ID)
	}
	if got := a.booking(ba.ID); got.State != StateSearching {
		t.Fatalf("A's booking is %s before its stamp is ready, want searching", got.State)
	}

	letMint()
	// A's offer goes out: announced and on B's board, or carried by A's
	// proposal, which B checks (stamp included) before it accepts. Under
	// load the matcher's next round can pair them before the
	// announcement is signed; the open offer is then stale and never
	// published, only its withdrawal.
	waitFor(t, 10*time.Second, "A's offer announced and on B's board, or A matched with B", func() bool {
		ga := a.booking(ba.ID)
		return (seen(OfferPublished, ba.ID) && (seen(OfferGossip, ba.ID) || seen(OfferSync, ba.ID))) ||
			(ga.State == StateMatched && ga.PartnerBooking == bb.ID)
	})
	waitFor(t, 30*time.Second, "A and B matched", func() bool {
		ga, gb := a.booking(ba.ID), b.booking(bb.ID)
		return ga.State == StateMatched && ga.Confirmed && ga.PartnerBooking == bb.ID &&
			gb.State == StateMatched && gb.Confirmed && gb.PartnerBooking == ba.ID
	})

	// A restart reads the stamp from the store.
	a.stop()
	a.hook = func(p string) {
		if p == "stamp-ready" {
			mints.Add(1)
		}
	}
	a.start()
	if st := a.svc.Stamp(); !st.Ready || st.Tried != 0 || mints.Load() != 1 {
		t.Errorf("after a restart: stamp %+v, %d mints in all, want it ready from the store", st, mints.Load())
	}
}

// TestMintStampCancels: a mint that would take hours (32 bits) ends
// when its context does, having counted its work.
func TestMintStampCancels(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var tried atomic.Uint64
	done := make(chan error, 1)
	id := newTestNode(t, nil).id()
	go func() {
		_, err := mintStampCtx(ctx, id, 32, &tried)
		done <- err
	}()
	waitFor(t, 10*time.Second, "the mint under way", func() bool { return tried.Load() > 0 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled mint: %v, want context.Canceled", err)
		}
	case <-time.After(deadline(10 * time.Second)):
		t.Fatal("the mint did not stop when its context ended")
	}
}
