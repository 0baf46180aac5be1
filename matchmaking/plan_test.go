package matchmaking

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// TestPlanPartner: every member of a slot class, computing the plan from
// its own point of view over the same offers, finds the same pairing; the
// pairing is mutual and as large as any (all but one when the class is
// odd, unless only "desk" and "moving" requests remain, one of each).
func TestPlanPartner(t *testing.T) {
	ids := make([]peer.ID, 9)
	for i := range ids {
		_, ids[i] = mustKey(t)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	acts := []Activity{ActivityDesk, ActivityMoving, ActivityAnything}
	start := nextSlot(time.Hour)
	rng := rand.New(rand.NewPCG(1, 1))
	for it := 0; it < 300; it++ {
		n := 1 + rng.IntN(len(ids))
		members := make([]Activity, n)
		for i := range members {
			members[i] = acts[rng.IntN(3)]
		}
		entry := func(i int) *boardEntry {
			o := &pb.Offer{Owner: []byte(ids[i]), BookingId: fmt.Sprintf("b%d", i), StartUnix: start.Unix(),
				DurationMin: 50, Kind: pb.Kind_KIND_SCHEDULED, Activity: activityToPB(members[i]), Seq: 1}
			return &boardEntry{offer: o, owner: ids[i], seq: 1}
		}
		partner := map[int]int{}
		for me := range n {
			var class []*boardEntry
			for j := range n {
				if j != me {
					class = append(class, entry(j))
				}
			}
			b := &Booking{ID: fmt.Sprintf("b%d", me), Kind: KindScheduled, Start: start, DurationMin: 50, Activity: members[me]}
			if p := planPartner(ids[me], b, class); p != nil {
				var j int
				fmt.Sscanf(p.offer.GetBookingId(), "b%d", &j)
				if !compatibleActivity(members[me], members[j]) {
					t.Fatalf("%v: %d (%s) planned with %d (%s)", members, me, members[me], j, members[j])
				}
				partner[me] = j
			}
		}
		for a, b := range partner {
			if partner[b] != a {
				t.Fatalf("%v: %d plans %d, who plans %v", members, a, b, partner[b])
			}
		}
		d, m, any := 0, 0, 0
		for _, a := range members {
			switch a {
			case ActivityDesk:
				d++
			case ActivityMoving:
				m++
			default:
				any++
			}
		}
		want := n / 2
		if any == 0 && d%2 == 1 && m%2 == 1 {
			want--
		}
		if got := len(partner) / 2; got != want {
			t.Fatalf("%v: plan pairs %d, the most possible is %d", members, got, want)
		}
	}
}

// BenchmarkPlanPartner is the class plan over a class of 1000 offers (the
// ground-ID attack's size): a node computes it for each searching booking
// every time a record of the class lands on its board.
func BenchmarkPlanPartner(b *testing.B) {
	start := nextSlot(time.Hour)
	class := make([]*boardEntry, 1000)
	for i := range class {
		_, id := mustKey(b)
		o := &pb.Offer{Owner: []byte(id), BookingId: fmt.Sprintf("b%d", i), StartUnix: start.Unix(),
			DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Seq: 1}
		class[i] = &boardEntry{offer: o, owner: id, seq: 1}
	}
	_, self := mustKey(b)
	bk := &Booking{ID: "mine", Kind: KindScheduled, Start: start, DurationMin: 25, Activity: ActivityAnything}
	for b.Loop() {
		planPartner(self, bk, class)
	}
}

// BenchmarkCandidatesCrowdedClass is one plan of a searching booking whose
// slot class holds 1000 offers of owners the node is not connected to
// (the ground-ID attack's Sybils, whose dials fail): what the matcher
// spends on every wake while the booking searches.
//
//	go test -run '^$' -bench 'CandidatesCrowdedClass' -benchmem -count 3 ./matchmaking
func BenchmarkCandidatesCrowdedClass(b *testing.B) {
	n := newTestNode(b, nil)
	start := nextSlot(3 * time.Hour)
	bk := n.book(b, BookRequest{At: start, DurationMin: 25})
	now := time.Now()
	for i := range 1000 {
		_, id := mustKey(b)
		o := &pb.Offer{Version: protoVersion, Owner: []byte(id), BookingId: fmt.Sprintf("g%d", i), StartUnix: start.Unix(),
			DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Seq: 1, ExpiresUnix: now.Add(time.Hour).Unix()}
		if !n.svc.board.admit(o, id, make([]byte, 300), now, 0, id) {
			b.Fatal("the board refused a class offer")
		}
	}
	for b.Loop() {
		n.svc.candidates(&bk, time.Now())
	}
}
