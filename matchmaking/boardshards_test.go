package matchmaking

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// fillShards puts n records on b, spread over the slot classes of the
// next days (three durations, quiet or not), some withdrawn, some sealed
// records of day shards, and a few focus-now offers.
func fillShards(b *board, n int, now time.Time, rng *rand.Rand) {
	for i := range n {
		owner := peer.ID(fmt.Sprintf("owner-%d", rng.IntN(n/4+1)))
		start := now.Truncate(Grid).Add(time.Duration(1+rng.IntN(4*24*3)) * Grid)
		dur := Durations[rng.IntN(len(Durations))]
		booking := fmt.Sprintf("b%d", i)
		switch rng.IntN(10) {
		case 0: // a sealed record of the day shard
			b.admitEntry(&boardEntry{owner: owner, envelope: []byte(booking), seq: 1, expires: now.Add(time.Hour).Unix(),
				shard: shard.Scheduled(start, dur), opaque: true}, booking, now, 0, owner)
			continue
		case 1:
			o := &pb.Offer{Owner: []byte(owner), BookingId: booking, Kind: pb.Kind_KIND_NOW, DurationMin: uint32(dur),
				StartUnix: now.Unix(), Seq: 1, ExpiresUnix: now.Add(time.Hour).Unix()}
			b.admit(o, owner, []byte(booking), now, 0, owner)
			continue
		}
		o := &pb.Offer{Owner: []byte(owner), BookingId: booking, Kind: pb.Kind_KIND_SCHEDULED, DurationMin: uint32(dur),
			StartUnix: start.Unix(), Quiet: rng.IntN(4) == 0, Withdrawn: rng.IntN(3) == 0, Seq: 1,
			ExpiresUnix: now.Add(time.Hour).Unix()}
		b.admit(o, owner, []byte(booking), now, 0, owner)
	}
}

// What a board serves for some topics, and how crowded it says a topic is,
// come from its shard index; they are exactly what a walk of every record
// finds (the walk the index replaced), for day shards, slot classes,
// lanes, the now shard, version 1's topic and overlapping lists of them.
func TestShardIndexFindsWhatAWalkFinds(t *testing.T) {
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	b := newBoard()
	fillShards(b, 3000, now, rng)
	all := b.all()
	var keys []shard.Key
	for _, e := range all[:40] {
		keys = append(keys, e.shard, e.shard.DayKey())
		if e.shard.IsClass() {
			keys = append(keys, e.shard.Child([]byte(e.owner)), e.shard.Child([]byte(e.owner)).Child([]byte(e.owner)))
		}
	}
	keys = append(keys, shard.NowKey, shard.V1Key, shard.Class(now.Add(30*24*time.Hour), 25, false))
	wants := [][]shard.Key{}
	for _, k := range keys {
		wants = append(wants, []shard.Key{k})
	}
	for range 20 {
		var ks []shard.Key
		for range 1 + rng.IntN(5) {
			ks = append(ks, keys[rng.IntN(len(keys))])
		}
		wants = append(wants, ks)
	}
	for _, ks := range wants {
		w := wantTopics(ks, "")
		var walk []string
		for _, e := range all {
			if w.accepts(e.shard, e.owner) && !e.private {
				walk = append(walk, string(e.envelope))
			}
		}
		var got []string
		for _, env := range b.envelopes(now, time.Time{}, MaxBoardResponse, w) {
			got = append(got, string(env))
		}
		slices.Sort(walk)
		slices.Sort(got)
		if !slices.Equal(got, walk) {
			t.Fatalf("topics %v: served %d records, a walk finds %d", ks, len(got), len(walk))
		}
	}
	for _, k := range keys {
		open, volume := 0, 0
		for _, e := range all {
			if k.Contains(e.shard, []byte(e.owner)) {
				if !e.withdrawn && !e.opaque {
					open++
				}
				if !e.opaque {
					volume++
				}
			}
		}
		if got := b.openIn(k); got != open {
			t.Errorf("openIn(%v) = %d, a walk finds %d", k, got, open)
		}
		if got, _ := b.volumeIn(k, "", now); got != volume {
			t.Errorf("volumeIn(%v) = %d, a walk finds %d", k, got, volume)
		}
	}
	// Removal keeps the index in step.
	for _, e := range all[:1000] {
		k := boardKey{e.owner, bookingOf(b, e)}
		b.mu.Lock()
		b.removeLocked(k, e)
		b.mu.Unlock()
	}
	n := 0
	b.eachLocked(wantAll, func(boardKey, *boardEntry) { n++ })
	m := 0
	b.byShard.each(shard.V1Key, func(_ shard.Key, g map[boardKey]*boardEntry) { m += len(g) })
	if n != len(all)-1000 || m != n {
		t.Fatalf("after removing 1000 of %d records: %d on the board, %d in the index", len(all), n, m)
	}
}

