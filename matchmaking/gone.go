package matchmaking

import (
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/shard"
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
	mu     sync.Mutex
	claims []claim
}

// claim is one withdrawal known by its expiry and its tag (goneTag; 0
// when the responder sent none).
type claim struct {
	expires time.Time
	tag     uint32
}

// goneRec is one withdrawal a board holds: when it expires (Unix
// seconds) and its tag.
type goneRec struct {
	expires int64
	tag     uint32
}

// goneTag names a withdrawal in a reply's list (BoardResponse.withdrawn_tag):
// 32 bits of FNV-1a over its owner and booking ID, never 0 (which stands
// for "no tag"). With expiries alone a node could not tell a claim of a
// withdrawal it also holds from another withdrawal that expires in the
// same few seconds: where withdrawals are dense (the hot class of `tandem
// bench swarm` at N = 1000 has more than one a second) a member took the
// new withdrawals it saw for the newest claims it had been handed, and
// passed on that many fewer (TestFirstPullCountsWithdrawals). Two
// withdrawals whose tags collide count once: the count errs low, by
// about one in 30,000 pairs.
func goneTag(owner peer.ID, booking string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(owner))
	h.Write([]byte{0})
	h.Write([]byte(booking))
	return max(h.Sum32(), 1)
}

// adopt takes a reply's claims, seconds from now until each withdrawal
// expires (at most ttl each) and their tags (ignored unless one per
// claim), if they are more than the node holds live: concurrent first
// pulls each bring one responder's view, and the union of two lists of
// expiries cannot be told from their sum.
func (g *goneClaims) adopt(now time.Time, ttls, tags []uint32, ttl time.Duration) {
	if len(tags) != len(ttls) {
		tags = nil
	}
	ttls = ttls[:min(len(ttls), maxGoneClaims)]
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	if len(ttls) <= len(g.claims) {
		return
	}
	g.claims = g.claims[:0]
	for i, s := range ttls {
		c := claim{expires: now.Add(min(time.Duration(s)*time.Second, ttl))}
		if tags != nil {
			c.tag = tags[i]
		}
		g.claims = append(g.claims, c)
	}
}

// live returns the claims that have not expired.
func (g *goneClaims) live(now time.Time) []claim {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	return slices.Clone(g.claims)
}

func (g *goneClaims) pruneLocked(now time.Time) {
	g.claims = slices.DeleteFunc(g.claims, func(c claim) bool { return !c.expires.After(now) })
}

// sameGone is how far apart an untagged claim's expiry and a withdrawal's
// on the board may be and still be taken for the same record: the
// claim's seconds were rounded and then travelled a reply's round trip.
const sameGone = 3 * time.Second

// newClaims returns the claims that are not one of the withdrawals the
// board holds (gone): a node that holds a topic's withdrawals (it saw
// them on its topic, or by a later pull) and claims of the same must
// count each once. A tagged claim is that withdrawal when the tags are
// equal. An untagged one (from a responder older than the tags) is taken
// for a withdrawal no tagged claim matched whose expiry is within
// sameGone of its own, each withdrawal for at most one claim: two that
// expire within sameGone of each other may be taken for one, and the
// count errs low by those.
func newClaims(claimed []claim, gone []goneRec) []claim {
	if len(gone) == 0 {
		return claimed
	}
	byTag := map[uint32]int{}
	for _, g := range gone {
		byTag[g.tag]++
	}
	var out, untagged []claim
	for _, c := range claimed {
		switch {
		case c.tag == 0:
			untagged = append(untagged, c)
		case byTag[c.tag] > 0:
			byTag[c.tag]--
		default:
			out = append(out, c)
		}
	}
	if len(untagged) == 0 {
		return out
	}
	var known []int64
	for _, g := range gone {
		if byTag[g.tag] > 0 {
			byTag[g.tag]--
			known = append(known, g.expires)
		}
	}
	slices.Sort(known)
	used := make([]bool, len(known))
next:
	for _, c := range untagged {
		from, _ := slices.BinarySearch(known, c.expires.Add(-sameGone).Unix())
		for i := from; i < len(known) && known[i] <= c.expires.Add(sameGone).Unix(); i++ {
			if !used[i] {
				used[i] = true
				continue next
			}
		}
		out = append(out, c)
	}
	return out
}

// listGone lists the withdrawals the board holds (gone) and the claims
// that are not among them (newClaims), as a reply carries them: seconds
// from now until each expires (at least 1) and its tag, those that
// expire last first (they count longest), at most maxGoneClaims.
func listGone(now time.Time, gone []goneRec, claimed []claim) (ttls, tags []uint32) {
	type listed struct{ ttl, tag uint32 }
	var all []listed
	var live []goneRec
	for _, g := range gone {
		if d := g.expires - now.Unix(); d > 0 {
			all = append(all, listed{uint32(min(d, 1<<31)), g.tag})
			live = append(live, g)
		}
	}
	for _, c := range newClaims(claimed, live) {
		if d := c.expires.Sub(now); d > 0 {
			all = append(all, listed{uint32(max(1, (d+time.Second-1)/time.Second)), c.tag})
		}
	}
	slices.SortStableFunc(all, func(a, b listed) int { return int(b.ttl) - int(a.ttl) })
	for _, l := range all[:min(len(all), maxGoneClaims)] {
		ttls = append(ttls, l.ttl)
		tags = append(tags, l.tag)
	}
	return ttls, tags
}

// maxLeftTopics bounds the topics whose claims a node keeps after leaving
// them.
const maxLeftTopics = 64

// keepLeftClaimsLocked keeps, as claims, what the node knows of the
// withdrawals of slot class or lane topic st as it leaves it: those on its
// board (which it drops with the topic) and its claims. A booking that
// went a lane deeper and climbs back, or the node's next booking of the
// class, rejoins the topic; with a fresh memory it told the newcomers
// that pulled it of none of the withdrawals it had known, and the topic's
// count started again from what it saw itself (in `tandem bench swarm`
// at N = 500, a node back on the hot class's topic told newcomers of none
// of the 69 withdrawals it had held 3 s before).
func (s *Service) keepLeftClaimsLocked(st *shardTopic) {
	if !st.key.IsClass() {
		return
	}
	now := s.now()
	_, gone := s.board.volumeIn(st.key, s.h.ID(), now)
	kept := newClaims(st.gone.live(now), gone)
	for _, g := range gone {
		kept = append(kept, claim{time.Unix(g.expires, 0), g.tag})
	}
	if s.leftClaims == nil {
		s.leftClaims = map[shard.Key][]claim{}
	}
	for k, cs := range s.leftClaims {
		if !slices.ContainsFunc(cs, func(c claim) bool { return c.expires.After(now) }) {
			delete(s.leftClaims, k)
		}
	}
	if len(kept) > 0 && len(s.leftClaims) < maxLeftTopics {
		slices.SortFunc(kept, func(a, b claim) int { return b.expires.Compare(a.expires) })
		s.leftClaims[st.key] = kept[:min(len(kept), maxGoneClaims)]
	}
}

// takeLeftClaimsLocked returns the claims kept for topic k when the node
// left it, and forgets them: they seed the topic's claims as it is
// joined again.
func (s *Service) takeLeftClaimsLocked(k shard.Key) []claim {
	cs := s.leftClaims[k]
	delete(s.leftClaims, k)
	now := s.now()
	return slices.DeleteFunc(cs, func(c claim) bool { return !c.expires.After(now) })
}
