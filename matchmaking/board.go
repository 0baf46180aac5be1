package matchmaking

import (
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// maxBoard bounds how many offers a node keeps and serves.
const maxBoard = 5000

type boardKey struct {
	owner   peer.ID
	booking string
}

type boardEntry struct {
	offer    *pb.Offer
	owner    peer.ID
	envelope []byte // as signed by the owner, served to peers on sync
	seen     time.Time
	// Copies of the offer's fields the matcher reads on every pass, kept
	// here so that scanning a board does not chase a pointer per entry.
	seq       uint64
	expires   int64
	withdrawn bool
	class     slotClass
	planKey   string    // planKey(class, owner), hashed once: a plan sorts the whole class
	shard     shard.Key // the finest topic key it travels on: its slot class (or day shard, for a sealed record)
	via       peer.ID   // the owner (gossip) or the board sync responder that brought it
	rank      int       // the owner's standing when it was admitted
	// private: a private offer opened from a sealed record sealed to us
	// (private.go); its envelope is never served to anyone.
	private bool
	// opaque: a sealed record (the sealed board, private.go), known only
	// by its owner, handle, seq, expiry and shard; offer is nil.
	opaque bool
	// topics: the gossip topics this node took a record of (owner,
	// booking) from, and so relayed it on (at most maxEntryTopics). A
	// re-announcement that changes nothing is not relayed again there
	// (Service.needlessRefresh); elsewhere, for instance on the lane a
	// booking just moved to, it is.
	topics []string
	// soon: this record was taken as a re-announcement that changed
	// nothing and came soon after the one before (soonRefresh); another
	// such after it is needless.
	soon bool
}

// markSoon notes that the record seq of (owner, booking) came soon after
// the one before, unchanged (boardEntry.soon).
func (b *board) markSoon(owner peer.ID, booking string, seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.entries[boardKey{owner, booking}]; e != nil && e.seq == seq {
		e.soon = true
	}
}

// maxEntryTopics bounds boardEntry.topics: an offer travels on its lane or
// class, its day shard and, to version 1 peers, the all-offers topic.
const maxEntryTopics = 4

// tookOn records that the record of (owner, booking) came by gossip on
// topic.
func (b *board) tookOn(owner peer.ID, booking, topic string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[boardKey{owner, booking}]
	if e == nil || slices.Contains(e.topics, topic) || len(e.topics) >= maxEntryTopics {
		return
	}
	e.topics = append(slices.Clip(e.topics), topic)
}

// slotClass groups offers that can only pair within the group: same kind,
// duration and quiet flag, and for scheduled offers the same start.
type slotClass struct {
	kind  pb.Kind
	start int64 // 0 for "now"
	dur   uint32
	quiet bool
}

// key is the slot class topic of the class (scheduled, or focus now).
func (c slotClass) key() shard.Key {
	return shard.ClassOf(c.kind == pb.Kind_KIND_NOW, c.start, int(c.dur), c.quiet)
}

func classOfOffer(o *pb.Offer) slotClass {
	c := slotClass{kind: o.GetKind(), start: o.GetStartUnix(), dur: o.GetDurationMin(), quiet: o.GetQuiet()}
	if c.kind == pb.Kind_KIND_NOW {
		c.start = 0
	}
	return c
}

func classOfBooking(b *Booking) slotClass {
	c := slotClass{kind: kindToPB(b.Kind), start: b.Start.Unix(), dur: uint32(b.DurationMin), quiet: b.Quiet}
	if b.Kind == KindNow {
		c.start = 0
	}
	return c
}

func (e *boardEntry) expired(now time.Time) bool { return expiredAt(e.expires, now) }

// board holds the latest signed offer of every (owner, booking) pair,
// withdrawals included as tombstones so an older copy cannot come back.
// Open offers are also indexed by slot class, so the matcher looks only
// at the offers that could pair with a booking of its own.
type board struct {
	mu      sync.Mutex
	entries map[boardKey]*boardEntry
	byClass map[slotClass]map[boardKey]*boardEntry // open (not withdrawn) entries
	byShard shardIndex                             // every entry (boardshards.go)
	// Admission accounting (boardadmit.go): entries per owner, and per
	// forwarder for records that came by board sync.
	byOwner   map[peer.ID]map[boardKey]*boardEntry
	ownerRank map[peer.ID]int // the highest rank an owner's records were admitted with
	viaCount  map[peer.ID]int
	// gen counts the board's changes (a record stored or removed);
	// served keeps, for the board of generation servedGen, the order in
	// which envelopesFor serves each filter asked for, and orderBuilds
	// counts the orders computed (tests).
	gen, servedGen uint64
	served         map[string]*servedOrder
	orderBuilds    int
	// soonest is at most the earliest expiry on the board (0: none
	// known), so that a full board under a flood, which would look for
	// expired records at every admission, looks only when one may have
	// expired (a walk of 5000 records per message kept the sealed topic's
	// reader so busy that its subscription overflowed).
	soonest int64
}

func newBoard() *board {
	return &board{entries: map[boardKey]*boardEntry{}, byClass: map[slotClass]map[boardKey]*boardEntry{}, byShard: shardIndex{},
		byOwner: map[peer.ID]map[boardKey]*boardEntry{}, ownerRank: map[peer.ID]int{}, viaCount: map[peer.ID]int{}}
}

// put stores a verified offer that its owner published, if it is newer
// than what we have; it reports whether the board changed.
func (b *board) put(o *pb.Offer, owner peer.ID, env []byte, now time.Time) bool {
	return b.admit(o, owner, env, now, 0, owner)
}

// admit stores a verified offer that came from via (its owner, or a
// board sync's responder) if it is newer than what we have and the
// board's admission rules let it in (boardadmit.go); rank is the owner's
// standing. It reports whether the board changed.
func (b *board) admit(o *pb.Offer, owner peer.ID, env []byte, now time.Time, rank int, via peer.ID) bool {
	c := classOfOffer(o)
	return b.admitEntry(&boardEntry{
		offer: o, owner: owner, envelope: env,
		seq: o.GetSeq(), expires: o.GetExpiresUnix(), withdrawn: o.GetWithdrawn(), class: c,
		planKey: planKey(c, owner), shard: classKeyOf(o),
	}, o.GetBookingId(), now, rank, via)
}

// heldRecord is what refreshOf tells of the record a board holds.
type heldRecord struct {
	seen time.Time // when the board took it
	soon bool      // boardEntry.soon
}

// refreshOf reports whether o is a newer record of what the board holds
// for (owner, o's booking) that differs from it only in its sequence
// number and expiry (an owner's re-announcement, which keeps the record
// alive and changes nothing a match depends on), and if so what it holds.
// If topic is not "", the held record must have come on topic too.
func (b *board) refreshOf(o *pb.Offer, owner peer.ID, topic string) (heldRecord, bool) {
	b.mu.Lock()
	old := b.entries[boardKey{owner, o.GetBookingId()}]
	if old == nil || old.offer == nil || old.seq >= o.GetSeq() || (topic != "" && !slices.Contains(old.topics, topic)) {
		b.mu.Unlock()
		return heldRecord{}, false
	}
	held, stored := heldRecord{old.seen, old.soon}, old.offer
	b.mu.Unlock()
	c := proto.Clone(o).(*pb.Offer)
	c.Seq, c.ExpiresUnix = stored.GetSeq(), stored.GetExpiresUnix()
	if !proto.Equal(c, stored) {
		return heldRecord{}, false
	}
	return held, true
}

// admitEntry stores e as the record (e.owner, booking) under the rules of
// admit; e's seen, via and rank are filled in here.
func (b *board) admitEntry(e *boardEntry, booking string, now time.Time, rank int, via peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	owner := e.owner
	k := boardKey{owner, booking}
	old, ok := b.entries[k]
	if ok && old.seq >= e.seq {
		return false
	}
	if !ok && !b.roomLocked(owner, rank, via, now) {
		return false
	}
	if ok {
		b.unindexLocked(k, old)
		b.forgetLocked(k, old)
		via = old.via // who brought it first stays accountable for it
		e.topics = old.topics
	}
	e.seen, e.via, e.rank = now, via, rank
	b.entries[k] = e
	b.gen++
	if b.soonest == 0 || e.expires < b.soonest {
		b.soonest = e.expires
	}
	b.countLocked(k, e)
	b.byShard.add(k, e)
	if !e.withdrawn && !e.opaque {
		m := b.byClass[e.class]
		if m == nil {
			m = map[boardKey]*boardEntry{}
			b.byClass[e.class] = m
		}
		m[k] = e
	}
	return true
}

func (b *board) unindexLocked(k boardKey, e *boardEntry) {
	b.byShard.remove(k, e)
	if m := b.byClass[e.class]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(b.byClass, e.class)
		}
	}
}

