package matchmaking

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// Pulls of a full board that has not changed cost a walk of the order
// the board keeps for the filter asked for, not a filter, a sort and
// their allocations per reply: measured in bytes allocated per reply of
// a 1 MiB budget (before: 0.66 MB each with the sort, 1.26 MB with the
// grouping that replaced it, the order's and the reply's slices; 16
// requesters pulling in a loop spent a quarter of a real victim's CPU in
// them, docs/benchmarks.md).
func TestBoardRepliesReuseTheirOrder(t *testing.T) {
	now := time.Now()
	k := shard.Scheduled(nextSlot(3*time.Hour), 50)
	b := newBoard()
	fillOpaque(b, k, maxBoard/20, 20, 200, now)
	want := wantAll
	first := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, k.Topic()))
	if len(first) != maxBoard {
		t.Fatalf("the first reply has %d records, want %d", len(first), maxBoard)
	}
	const pulls = 20
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range pulls {
		if got := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, k.Topic())); len(got) != len(first) {
			t.Fatalf("a repeated pull got %d records, the first %d", len(got), len(first))
		}
	}
	runtime.ReadMemStats(&m1)
	if per := (m1.TotalAlloc - m0.TotalAlloc) / pulls; per > 4<<10 {
		t.Fatalf("a repeated pull of an unchanged board allocated %d bytes, want next to none", per)
	}
}

// The kept order follows the board: a record stored after it was made is
// in the next reply, one that expired since is not, and a pull for the
// records taken lately gets only those.
func TestBoardRepliesFollowTheBoard(t *testing.T) {
	now := time.Now()
	k := shard.Scheduled(nextSlot(3*time.Hour), 50)
	b := newBoard()
	fillOpaque(b, k, 10, 2, 100, now.Add(-time.Minute))
	key := k.Topic()
	want := wantAll
	if got := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, key)); len(got) != 20 {
		t.Fatalf("got %d records, want 20", len(got))
	}
	late := bytes.Repeat([]byte{0xbb}, 100)
	b.admitEntry(&boardEntry{owner: "late", envelope: late, seq: 1, expires: now.Add(time.Hour).Unix(), shard: k, opaque: true}, "l", now, 0, "late")
	got := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, key))
	if len(got) != 21 || !slices.ContainsFunc(got, func(e []byte) bool { return bytes.Equal(e, late) }) {
		t.Fatalf("after a new record: %d records, the new one in them: %v", len(got), slices.ContainsFunc(got, func(e []byte) bool { return bytes.Equal(e, late) }))
	}
	if got := b.envelopesFor(now, now.Add(-time.Second), MaxBoardResponse, named(want, key)); len(got) != 1 || !bytes.Equal(got[0], late) {
		t.Fatalf("a pull of the records taken in the last second got %d records, want the new one only", len(got))
	}
	soon := bytes.Repeat([]byte{0xcc}, 100)
	b.admitEntry(&boardEntry{owner: "soon", envelope: soon, seq: 1, expires: now.Add(time.Second).Unix(), shard: k, opaque: true}, "s", now, 0, "soon")
	if got := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, key)); len(got) != 22 {
		t.Fatalf("got %d records, want 22", len(got))
	}
	later := now.Add(time.Second + peerSlack + time.Second)
	if got := b.envelopesFor(later, time.Time{}, MaxBoardResponse, named(want, key)); len(got) != 21 || slices.ContainsFunc(got, func(e []byte) bool { return bytes.Equal(e, soon) }) {
		t.Fatalf("after a record expired: %d records, want 21 without it", len(got))
	}
	// A budget cuts the kept order as it cut a fresh one: a prefix.
	if got := b.envelopesFor(now, time.Time{}, 5*(100+8), named(want, key)); len(got) != 5 {
		t.Fatalf("a budget of five records got %d", len(got))
	}
}

