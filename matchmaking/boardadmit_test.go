package matchmaking

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// An owner's quota counts its tombstones (matched or cancelled bookings,
// kept until they expire so an older copy cannot come back), but a
// tombstone never keeps out the owner's next offer: at its quota, a new
// record of the owner takes the place of its own tombstone that expires
// first. Open records still keep to the quota (before: a user who matched
// 32 sessions within the hour a withdrawal is kept could announce no
// 33rd booking to anyone, and the plan waited forever).
func TestOwnerQuotaMakesRoomFromItsTombstones(t *testing.T) {
	now := time.Now()
	owner := peer.ID("ada")
	fill := func(tombstones int) *board {
		b := newBoard()
		for i := range maxPerOwner {
			o := validOffer(owner, now)
			o.BookingId = fmt.Sprintf("b%d", i)
			o.Withdrawn = i < tombstones
			// The tombstone b1 expires first.
			o.ExpiresUnix = now.Add(time.Duration(30+(i+maxPerOwner-1)%maxPerOwner) * time.Minute).Unix()
			if !b.admit(o, owner, nil, now, 0, owner) {
				t.Fatalf("record %d of %d refused", i, maxPerOwner)
			}
		}
		return b
	}
	next := validOffer(owner, now)
	next.BookingId = "next"

	b := fill(3)
	if !b.wouldAdmit(owner, "next", 0, owner, now) || !b.admit(next, owner, nil, now, 0, owner) {
		t.Fatal("an owner at its quota with tombstones: its new offer was refused")
	}
	if n := len(b.byOwner[owner]); n != maxPerOwner {
		t.Fatalf("the owner has %d records, want its quota %d", n, maxPerOwner)
	}
	for _, id := range []string{"b0", "b2", "next"} {
		if b.get(owner, id) == nil {
			t.Errorf("record %s is gone", id)
		}
	}
	if b.get(owner, "b1") != nil {
		t.Error("the tombstone that expires first is still there")
	}

	b = fill(0)
	if b.wouldAdmit(owner, "next", 0, owner, now) || b.admit(next, owner, nil, now, 0, owner) {
		t.Fatalf("an owner with %d open records got one more", maxPerOwner)
	}
}

// Book keeps a user's searching bookings to what peers' boards keep of
// one owner, with a clear error, rather than make an offer every peer
// would drop; cancelling one makes room again.
func TestBookKeepsToTheOwnerQuota(t *testing.T) {
	n := newTestNode(t, nil)
	var first Booking
	for i := range maxPerOwner {
		b := n.book(t, BookRequest{At: nextSlot(time.Duration(2+i) * time.Hour), DurationMin: 25})
		if i == 0 {
			first = b
		}
	}
	_, err := n.svc.Book(context.Background(), BookRequest{At: nextSlot(40 * time.Hour), DurationMin: 25})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "looking for a partner") {
		t.Fatalf("booking one more than %d searching sessions: %v, want a conflict that says why", maxPerOwner, err)
	}
	if _, err := n.svc.Cancel(context.Background(), first.ID, "test"); err != nil {
		t.Fatal(err)
	}
	n.book(t, BookRequest{At: nextSlot(40 * time.Hour), DurationMin: 25})
}

// A re-announcement (a newer record that differs only in seq and expiry)
// is told apart from a change: only a change wakes the matcher.
func TestBoardTellsRefreshFromChange(t *testing.T) {
	b := newBoard()
	_, owner := mustKey(t)
	now := time.Now()
	offer := func(seq uint64, mod func(*pb.Offer)) *pb.Offer {
		o := &pb.Offer{Owner: []byte(owner), BookingId: "b", StartUnix: nextSlot(time.Hour).Unix(), DurationMin: 25,
			Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "ann",
			Seq: seq, ExpiresUnix: now.Add(time.Duration(seq) * time.Minute).Unix()}
		if mod != nil {
			mod(o)
		}
		return o
	}
	if _, ok := b.refreshOf(offer(1, nil), owner, ""); ok {
		t.Fatal("a first record counted as a refresh")
	}
	b.admit(offer(1, nil), owner, nil, now, 0, owner)
	if _, ok := b.refreshOf(offer(2, nil), owner, ""); !ok {
		t.Fatal("a newer record with the same content not counted as a refresh")
	}
	if _, ok := b.refreshOf(offer(1, nil), owner, ""); ok {
		t.Fatal("the stored record itself counted as a refresh")
	}
	for what, mod := range map[string]func(*pb.Offer){
		"activity":  func(o *pb.Offer) { o.Activity = pb.Activity_ACTIVITY_DESK },
		"name":      func(o *pb.Offer) { o.Name = "bob" },
		"withdrawn": func(o *pb.Offer) { o.Withdrawn = true },
		"start":     func(o *pb.Offer) { o.StartUnix += int64(Grid / time.Second) },
	} {
		if _, ok := b.refreshOf(offer(2, mod), owner, ""); ok {
			t.Errorf("a record with another %s counted as a refresh", what)
		}
	}
}

// A stranger that re-signs an unchanged record every few seconds gets it
// ignored, unchecked and not relayed, from the second time in a row on,
// until an honest owner's interval has passed; a changed record is taken
// at once, and so is the refresh once that much time went by.
func TestNeedlessRefreshIgnored(t *testing.T) {
	var skew atomic.Int64 // the victim's clock runs ahead by this
	v := newTestNode(t, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	a := newAttacker(t)
	a.connect(v)
	key, id := mustKey(t)
	stamp := mintStamp(id, testStampBits)
	slot := nextSlot(3 * time.Hour)
	seq := uint64(0)
	offer := func(name string) []byte {
		seq++
		now := time.Now().Add(time.Duration(skew.Load()))
		o := &pb.Offer{Version: protoVersion, Owner: []byte(id), BookingId: "b", StartUnix: slot.Unix(), DurationMin: 25,
			Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: name,
			ExpiresUnix: now.Add(time.Hour).Unix(), Seq: seq, Stamp: stamp}
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	onBoard := func(want uint64) func() bool {
		return func() bool { e := v.svc.board.get(id, "b"); return e != nil && e.seq == want }
	}
	v.view()
	a.publishAs(key, offer("ann"))
	waitFor(t, 10*time.Second, "the record on the board", onBoard(1))

	// An honest node may re-announce soon once (its booking settling in
	// a lane): taken.
	a.publishAs(key, offer("ann")) // seq 2, nothing else new
	waitFor(t, 10*time.Second, "the first soon refresh on the board", onBoard(2))
	a.publishAs(key, offer("ann")) // seq 3: the second in a row
	waitFor(t, 10*time.Second, "the refresh ignored", func() bool { return v.svc.NeedlessRefreshes() == 1 })
	if e := v.svc.board.get(id, "b"); e == nil || e.seq != 2 {
		t.Fatalf("after an ignored refresh the board holds %+v, want seq 2", e)
	}

	a.publishAs(key, offer("anne")) // seq 4: a new name is news
	waitFor(t, 10*time.Second, "the changed record on the board", onBoard(4))
	a.publishAs(key, offer("anne")) // seq 5: soon, but after a change
	waitFor(t, 10*time.Second, "the soon refresh after a change on the board", onBoard(5))

	// A sixth of the record's hour later, the same refresh is taken.
	skew.Store(int64(11 * time.Minute))
	a.publishAs(key, offer("anne"))
	waitFor(t, 10*time.Second, "the timely refresh on the board", onBoard(6))
	if n := v.svc.NeedlessRefreshes(); n != 1 {
		t.Fatalf("%d refreshes ignored, want 1", n)
	}
}