// all returns every record (tests).
func (b *board) all() []*boardEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*boardEntry, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, e)
	}
	return out
}

// get returns the record of (owner, booking), or nil.
func (b *board) get(owner peer.ID, booking string) *boardEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries[boardKey{owner, booking}]
}

// has reports whether the board holds the record (owner, booking) at seq
// or newer.
func (b *board) has(owner peer.ID, booking string, seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[boardKey{owner, booking}]
	return ok && e.seq >= seq
}

func (b *board) pruneLocked(now time.Time) {
	if b.soonest != 0 && !expiredAt(b.soonest, now) {
		return // nothing can have expired yet
	}
	b.soonest = 0
	for k, e := range b.entries {
		if e.expired(now) {
			b.removeLocked(k, e)
		} else if b.soonest == 0 || e.expires < b.soonest {
			b.soonest = e.expires
		}
	}
}

// keepOnly forgets every record that keep refuses (given its finest
// topic key and owner).
func (b *board) keepOnly(keep func(shard.Key, peer.ID) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.entries {
		if !keep(e.shard, e.owner) {
			b.removeLocked(k, e)
		}
	}
}

func (b *board) removeLocked(k boardKey, e *boardEntry) {
	delete(b.entries, k)
	b.gen++
	b.unindexLocked(k, e)
	b.forgetLocked(k, e)
}

