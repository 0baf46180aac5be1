package matchmaking

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// A private booking's offer is for its invited peer only. A third node on
// the same shard receives the owner's gossip (it is on the shard's
// topics, and records every message as it arrives, before validation) and
// pulls the owner's board, yet learns neither whom the booking is with,
// nor the owner's name, the booking or its slot; the invited peer matches
// it. (Before: the offer travelled in the clear to every node on the
// shard, `with` and all.)
func TestThirdPartyCannotReadPrivateOffer(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	if err := a.svc.SetName("Ada Privately"); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.SetName("Bo Privately"); err != nil {
		t.Fatal(err)
	}
	c.recv.keepRaw()
	c.view() // on every shard of the week: it gets what travels there
	slot := nextSlot(7 * time.Hour)
	fromA := func() int {
		n := 0
		for _, m := range c.recv.received() {
			if m.from == a.id() {
				n++
			}
		}
		return n
	}
	ba := a.book(t, BookRequest{At: slot, DurationMin: 50, Activity: ActivityDesk, With: b.id().String()})
	waitFor(t, 10*time.Second, "the third node to receive the owner's gossip", func() bool { return fromA() > 0 })
	c.svc.syncBoard(context.Background(), a.id(), nil)
	if e := c.svc.board.get(a.id(), ba.ID); e != nil {
		t.Errorf("the third node's board holds the private offer: with %x, name %q", e.offer.GetWith(), e.offer.GetName())
	}
	bb := b.book(t, BookRequest{At: slot, DurationMin: 50, Activity: ActivityDesk, With: a.id().String()})
	waitFor(t, 15*time.Second, "the private pair to match", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if got := a.booking(ba.ID); got.Partner != b.id().String() || got.PartnerName != "Bo Privately" {
		t.Fatalf("a matched %s (%q), want b", got.Partner, got.PartnerName)
	}
	for _, o := range c.svc.Board(time.Time{}, time.Time{}) {
		if o.BookingID == ba.ID || o.BookingID == bb.ID {
			t.Fatalf("the third node's board shows a private offer: %+v", o)
		}
	}
	slotBytes := protowire.AppendVarint([]byte{0x20}, uint64(slot.Unix())) // Offer.start_unix as encoded
	secrets := map[string][]byte{
		"b's peer ID (a's with)": []byte(b.id()), "a's peer ID (b's with)": []byte(a.id()),
		"a's name": []byte("Ada Privately"), "b's name": []byte("Bo Privately"),
		"a's booking": []byte(ba.ID), "b's booking": []byte(bb.ID), "the slot": slotBytes,
	}
	seen := 0
	for _, m := range c.recv.received() {
		if m.from != a.id() && m.from != b.id() {
			continue
		}
		seen++
		for what, secret := range secrets {
			if bytes.Contains(m.data, secret) && !(what == "a's peer ID (b's with)" && m.from == a.id()) && !(what == "b's peer ID (a's with)" && m.from == b.id()) {
				t.Errorf("a message of %s on %s shows %s in the clear", m.from, m.topic, what)
			}
		}
		if o, ok := peekRecord(m.data); ok {
			t.Errorf("a message on %s reads as an offer: with %x, name %q, start %d", m.topic, o.GetWith(), o.GetName(), o.GetStartUnix())
		}
	}
	if seen == 0 {
		t.Fatal("the third node received nothing from the pair")
	}
	t.Logf("the third node received %d messages of the pair", seen)
}
