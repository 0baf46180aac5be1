package matchmaking

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func startNodes(t *testing.T, n int, tune func(*Config)) []*testNode {
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = newTestNode(t, tune)
	}
	connectSparse(t, nodes)
	return nodes
}

// Storm: everybody books the same slot at the same moment.
func TestStormSameSlot(t *testing.T) {
	for _, count := range []int{12, 13} {
		t.Run(map[int]string{12: "even", 13: "odd"}[count], func(t *testing.T) {
			nodes := startNodes(t, count, nil)
			slot := nextSlot(time.Hour)
			for _, n := range nodes {
				go n.svc.Book(context.Background(), BookRequest{At: slot, DurationMin: 50})
			}
			want := count / 2
			waitFor(t, 30*time.Second, "all pairs matched", func() bool {
				return stateCounts(nodes)[StateMatched] == 2*want && settled(nodes)
			})
			if got := checkInvariants(t, nodes); got != want {
				t.Fatalf("got %d mutual pairs, want %d: %s", got, want, describe(nodes))
			}
			if c := stateCounts(nodes); c[StateSearching] != count%2 {
				t.Fatalf("searching = %d, want %d", c[StateSearching], count%2)
			}
		})
	}
}

// Mixed preferences: only compatible bookings pair up.
func TestStormMixedPreferences(t *testing.T) {
	slot := nextSlot(2 * time.Hour)
	reqs := []BookRequest{
		{At: slot, DurationMin: 50, Activity: ActivityDesk, Quiet: true},
		{At: slot, DurationMin: 50, Activity: ActivityDesk, Quiet: true},
		{At: slot, DurationMin: 50, Activity: ActivityAnything, Quiet: true},
		{At: slot, DurationMin: 50, Activity: ActivityDesk, Quiet: true},
		{At: slot, DurationMin: 25, Activity: ActivityMoving},
		{At: slot, DurationMin: 25, Activity: ActivityAnything},
		{At: slot, DurationMin: 25, Activity: ActivityMoving},
		{At: slot, DurationMin: 25, Activity: ActivityMoving},
		{At: slot, DurationMin: 75, Activity: ActivityDesk},
		{At: slot, DurationMin: 75, Activity: ActivityMoving}, // incompatible with the desk one
		{At: slot.Add(Grid), DurationMin: 75},                 // alone at its time
		{At: slot, DurationMin: 50, Activity: ActivityMoving}, // not quiet: alone
	}
	nodes := startNodes(t, len(reqs), nil)
	for i, n := range nodes {
		go n.svc.Book(context.Background(), reqs[i])
	}
	waitFor(t, 30*time.Second, "compatible pairs matched", func() bool {
		return stateCounts(nodes)[StateMatched] == 8 && settled(nodes)
	})
	if got := checkInvariants(t, nodes); got != 4 {
		t.Fatalf("pairs = %d, want 4: %s", got, describe(nodes))
	}
	for _, n := range nodes {
		for _, b := range n.svc.Bookings() {
			if b.State != StateMatched {
				continue
			}
			var p *testNode
			for _, o := range nodes {
				if o.id().String() == b.Partner {
					p = o
				}
			}
			pb := p.booking(b.PartnerBooking)
			if pb.DurationMin != b.DurationMin || pb.Quiet != b.Quiet || !compatibleActivity(pb.Activity, b.Activity) {
				t.Errorf("incompatible pair: %+v and %+v", b, pb)
			}
		}
	}
}

// Late joiner: offers published before a node joined reach it by board sync.
func TestLateJoinerSeesOffersAndMatches(t *testing.T) {
	slow := func(c *Config) { c.AnnounceInterval = 10 * time.Minute } // no re-announce during the test
	a := newTestNode(t, slow)
	b := newTestNode(t, slow)
	b.view()
	connect(t, a, b)
	slot := nextSlot(3 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25, Activity: ActivityDesk})
	waitFor(t, 10*time.Second, "b sees a's offer", func() bool { return len(b.svc.Board(time.Time{}, time.Time{})) == 1 })

	late := newTestNode(t, slow)
	late.view()
	connect(t, late, b) // only b: a's offer must come over b's board
	waitFor(t, 10*time.Second, "late joiner sees a's offer", func() bool {
		for _, o := range late.svc.Board(time.Time{}, time.Time{}) {
			if o.BookingID == ba.ID {
				return true
			}
		}
		return false
	})
	bl := late.book(t, BookRequest{At: slot, DurationMin: 25})
	defer func() {
		if t.Failed() {
			t.Log(describe([]*testNode{a, b, late}), "a<late:", a.id() < late.id(), "a board:", len(a.svc.board.open(time.Now())), "late board:", len(late.svc.board.open(time.Now())), "b board:", len(b.svc.board.open(time.Now())), "b topics:", b.svc.OfferTopics())
		}
	}()
	waitFor(t, 15*time.Second, "late joiner matched", func() bool {
		return late.booking(bl.ID).State == StateMatched && a.booking(ba.ID).State == StateMatched && settled([]*testNode{a, late})
	})
	if got := checkInvariants(t, []*testNode{a, b, late}); got != 1 {
		t.Fatalf("pairs = %d", got)
	}
}