func (b *board) prune(now time.Time) {
	b.mu.Lock()
	b.pruneLocked(now)
	b.mu.Unlock()
}

// open returns the live, unexpired, not-withdrawn offers, soonest first.
func (b *board) open(now time.Time) []*boardEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*boardEntry
	for _, m := range b.byClass {
		for _, e := range m {
			if !e.expired(now) {
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].offer.GetStartUnix() != out[j].offer.GetStartUnix() {
			return out[i].offer.GetStartUnix() < out[j].offer.GetStartUnix()
		}
		return out[i].owner < out[j].owner
	})
	return out
}

// openIn counts the open (not withdrawn) offers on the board that travel
// on topic k, expired ones included until the next prune.
func (b *board) openIn(k shard.Key) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	b.byShard.each(k, func(c shard.Key, m map[boardKey]*boardEntry) {
		for _, e := range m {
			if !e.withdrawn && !e.opaque && (k.Lane == "" || k.Contains(c, []byte(e.owner))) {
				n++
			}
		}
	})
	return n
}

// volumeIn counts the bookings of others whose records on the board
// travel on topic k, open or withdrawn, until they expire: how crowded k
// has been over the last few minutes (lanes.go); and the withdrawals
// among them (gone.go).
func (b *board) volumeIn(k shard.Key, self peer.ID, now time.Time) (n int, gone []goneRec) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byShard.each(k, func(_ shard.Key, m map[boardKey]*boardEntry) {
		for key, e := range m {
			if e.owner != self && !e.opaque && !e.expired(now) && k.Contains(e.shard, []byte(e.owner)) {
				n++
				if e.withdrawn {
					gone = append(gone, goneRec{e.expires, goneTag(key.owner, key.booking)})
				}
			}
		}
	})
	return n, gone
}

func (b *board) class(c slotClass, now time.Time) []*boardEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.byClass[c]
	out := make([]*boardEntry, 0, len(m))
	for _, e := range m {
		if !e.expired(now) {
			out = append(out, e)
		}
	}
	return out
}

// envelopes returns every unexpired record taken since `since` (zero:
// all) of the shards want accepts
// (withdrawals too, so a peer that missed a withdrawal learns it) up to
// max bytes in all, but never a private offer (one naming a peer in
// `with`). When they do not all fit, the records of owners of higher
// standing go first and, among owners of one standing, those of owners
// with fewer records (in random order within that): the order in which
// a full board evicts, reversed. So a board a flood has filled still
// serves its honest records (a stranger's one or two offers, a relay's
// only copy of a sealed record) in every reply, not in the share of
// replies that a random cut would leave them.
//
// The order costs one pass: an owner's standing and record count are read
// once per record under the lock, and the records are then grouped by
// them (a handful of groups) outside it. A comparison sort that looked
// both up in maps for every comparison held the lock for tens of
// milliseconds on a full board, and every admission (a gossip
// validator's) waited for it.
func (b *board) envelopes(now, since time.Time, maxBytes int, want boardWant) [][]byte {
	want.name = ""
	return b.envelopesFor(now, since, maxBytes, want)
}