// bookingOf is the booking ID under which e is on b.
func bookingOf(b *board, e *boardEntry) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, x := range b.entries {
		if x == e {
			return k.booking
		}
	}
	return ""
}

// A newcomer's pull of one slot class from a full board, and the count of
// a class's open offers, against the same on a board of only that class's
// records: the shard index makes them cost the class, not the board.
//
//	go test -run '^$' -bench 'ClassOnFullBoard' -count 5 ./matchmaking
func BenchmarkClassOnFullBoard(b *testing.B) {
	now := time.Now()
	full := newBoard()
	fillShards(full, maxBoard, now, rand.New(rand.NewPCG(1, 2)))
	var class shard.Key
	for _, e := range full.all() {
		if e.shard.IsClass() && !e.shard.Now {
			class = e.shard
			break
		}
	}
	alone := newBoard()
	for _, e := range full.all() {
		if e.shard == class {
			alone.admitEntry(&boardEntry{offer: e.offer, owner: e.owner, envelope: e.envelope, seq: e.seq, expires: e.expires,
				withdrawn: e.withdrawn, class: e.class, shard: e.shard}, bookingOf(full, e), now, 0, e.owner)
		}
	}
	w := wantTopics([]shard.Key{class}, "")
	for _, c := range []struct {
		name string
		b    *board
	}{{"full", full}, {"class-only", alone}} {
		b.Run("pull/"+c.name, func(b *testing.B) {
			for b.Loop() {
				c.b.envelopes(now, time.Time{}, MaxBoardResponse, w)
			}
		})
		b.Run("volume/"+c.name, func(b *testing.B) {
			for b.Loop() {
				c.b.volumeIn(class, "", now)
			}
		})
	}
}

// BenchmarkServeChangingClass is what a node spends on the records of one
// board sync reply (48 KiB) from a slot class of 1000 records that keeps
// changing between pulls (a stranger re-announcing its records there), so
// that the served order is built afresh for every reply.
//
//	go test -run '^$' -bench 'ServeChangingClass' -benchmem -count 3 ./matchmaking
func BenchmarkServeChangingClass(b *testing.B) {
	bd := newBoard()
	start := nextSlot(3 * time.Hour)
	now := time.Now()
	var ids []peer.ID
	var offers []*pb.Offer
	for i := range 1000 {
		_, id := mustKey(b)
		o := &pb.Offer{Version: protoVersion, Owner: []byte(id), BookingId: fmt.Sprintf("g%d", i), StartUnix: start.Unix(),
			DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Seq: 1, ExpiresUnix: now.Add(time.Hour).Unix()}
		bd.admit(o, id, make([]byte, 300), now, 0, id)
		ids = append(ids, id)
		offers = append(offers, o)
	}
	k := classKeyOf(offers[0])
	w := wantTopics([]shard.Key{k}, "x")
	i := 0
	for b.Loop() {
		// A newer record of one owner: a fresh offer, not the one the
		// board holds, changed under it.
		o := proto.Clone(offers[i%1000]).(*pb.Offer)
		o.Seq = uint64(2 + i)
		bd.admit(o, ids[i%1000], make([]byte, 300), now, 0, ids[i%1000])
		i++
		envs, _ := bd.openEnvelopesFor(now, time.Time{}, 48<<10, w)
		if len(envs) == 0 {
			b.Fatal("nothing served")
		}
	}
}
