package matchmaking

import (
	"slices"
	"sync"
	"time"
)

// maxGoneClaims bounds the withdrawals a reply lists by expiry only
// (BoardResponse.withdrawn_ttl_s), and those a node takes from one: more
// than any lane volume needs (lanes.go decides at twice the volume).
const maxGoneClaims = 256

// goneClaims are the withdrawals of one topic that the node knows of only
// by when each expires: those the responders of its first pulls of the
// topic listed instead of sending them (BoardRequest.open_only). They
// count into the topic's volume (lanes.go) until they expire, and the
// node lists them again in its own open-only replies on the topic, so the
// topic's memory of its withdrawals outlives any one member's stay, as it
// did when the withdrawals themselves were passed on. (Listing only its
// own board's withdrawals, a member told newcomers of those it saw in its
// few seconds there: at N = 1000 in `tandem bench swarm` the hot class's
// volume seen fell from a median of 41 to 10, and it stopped splitting.)
//
// A claim cannot be checked. A node takes at most maxGoneClaims from a
// reply, each for at most its offer lifetime, and uses them for nothing
// but the volume: a liar can push a newcomer a lane deeper, as a flood of
// offers can (docs/protocol.md, threat model), and no further than the
// lanes' depth.
type goneClaims struct {
	mu      sync.Mutex
	expires []time.Time
}

// adopt takes a reply's claims, seconds from now until each withdrawal
// expires, at most ttl each, if they are more than the node holds live:
// concurrent first pulls each bring one responder's view, and the union
// of two lists of expiries cannot be told from their sum.
func (g *goneClaims) adopt(now time.Time, ttls []uint32, ttl time.Duration) {
	ttls = ttls[:min(len(ttls), maxGoneClaims)]
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	if len(ttls) <= len(g.expires) {
		return
	}
	g.expires = g.expires[:0]
	for _, s := range ttls {
		g.expires = append(g.expires, now.Add(min(time.Duration(s)*time.Second, ttl)))
	}
}

// live returns the claims that have not expired.
func (g *goneClaims) live(now time.Time) []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	return slices.Clone(g.expires)
}

func (g *goneClaims) pruneLocked(now time.Time) {
	g.expires = slices.DeleteFunc(g.expires, func(t time.Time) bool { return !t.After(now) })
}

// sameGone is how far apart a claim's expiry and a withdrawal's on the
// board may be and still be taken for the same record: the claim's
// seconds were rounded and then travelled a reply's round trip.
const sameGone = 3 * time.Second

// newClaims returns the claims that are not, by their expiry, one of the
// withdrawals the board holds (gone, Unix seconds): a node that holds a
// topic's withdrawals (it saw them on its day shard, or by a later pull)
// and claims of the same must count each once. Each withdrawal accounts
// for at most one claim. Two withdrawals that expire within sameGone of
// each other may be taken for one: the count errs low by those.
func newClaims(claimed []time.Time, gone []int64) []time.Time {
	if len(gone) == 0 {
		return claimed
	}
	known := slices.Sorted(slices.Values(gone))
	used := make([]bool, len(known))
	var out []time.Time
next:
	for _, t := range claimed {
		from, _ := slices.BinarySearch(known, t.Add(-sameGone).Unix())
		for i := from; i < len(known) && known[i] <= t.Add(sameGone).Unix(); i++ {
			if !used[i] {
				used[i] = true
				continue next
			}
		}
		out = append(out, t)
	}
	return out
}

// listGone lists withdrawals expiring at the Unix seconds gone and at the
// times claimed (each once: newClaims), as a reply carries them: seconds
// from now until each expires (at least 1), at most maxGoneClaims, those
// that expire last first (they count longest).
func listGone(now time.Time, gone []int64, claimed []time.Time) []uint32 {
	var ttls []uint32
	var live []int64
	for _, e := range gone {
		if d := e - now.Unix(); d > 0 {
			ttls = append(ttls, uint32(min(d, 1<<31)))
			live = append(live, e)
		}
	}
	for _, t := range newClaims(claimed, live) {
		if d := t.Sub(now); d > 0 {
			ttls = append(ttls, uint32(max(1, (d+time.Second-1)/time.Second)))
		}
	}
	slices.SortFunc(ttls, func(a, b uint32) int { return int(b) - int(a) })
	return ttls[:min(len(ttls), maxGoneClaims)]
}