// envelopesFor is envelopes for a filter with a name (want.name: the same
// name, the same filter): the order of what it wants is computed once per version
// of the board and kept, so that pulls of a board that has not changed
// cost a walk of that order, not a filter, a grouping and their
// allocations each (16 requesters pulling a full board in a loop spent a
// quarter of the victim's CPU there). Within one standing and record
// count the random order is then drawn once per version, not once per
// reply. An empty name computes the order afresh. Either way it looks
// only at the records of the topics wanted (boardshards.go).
func (b *board) envelopesFor(now, since time.Time, maxBytes int, want boardWant) [][]byte {
	envs, _ := b.orderFor(now, want).cut(now, since, maxBytes, false)
	return envs
}

// openEnvelopesFor is envelopesFor without the withdrawals, of which it
// returns only when each expires (Unix seconds): what a newcomer to a
// topic needs (BoardRequest.open_only).
// On a busy class topic most records are withdrawals (its bookings match
// within a second), and a newcomer needs only their number, to tell how
// crowded the topic is (lanes.go).
func (b *board) openEnvelopesFor(now, since time.Time, maxBytes int, want boardWant) ([][]byte, []goneRec) {
	return b.orderFor(now, want).cut(now, since, maxBytes, true)
}

// orderFor returns the order in which the records want accepts are
// served, computed once per version of the board and filter name.
func (b *board) orderFor(now time.Time, want boardWant) *servedOrder {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.servedGen != b.gen {
		b.served, b.servedGen = nil, b.gen
	}
	key := want.name
	o := b.served[key]
	if o != nil && key != "" {
		return o
	}
	gen := b.gen
	all := b.snapshotLocked(now, want)
	b.orderBuilds++
	b.mu.Unlock()
	o = orderServed(all)
	b.mu.Lock()
	if key != "" && b.gen == gen {
		if len(b.served) >= maxServedOrders {
			b.served = nil // a requester varying its topics pays the order, as before
		}
		if b.served == nil {
			b.served = map[string]*servedOrder{}
		}
		b.served[key] = o
	}
	return o
}

// cut is what a reply of maxBytes serves of the order (which is never
// changed once made): the longest prefix that fits, skipping what expired
// since the order was made or was taken before since, and with openOnly
// the withdrawals, whose expiries it returns. The order's own slice is returned
// when nothing was skipped (read only).
func (o *servedOrder) cut(now, since time.Time, maxBytes int, openOnly bool) ([][]byte, []goneRec) {
	size, n := 0, 0
	var gone []goneRec
	var out [][]byte
	skipped, full := false, false
	for i, env := range o.envs {
		stale := expiredAt(o.expires[i], now) || o.seen[i].Before(since)
		left := !stale && openOnly && o.withdrawn[i]
		if left {
			gone = append(gone, goneRec{o.expires[i], o.tags[i]})
		}
		if full {
			continue // only collecting the withdrawals
		}
		if stale || left {
			if !skipped {
				skipped = true
				out = append(make([][]byte, 0, len(o.envs)-i), o.envs[:i]...)
			}
			continue
		}
		if size+len(env)+8 > maxBytes {
			if full = true; !openOnly {
				break
			}
			continue
		}
		size += len(env) + 8
		if skipped {
			out = append(out, env)
		} else {
			n = i + 1
		}
	}
	if !skipped {
		return o.envs[:n:n], gone
	}
	return out, gone
}

// maxServedOrders bounds the orders a board keeps (one per filter asked
// for since it last changed).
const maxServedOrders = 8

// servedOrder is the order in which envelopes serves the records one
// filter wants, with what the cut needs of each record.
type servedOrder struct {
	envs      [][]byte
	expires   []int64
	seen      []time.Time
	withdrawn []bool
	tags      []uint32 // of the withdrawals (goneTag), 0 for open offers
}

// servedRecord is what ordering a record for a reply needs of it.
type servedRecord struct {
	env         []byte
	expires     int64
	seen        time.Time
	withdrawn   bool
	tag         uint32
	rank, owned int
}