// Cancel: A cancels, B learns at once and is rematched with C who waited.
func TestCancelRematchesPartner(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	slot := nextSlot(4 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 50})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 50})
	waitFor(t, 10*time.Second, "a and b matched", func() bool {
		return a.booking(ba.ID).State == StateMatched && b.booking(bb.ID).Confirmed
	})
	bc := c.book(t, BookRequest{At: slot, DurationMin: 50})
	if _, err := a.svc.Cancel(context.Background(), ba.ID, "dentist"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b learns of the cancel", func() bool {
		return strings.Contains(b.booking(bb.ID).Note, "dentist") || b.booking(bb.ID).Partner == c.id().String()
	})
	waitFor(t, 15*time.Second, "b rematched with c", func() bool {
		return b.booking(bb.ID).Partner == c.id().String() && c.booking(bc.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if a.booking(ba.ID).State != StateCancelled {
		t.Fatalf("a's booking %s", a.booking(ba.ID).State)
	}
	checkInvariants(t, nodes)
}

// Blocked peers are never matched and their offers are hidden.
func TestBlockedPeerNeverMatched(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	if _, err := a.svc.SetPerson(b.id().String(), "block", 0); err != nil {
		t.Fatal(err)
	}
	slot := nextSlot(5 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25})
	bb := b.book(t, BookRequest{At: slot, DurationMin: 25})
	// Both offers have reached both sides; give the matcher rounds to
	// (wrongly) pair them.
	waitFor(t, 10*time.Second, "b sees a's offer", func() bool { return len(b.svc.Board(time.Time{}, time.Time{})) == 1 })
	waitFor(t, 10*time.Second, "a has b's offer on its board", func() bool { return len(a.svc.board.open(time.Now())) == 1 })
	if got := a.svc.Board(time.Time{}, time.Time{}); len(got) != 0 {
		t.Fatalf("blocked peer's offer shown: %+v", got)
	}
	for i := 0; i < 5; i++ {
		a.svc.matchOnce(context.Background())
		b.svc.matchOnce(context.Background())
	}
	if a.booking(ba.ID).State != StateSearching || b.booking(bb.ID).State != StateSearching {
		t.Fatalf("blocked pair matched: %s", describe(nodes))
	}
	bc := c.book(t, BookRequest{At: slot, DurationMin: 25})
	// Settled too: c may have accepted both a's and b's proposals, and
	// the one whose Confirm came second holds its side of the match until
	// c answers it "no such match".
	waitFor(t, 15*time.Second, "c matched", func() bool { return c.booking(bc.ID).Confirmed && settled(nodes) })
	checkInvariants(t, nodes)
	if p := a.booking(ba.ID).Partner; p == b.id().String() {
		t.Fatal("a matched with blocked b")
	}
}

// "Focus now" requests pair with each other, starting at the match.
func TestFocusNowMatches(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	before := time.Now().Add(-time.Second)
	b0 := nodes[0].book(t, BookRequest{Kind: KindNow, DurationMin: 25, Goal: "inbox zero"})
	b1 := nodes[1].book(t, BookRequest{Kind: KindNow, DurationMin: 25})
	waitFor(t, 10*time.Second, "now pair", func() bool {
		return nodes[0].booking(b0.ID).Confirmed && nodes[1].booking(b1.ID).Confirmed
	})
	checkInvariants(t, nodes)
	if s := nodes[0].booking(b0.ID).Start; s.Before(before.Truncate(time.Second)) || s.After(time.Now()) {
		t.Fatalf("now session start %v", s)
	}
}

// Booking rules give clear errors and change nothing.
func TestBookRejectsBadRequests(t *testing.T) {
	n := newTestNode(t, nil)
	slot := nextSlot(time.Hour)
	cases := map[string]BookRequest{
		"misaligned":   {At: slot.Add(7 * time.Minute), DurationMin: 25},
		"past":         {At: slot.Add(-24 * time.Hour), DurationMin: 25},
		"too far":      {At: slot.Add(15 * 24 * time.Hour), DurationMin: 25},
		"duration":     {At: slot, DurationMin: 30},
		"activity":     {At: slot, DurationMin: 25, Activity: "dancing"},
		"kind":         {At: slot, DurationMin: 25, Kind: "later"},
		"with bad id":  {At: slot, DurationMin: 25, With: "nobody"},
		"goal too big": {At: slot, DurationMin: 25, Goal: strings.Repeat("x", MaxGoalLen+1)},
		"goal escape":  {At: slot, DurationMin: 25, Goal: "clear\x1b[2J"},
		"goal newline": {At: slot, DurationMin: 25, Goal: "two\nlines"},
		"goal bidi":    {At: slot, DurationMin: 25, Goal: "\u202eevil"},
		"no start":     {DurationMin: 25},
	}
	for name, req := range cases {
		_, err := n.svc.Book(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("%s: err = %v, want invalid request", name, err)
		}
	}
	n.book(t, BookRequest{At: slot, DurationMin: 50})
	if _, err := n.svc.Book(context.Background(), BookRequest{At: slot.Add(Grid), DurationMin: 25}); err == nil {
		t.Error("overlapping booking accepted")
	}
	if got := len(n.svc.Bookings()); got != 1 {
		t.Fatalf("bookings = %d, want 1", got)
	}
	b := n.svc.Bookings()[0]
	for _, reason := range []string{"bye\a", "\x1b]0;title\a", "a\u2066b", strings.Repeat("r", MaxGoalLen+1)} {
		if _, err := n.svc.Cancel(context.Background(), b.ID, reason); !errors.Is(err, ErrInvalid) {
			t.Errorf("cancel with reason %q: err = %v, want invalid", reason, err)
		}
	}
	if got := n.svc.Bookings()[0]; got.State != StateSearching {
		t.Errorf("a refused cancel changed the booking: %s", got.State)
	}
	for _, name := range []string{"\x1b[31mred", "Ada\u202e", "A\nB", strings.Repeat("n", MaxNameLen+1)} {
		if err := n.svc.SetName(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetName(%q): err = %v, want invalid", name, err)
		}
	}
	if err := n.svc.SetName("  Zoë 🚀  "); err != nil || n.svc.Name() != "Zoë 🚀" {
		t.Errorf("SetName(Zoë): %v, name %q", err, n.svc.Name())
	}
}