// writeBoardResponse writes what protodelim writes for the same response.
func TestWriteBoardResponseMatchesProtodelim(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 300) // a two-byte length
	for i, c := range []struct {
		envs, sealed [][][]byte
		gone, tags   []uint32
	}{
		{},
		{envs: [][][]byte{{[]byte("a"), {}, big}, nil, {[]byte("b")}}},
		{envs: [][][]byte{nil, {big}}, sealed: [][][]byte{{[]byte("s1")}, {big, []byte("s2")}}},
		{envs: [][][]byte{{[]byte("a")}}, gone: []uint32{300, 90, 1}, tags: []uint32{7, 1 << 31, 0}},
		{gone: []uint32{1}},
		{gone: []uint32{1}, tags: []uint32{1<<32 - 1}},
	} {
		var want, got bytes.Buffer
		resp := &pb.BoardResponse{Envelopes: slices.Concat(c.envs...), Sealed: slices.Concat(c.sealed...), WithdrawnTtlS: c.gone, WithdrawnTag: c.tags}
		wn, err := protodelim.MarshalTo(&want, resp)
		if err != nil {
			t.Fatal(err)
		}
		gn, err := writeBoardResponse(&got, c.envs, c.sealed, c.gone, c.tags)
		if err != nil {
			t.Fatal(err)
		}
		if gn != wn || !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("case %d: wrote %d bytes %x, protodelim %d bytes %x", i, gn, got.Bytes(), wn, want.Bytes())
		}
	}
}

// An open-only reply leaves the withdrawals out and lists when each
// expires, also those that a budget would not have had room for.
func TestOpenOnlyRepliesCountWithdrawals(t *testing.T) {
	now := time.Now()
	k := shard.Scheduled(nextSlot(3*time.Hour), 50)
	b := newBoard()
	for i := range 7 {
		owner := peer.ID(fmt.Sprintf("owner-%d", i))
		env := bytes.Repeat([]byte{byte(i)}, 100)
		b.admitEntry(&boardEntry{owner: owner, envelope: env, seq: 1, expires: now.Add(time.Hour).Unix(), shard: k, opaque: true, withdrawn: i >= 3},
			"b", now, 0, owner)
	}
	want := wantAll
	if got := b.envelopesFor(now, time.Time{}, MaxBoardResponse, named(want, k.Topic())); len(got) != 7 {
		t.Fatalf("a whole reply has %d records, want 7", len(got))
	}
	got, gone := b.openEnvelopesFor(now, time.Time{}, MaxBoardResponse, named(want, k.Topic()))
	if len(got) != 3 || len(gone) != 4 {
		t.Fatalf("an open-only reply has %d records and lists %d withdrawals, want 3 and 4", len(got), len(gone))
	}
	for _, e := range gone {
		if e.expires != now.Add(time.Hour).Unix() || e.tag == 0 {
			t.Fatalf("a withdrawal listed as expiring at %d with tag %d, want %d and a tag", e.expires, e.tag, now.Add(time.Hour).Unix())
		}
	}
	for _, env := range got {
		if env[0] >= 3 {
			t.Fatalf("an open-only reply served withdrawal %d", env[0])
		}
	}
	if got, gone := b.openEnvelopesFor(now, time.Time{}, 100+8, named(want, k.Topic())); len(got) != 1 || len(gone) != 4 {
		t.Fatalf("an open-only reply with room for one record has %d and lists %d withdrawals, want 1 and 4", len(got), len(gone))
	}
}

