package matchmaking

import (
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
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
}

// board holds the latest signed offer of every (owner, booking) pair,
// withdrawals included as tombstones so an older copy cannot come back.
type board struct {
	mu      sync.Mutex
	entries map[boardKey]*boardEntry
}

func newBoard() *board { return &board{entries: map[boardKey]*boardEntry{}} }

// put stores a verified offer if it is newer than what we have; it reports
// whether the board changed.
func (b *board) put(o *pb.Offer, owner peer.ID, env []byte, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := boardKey{owner, o.GetBookingId()}
	if old, ok := b.entries[k]; ok && old.offer.GetSeq() >= o.GetSeq() {
		return false
	}
	if len(b.entries) >= maxBoard {
		b.pruneLocked(now)
		if len(b.entries) >= maxBoard {
			return false
		}
	}
	b.entries[k] = &boardEntry{offer: o, owner: owner, envelope: env, seen: now}
	return true
}

// has reports whether the board holds the record (owner, booking) at seq
// or newer.
func (b *board) has(owner peer.ID, booking string, seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[boardKey{owner, booking}]
	return ok && e.offer.GetSeq() >= seq
}

func (b *board) pruneLocked(now time.Time) {
	for k, e := range b.entries {
		if time.Unix(e.offer.GetExpiresUnix(), 0).Before(now) {
			delete(b.entries, k)
		}
	}
}

func (b *board) prune(now time.Time) {
	b.mu.Lock()
	b.pruneLocked(now)
	b.mu.Unlock()
}

// open returns the live, unexpired, not-withdrawn offers.
func (b *board) open(now time.Time) []*boardEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*boardEntry
	for _, e := range b.entries {
		if e.offer.GetWithdrawn() || time.Unix(e.offer.GetExpiresUnix(), 0).Before(now) {
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].offer.GetStartUnix() != out[j].offer.GetStartUnix() {
			return out[i].offer.GetStartUnix() < out[j].offer.GetStartUnix()
		}
		return out[i].owner < out[j].owner
	})
	return out
}

// envelopes returns every unexpired record (withdrawals too, so a peer that
// missed a withdrawal learns it) up to max bytes in all.
func (b *board) envelopes(now time.Time, maxBytes int) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out [][]byte
	size := 0
	for _, e := range b.entries {
		if time.Unix(e.offer.GetExpiresUnix(), 0).Before(now) {
			continue
		}
		if size+len(e.envelope)+8 > maxBytes {
			break
		}
		size += len(e.envelope) + 8
		out = append(out, e.envelope)
	}
	return out
}

// rateLimiter is a token bucket per peer: burst tokens, refilled at rate
// per second.
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
		if len(r.buckets) > 10000 {
			clear(r.buckets)
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
