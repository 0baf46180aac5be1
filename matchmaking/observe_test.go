package matchmaking

import (
	"context"
	"sync"
	"testing"
	"time"
)

// offerLog records a node's OfferEvents.
type offerLog struct {
	mu     sync.Mutex
	events []OfferEvent
}

func (l *offerLog) add(e OfferEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *offerLog) find(pred func(OfferEvent) bool) (OfferEvent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if pred(e) {
			return e, true
		}
	}
	return OfferEvent{}, false
}

func (l *offerLog) wait(t *testing.T, what string, pred func(OfferEvent) bool) OfferEvent {
	t.Helper()
	var e OfferEvent
	waitFor(t, 10*time.Second, what, func() bool {
		var ok bool
		e, ok = l.find(pred)
		return ok
	})
	return e
}

// TestOnOffer: the observer sees the owner publish a record, and the same
// record (owner, booking, seq) enter other boards by gossip and by sync.
func TestOnOffer(t *testing.T) {
	logs := []*offerLog{{}, {}, {}}
	nodes := make([]*testNode, 3)
	for i := range nodes {
		l := logs[i]
		nodes[i] = newTestNode(t, func(c *Config) {
			c.OnOffer = l.add
			// No re-announcement within the test: on a loaded machine
			// one could reach c by gossip before its board sync does.
			c.AnnounceInterval = 10 * time.Minute
		})
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		n.view()
	}
	connect(t, a, b)
	at := nextSlot(3 * time.Hour)
	topic := ShardOf(Booking{Kind: KindScheduled, Start: at, DurationMin: 25}).Topic()
	waitFor(t, 10*time.Second, "a and b see each other on the topic", func() bool {
		return len(a.ps.ListPeers(topic)) == 1 && len(b.ps.ListPeers(topic)) == 1
	})
	bk := a.book(t, BookRequest{At: at, DurationMin: 25})
	pub := logs[0].wait(t, "a publishes", func(e OfferEvent) bool { return e.Source == OfferPublished && e.BookingID == bk.ID })
	if pub.Owner != a.id() || pub.Withdrawn || pub.Seq == 0 {
		t.Fatalf("publish event %+v", pub)
	}
	// b may first get the offer in a board sync from a, which serves its
	// own open offers (a fresh record) while the booking still settles on
	// its class's topic (lanes.go); the gossip record comes after it.
	got := logs[1].wait(t, "b gets it by gossip", func(e OfferEvent) bool { return e.BookingID == bk.ID && e.Source == OfferGossip })
	// a may announce the offer twice at once (the booking, and its first
	// peer on the shard), and the two observer calls can come in either
	// order: b's record must be one of those a published.
	published, _ := logs[0].find(func(e OfferEvent) bool {
		return e.Source == OfferPublished && e.BookingID == bk.ID && e.Seq == got.Seq
	})
	if got != (OfferEvent{Owner: a.id(), BookingID: bk.ID, Seq: published.Seq, Source: OfferGossip}) || published.Seq == 0 {
		t.Fatalf("b saw %+v, want a record a published (first seen: %+v) by gossip", got, pub)
	}

	// c joins late, next to b: the offer reaches it by a board sync. (Next
	// to a, it could come pushed by its owner first: pushOwnTo.)
	connect(t, c, b)
	got = logs[2].wait(t, "c gets it by sync", func(e OfferEvent) bool { return e.BookingID == bk.ID })
	if got.Source != OfferSync || got.Owner != a.id() || got.Seq < pub.Seq || got.Withdrawn {
		t.Fatalf("c saw %+v", got)
	}

	// A withdrawal is a newer record, published and received the same way.
	if _, err := a.svc.Cancel(context.Background(), bk.ID, ""); err != nil {
		t.Fatal(err)
	}
	wd := logs[0].wait(t, "a publishes the withdrawal", func(e OfferEvent) bool {
		return e.Source == OfferPublished && e.BookingID == bk.ID && e.Withdrawn
	})
	if wd.Seq <= pub.Seq {
		t.Fatalf("withdrawal seq %d not above %d", wd.Seq, pub.Seq)
	}
	logs[1].wait(t, "b gets the withdrawal", func(e OfferEvent) bool { return e.Withdrawn && e.Seq == wd.Seq && e.Source == OfferGossip })
}

// TestReannounceSpread: an open offer is re-announced once its last
// announcement is 80-100% of the interval old (never sooner), so offers
// made together drift apart instead of re-announcing in one burst.
func TestReannounceSpread(t *testing.T) {
	const interval = 400 * time.Millisecond
	log := &offerLog{}
	n := newTestNode(t, func(c *Config) { c.OnOffer = log.add; c.AnnounceInterval = interval })
	bk := n.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 50})
	published := func() []uint64 {
		log.mu.Lock()
		defer log.mu.Unlock()
		var seqs []uint64
		for _, e := range log.events {
			if e.Source == OfferPublished && e.BookingID == bk.ID {
				seqs = append(seqs, e.Seq)
			}
		}
		return seqs
	}
	waitFor(t, 10*time.Second, "four re-announcements", func() bool { return len(published()) >= 5 })
	seqs := published()
	// Seq is the announcement time in microseconds.
	for i := 1; i < len(seqs); i++ {
		gap := time.Duration(seqs[i]-seqs[i-1]) * time.Microsecond
		if gap < interval*4/5-10*time.Millisecond {
			t.Fatalf("re-announced after %v, before 80%% of the %v interval", gap, interval)
		}
	}
}