// Claims are kept until they expire, at most for the offer lifetime, and
// a reply with fewer live claims than the node holds changes nothing.
func TestGoneClaims(t *testing.T) {
	now := time.Now()
	var g goneClaims
	g.adopt(now, []uint32{5, 60, 1 << 30}, []uint32{1, 2, 3}, 90*time.Second)
	if got := len(g.live(now)); got != 3 {
		t.Fatalf("%d claims taken, want 3", got)
	}
	g.adopt(now, []uint32{100, 100}, nil, 90*time.Second) // fewer: kept as they were
	if got := len(g.live(now.Add(10 * time.Second))); got != 2 {
		t.Fatalf("%d claims live after 10 s, want 2", got)
	}
	if got := len(g.live(now.Add(91 * time.Second))); got != 0 {
		t.Fatalf("%d claims live past the offer lifetime, want 0", got)
	}
	many := make([]uint32, 2*maxGoneClaims)
	for i := range many {
		many[i] = 30
	}
	g.adopt(now, many, many[:1], 90*time.Second) // tags not one per claim: ignored
	if got := g.live(now); len(got) != maxGoneClaims || got[0].tag != 0 {
		t.Fatalf("%d claims taken from one reply (first tag %d), want at most %d, untagged", len(got), got[0].tag, maxGoneClaims)
	}
	// A reply lists the board's and the claimed ones, latest first, bounded.
	ttls, tags := listGone(now, []goneRec{{now.Unix() + 40, 9}, {now.Unix() - 1, 8}}, []claim{{now.Add(1500 * time.Millisecond), 7}})
	if !slices.Equal(ttls, []uint32{40, 2}) || !slices.Equal(tags, []uint32{9, 7}) {
		t.Fatalf("listed %v tagged %v, want [40 2] tagged [9 7]", ttls, tags)
	}
}

// A claim that is a withdrawal the board holds counts once: by its tag,
// or, untagged (an older responder), by an expiry within sameGone, each
// withdrawal standing for one claim only.
func TestGoneClaimsCountedOnce(t *testing.T) {
	base := time.Now().Truncate(time.Second)
	onBoard := []goneRec{{base.Unix() + 29, 1}, {base.Unix() + 45, 2}}
	untagged := []claim{{expires: base.Add(30 * time.Second)}, {expires: base.Add(31 * time.Second)}, {expires: base.Add(60 * time.Second)}}
	if got := newClaims(untagged, onBoard); len(got) != 2 || !got[0].expires.Equal(untagged[1].expires) || !got[1].expires.Equal(untagged[2].expires) {
		t.Fatalf("untagged claims not on the board: %v, want the 31 s and 60 s ones", got)
	}
	if ttls, _ := listGone(base, onBoard, untagged); !slices.Equal(ttls, []uint32{60, 45, 31, 29}) {
		t.Fatalf("listed %v, want [60 45 31 29]", ttls)
	}
	// Tagged, a claim is a withdrawal on the board only if its tag is: a
	// new withdrawal that expires a second after another one claimed is
	// not taken for it. With expiries alone each member of a busy topic
	// took its own new withdrawals for the newest claims, and the count
	// stopped growing.
	tagged := []claim{{base.Add(29 * time.Second), 1}, {base.Add(30 * time.Second), 3}, {base.Add(44 * time.Second), 4}}
	got := newClaims(tagged, onBoard)
	if len(got) != 2 || got[0].tag != 3 || got[1].tag != 4 {
		t.Fatalf("tagged claims not on the board: %v, want tags 3 and 4", got)
	}
	if ttls, tags := listGone(base, onBoard, tagged); !slices.Equal(ttls, []uint32{45, 44, 30, 29}) || !slices.Equal(tags, []uint32{2, 4, 3, 1}) {
		t.Fatalf("listed %v tagged %v, want [45 44 30 29] tagged [2 4 3 1]", ttls, tags)
	}
	// Both kinds at once: an untagged claim is matched only against the
	// withdrawals no tag accounted for.
	mixed := []claim{{base.Add(29 * time.Second), 1}, {expires: base.Add(29 * time.Second)}}
	if got := newClaims(mixed, onBoard[:1]); len(got) != 1 || got[0].tag != 0 {
		t.Fatalf("mixed claims not on the board: %v, want the untagged one", got)
	}
	if goneTag("a", "b") == 0 || goneTag("a", "b") == goneTag("ab", "") {
		t.Fatal("goneTag is 0, or does not keep owner and booking apart")
	}
}

// named is want under the name the board keeps its served order by.
func named(want boardWant, name string) boardWant {
	want.name = name
	return want
}