// snapshotLocked collects the unexpired records want accepts (never a
// private offer), with their owner's standing and record count.
func (b *board) snapshotLocked(now time.Time, want boardWant) []servedRecord {
	// Sized by a first walk: on a board that keeps changing (a stranger's
	// records re-announced in a crowded class) the order is rebuilt for
	// every pull, and growing the slice by appends copied it several
	// times over.
	n := 0
	b.eachLocked(want, func(boardKey, *boardEntry) { n++ })
	all := make([]servedRecord, 0, n)
	b.eachLocked(want, func(key boardKey, e *boardEntry) {
		if e.expired(now) || !want.accepts(e.shard, e.owner) || e.private || (e.offer != nil && len(e.offer.GetWith()) > 0) {
			// A private offer is for its invited peer only: one sealed
			// to us, or one a version 2 node sent in the clear (by
			// gossip, or to us alone), is never served on.
			return
		}
		var tag uint32
		if e.withdrawn {
			tag = goneTag(key.owner, key.booking)
		}
		all = append(all, servedRecord{e.envelope, e.expires, e.seen, e.withdrawn, tag, b.ownerRank[e.owner], len(b.byOwner[e.owner])})
	})
	return all
}

// orderServed puts records in the order envelopes serves them, outside
// the board's lock: grouped by standing (highest first) and record count
// (fewest first), a handful of groups, in random order within each. A
// comparison sort that looked both up in maps for every comparison held
// the lock for tens of milliseconds on a full board, and every admission
// (a gossip validator's) waited for it. The records are shuffled, then
// each is written straight to its place in the order (its group's next
// slot): no copy of them is made per group.
func orderServed(all []servedRecord) *servedOrder {
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	type group struct{ rank, owned int }
	next := map[group]int{} // a group's size, then the next slot of it
	for _, e := range all {
		next[group{e.rank, e.owned}]++
	}
	keys := make([]group, 0, len(next))
	for g := range next {
		keys = append(keys, g)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].rank != keys[j].rank {
			return keys[i].rank > keys[j].rank
		}
		return keys[i].owned < keys[j].owned
	})
	at := 0
	for _, g := range keys {
		at, next[g] = at+next[g], at
	}
	n := len(all)
	o := &servedOrder{envs: make([][]byte, n), expires: make([]int64, n), seen: make([]time.Time, n), withdrawn: make([]bool, n), tags: make([]uint32, n)}
	for _, e := range all {
		g := group{e.rank, e.owned}
		i := next[g]
		next[g]++
		o.envs[i], o.expires[i], o.seen[i], o.withdrawn[i], o.tags[i] = e.env, e.expires, e.seen, e.withdrawn, e.tag
	}
	return o
}

// maxRateBuckets bounds how many authors a rateLimiter tracks.
const maxRateBuckets = 10000

// rateLimiter is a token bucket per peer: burst tokens, refilled at rate
// per second. At maxRateBuckets it drops only buckets that have refilled
// (they hold nothing a fresh bucket would not), never one that is
// spending, so a flood of new identities cannot reset anyone's bucket.
type rateLimiter struct {
	mu      sync.Mutex
	burst   float64
	rate    float64
	buckets map[peer.ID]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(burst, perSecond float64) *rateLimiter {
	return &rateLimiter{burst: burst, rate: perSecond, buckets: map[peer.ID]*bucket{}}
}

func (r *rateLimiter) allow(p peer.ID, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	bk, ok := r.buckets[p]
	if !ok {
		if len(r.buckets) >= maxRateBuckets && !r.dropFullLocked(now) {
			// Every tracked author is spending: forgetting any of them
			// would hand it a fresh burst, so the newcomer waits.
			return false
		}
		bk = &bucket{tokens: r.burst, last: now}
		r.buckets[p] = bk
	}
	bk.tokens = min(r.burst, bk.tokens+now.Sub(bk.last).Seconds()*r.rate)
	bk.last = now
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

// dropFullLocked forgets the buckets that have refilled by now and
// reports whether any was.
func (r *rateLimiter) dropFullLocked(now time.Time) bool {
	dropped := false
	for p, bk := range r.buckets {
		if bk.tokens+now.Sub(bk.last).Seconds()*r.rate >= r.burst {
			delete(r.buckets, p)
			dropped = true
		}
	}
	return dropped
}
