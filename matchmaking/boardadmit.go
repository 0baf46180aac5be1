package matchmaking

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A board admits and evicts by standing, never by arrival order: a flood
// of records from fresh identities must neither keep new honest offers
// out (the board refused everything once full) nor push out the offers of
// peers with a track record.
//
//   - An owner has at most maxPerOwner records on the board; at that
//     quota its new record takes the place of its own tombstone that
//     expires first (ownTombstoneLocked), if it has one.
//   - A board sync responder is accountable for the records it brought
//     that were news: at most maxPerForwarder of them at a time.
//   - A full board makes room by evicting a record of the owner with the
//     lowest standing and, among those, the most records; a newcomer
//     evicts only an owner of lower standing, or of the same standing with
//     at least two records more than its own. So an owner with a track
//     record (rank 2, Service.admitRank) is never pushed out by strangers,
//     and a stranger with one offer is never pushed out by strangers with
//     many: a flood needs as many identities (each paying its stamp) as
//     records. And a flood of that many keeps out no stranger the node is
//     connected to: on the public board one offering in a slot class the
//     node books in, on the sealed board any, comes in at rank 1, above
//     strangers (Service.admitRank).
const (
	maxPerOwner     = 32
	maxPerForwarder = maxBoard / 4
)

func (b *board) countLocked(k boardKey, e *boardEntry) {
	m := b.byOwner[e.owner]
	if m == nil {
		m = map[boardKey]*boardEntry{}
		b.byOwner[e.owner] = m
	}
	m[k] = e
	if r, ok := b.ownerRank[e.owner]; !ok || e.rank > r {
		b.ownerRank[e.owner] = e.rank
	}
	if e.via != e.owner {
		b.viaCount[e.via]++
	}
}

func (b *board) forgetLocked(k boardKey, e *boardEntry) {
	if m := b.byOwner[e.owner]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(b.byOwner, e.owner)
			delete(b.ownerRank, e.owner)
		}
	}
	if e.via != e.owner {
		if b.viaCount[e.via]--; b.viaCount[e.via] <= 0 {
			delete(b.viaCount, e.via)
		}
	}
}

// wouldAdmit reports whether a new record (owner, booking) of an owner of
// standing rank brought by via could enter now, without changing the
// board: a board sync skips what would be refused before paying for its
// signature.
func (b *board) wouldAdmit(owner peer.ID, booking string, rank int, via peer.ID, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.entries[boardKey{owner, booking}]; ok {
		return true // an update: no admission needed
	}
	mine := len(b.byOwner[owner])
	if (mine >= maxPerOwner && b.ownTombstoneLocked(owner) == nil) || (via != owner && b.viaCount[via] >= maxPerForwarder) {
		return false
	}
	if mine >= maxPerOwner {
		return true // in place of its own tombstone
	}
	if len(b.entries) < maxBoard {
		return true
	}
	_, vRank, vCount := b.victimLocked()
	return !(vRank > rank || (vRank == rank && vCount < mine+2))
}

// ownTombstoneLocked is the key of owner's withdrawn record that expires
// first, or nil. An owner at its quota replaces it with a new record: a
// tombstone only stops an older copy of its offer from coming back, and
// the owner gains no room by it (its records stay at the quota), so a
// user who matched many sessions within a tombstone's life (an hour at
// most) can still announce the next booking.
func (b *board) ownTombstoneLocked(owner peer.ID) *boardKey {
	var out *boardKey
	var expires int64
	for k, e := range b.byOwner[owner] {
		if e.withdrawn && (out == nil || e.expires < expires) {
			out, expires = &k, e.expires
		}
	}
	return out
}

// victimLocked is the owner a full board evicts from first: lowest
// standing, then most records.
func (b *board) victimLocked() (peer.ID, int, int) {
	var victim peer.ID
	vRank, vCount := 0, 0
	for o, m := range b.byOwner {
		r := b.ownerRank[o]
		if victim == "" || r < vRank || (r == vRank && len(m) > vCount) {
			victim, vRank, vCount = o, r, len(m)
		}
	}
	return victim, vRank, vCount
}

// roomLocked reports whether a new record of owner (standing rank,
// brought by via) may enter, evicting another if the board is full.
func (b *board) roomLocked(owner peer.ID, rank int, via peer.ID, now time.Time) bool {
	mine := len(b.byOwner[owner])
	if via != owner && b.viaCount[via] >= maxPerForwarder {
		return false
	}
	if mine >= maxPerOwner {
		k := b.ownTombstoneLocked(owner)
		if k == nil {
			return false
		}
		b.removeLocked(*k, b.entries[*k])
		return true
	}
	if len(b.entries) < maxBoard {
		return true
	}
	b.pruneLocked(now)
	if len(b.entries) < maxBoard {
		return true
	}
	// Evict from the owner of lowest standing with the most records.
	victim, vRank, vCount := b.victimLocked()
	if victim == "" || vRank > rank || (vRank == rank && vCount < mine+2) {
		return false
	}
	var out *boardEntry
	var outKey boardKey
	for k, e := range b.byOwner[victim] {
		if out == nil || e.expires < out.expires {
			out, outKey = e, k
		}
	}
	b.removeLocked(outKey, out)
	return true
}
