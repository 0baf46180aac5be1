// Package shard names the gossipsub topics offers travel on (version 2 of
// the offer protocol, docs/protocol.md section 2) and counts why a node
// wants each of them.
//
// An offer belongs to exactly one shard: scheduled offers to the UTC day of
// their start and their duration ("/tandem/offers/2/2026-12-03/25"),
// "focus now" offers to one topic ("/tandem/offers/2/now"). Every
// offer that could pair with a booking is in that booking's shard (same
// start, hence same day; same duration), so a node matches using only the
// shards of its own open bookings, and shows the calendar from the shards
// of the days the user looks at.
//
// Below a day shard, each slot class (one start, duration and quiet flag)
// has its own topic ("/tandem/offers/2/2026-12-03/50/0900"), which a
// crowded class splits further into lanes by a hash of the owner
// ("/tandem/offers/2/2026-12-03/50/0900/l01"): a booking matches on the
// topic of its class, or of its lane, and never pays for other classes
// (docs/protocol.md section 2.6). "Focus now" offers have classes too, one
// per duration and quiet flag ("/tandem/offers/2/now/25/any",
// "/tandem/offers/2/now/25/anyq/l1"), below the now shard as slot classes
// are below their day shard: the now shard alone carried every focus-now
// offer of the network to every node with one open.
package shard

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Topic names.
const (
	// V1Topic is version 1's single topic, every offer of the network on it.
	V1Topic = "/tandem/offers/1"
	// Prefix starts every version 2 offer topic.
	Prefix = "/tandem/offers/2/"
	// NowTopic carries every "focus now" offer.
	NowTopic = Prefix + "now"
	// SealedPrefix starts the companion topic of each version 2 shard
	// that carries the shard's sealed private offers (offer protocol
	// version 3): "/tandem/sealed/1/2026-12-03/25", "/tandem/sealed/1/now".
	// Version 2 nodes, which would refuse them, are not on it.
	SealedPrefix = "/tandem/sealed/1/"
)

// dayLayout is how a shard names its day (UTC).
const dayLayout = "2006-01-02"

// Durations are the session lengths, one shard per day each.
var Durations = []int{25, 50, 75}

// Key identifies one shard. The zero Key is not a shard.
type Key struct {
	// Day is the UTC date of the start ("2026-12-03"); empty for Now.
	Day string
	// DurationMin is 25, 50 or 75 (0 for Now).
	DurationMin int
	// Now marks the focus-now shard.
	Now bool
	// V1 marks version 1's single topic, which holds every shard.
	V1 bool
	// Slot names one slot class of a scheduled shard: the start's UTC
	// "HHMM", with "q" for quiet offers ("0900", "0915q"); of the now
	// shard, "any" or "anyq" (with DurationMin). Empty for a day shard
	// and the now shard.
	Slot string
	// Lane is a share of a slot class: the first len(Lane) bits of the
	// owner's lane hash (LaneBits), as "0" and "1". Empty for the class's
	// own topic.
	Lane string
}

// MaxLaneBits bounds how deep a slot class splits into lanes (4096
// lanes: far beyond any one slot's crowd).
const MaxLaneBits = 12

// Class is the topic of one slot class: scheduled offers with this start
// (UTC), duration and quiet flag.
func Class(start time.Time, durationMin int, quiet bool) Key {
	k := Scheduled(start, durationMin)
	k.Slot = start.UTC().Format("1504")
	if quiet {
		k.Slot += "q"
	}
	return k
}

// nowSlot is the Slot of a focus-now class: its offers start whenever
// they match.
const nowSlot = "any"

// NowClass is the topic of the focus-now offers of one duration and quiet
// flag.
func NowClass(durationMin int, quiet bool) Key {
	k := Key{Now: true, DurationMin: durationMin, Slot: nowSlot}
	if quiet {
		k.Slot += "q"
	}
	return k
}

// ClassOf is the slot class topic of an offer: scheduled (Class) or
// focus now (NowClass).
func ClassOf(now bool, startUnix int64, durationMin int, quiet bool) Key {
	if now {
		return NowClass(durationMin, quiet)
	}
	return Class(time.Unix(startUnix, 0), durationMin, quiet)
}

// DayKey is the day shard that holds k (k itself for a day shard, the now
// shard and version 1's topic; the now shard for a focus-now class).
func (k Key) DayKey() Key {
	if k.Now {
		return NowKey
	}
	k.Slot, k.Lane = "", ""
	return k
}

// IsClass reports whether k is a slot class's topic or one of its lanes.
func (k Key) IsClass() bool { return k.Slot != "" }

// Level is how deep k is: 0 for a day shard (and the now shard and
// version 1's topic), 1 for a slot class, 1 + its bits for a lane.
func (k Key) Level() int {
	if k.Slot == "" {
		return 0
	}
	return 1 + len(k.Lane)
}

// Child is the lane below class or lane k that owner belongs to.
func (k Key) Child(owner []byte) Key {
	k.Lane = LaneBits(k, owner, len(k.Lane)+1)
	return k
}

// Parent is the topic above lane k (the class for a first-level lane).
func (k Key) Parent() Key {
	if k.Lane != "" {
		k.Lane = k.Lane[:len(k.Lane)-1]
	}
	return k
}

// LaneBits is the first n bits (at most MaxLaneBits) of owner's lane hash
// in class k, SHA-256("tandem-lane/1|" || class topic || "|" || owner):
// a peer ID ground to sit in one lane serves that one slot class only.
func LaneBits(k Key, owner []byte, n int) string {
	k.Lane = ""
	h := sha256.New()
	h.Write([]byte("tandem-lane/1|" + k.Topic() + "|"))
	h.Write(owner)
	sum := h.Sum(nil)
	bits := make([]byte, min(n, MaxLaneBits))
	for i := range bits {
		bits[i] = '0' + (sum[i/8]>>(7-i%8))&1
	}
	return string(bits)
}

// Contains reports whether an offer of owner, whose finest key is o (its
// slot class, or its day shard or the now shard), travels on k's topic:
// version 1's topic holds every offer, a day shard every offer of its day
// and duration, the now shard every focus-now offer, a class its own
// offers and a lane those of its owners.
func (k Key) Contains(o Key, owner []byte) bool {
	switch {
	case k.V1:
		return true
	case k.Now != o.Now || o.V1:
		return false
	case k.Now && k.Slot == "":
		return true
	case k.Day != o.Day || k.DurationMin != o.DurationMin:
		return false
	case k.Slot == "":
		return true
	case k.Slot != o.Slot:
		return false
	}
	return k.Lane == "" || LaneBits(k, owner, len(k.Lane)) == k.Lane
}

// NowKey is the focus-now shard.
var NowKey = Key{Now: true}

// V1Key stands for version 1's topic.
var V1Key = Key{V1: true}

// Scheduled is the shard of a scheduled offer starting at start.
func Scheduled(start time.Time, durationMin int) Key {
	return Key{Day: start.UTC().Format(dayLayout), DurationMin: durationMin}
}

// ForOffer is the shard of an offer: now, or its start's UTC day and its
// duration.
func ForOffer(now bool, startUnix int64, durationMin int) Key {
	if now {
		return NowKey
	}
	return Scheduled(time.Unix(startUnix, 0), durationMin)
}

// Topic is the gossipsub topic of the shard.
func (k Key) Topic() string {
	switch {
	case k.V1:
		return V1Topic
	case k.Now && k.Slot == "":
		return NowTopic
	}
	t := Prefix + k.Day + "/" + strconv.Itoa(k.DurationMin)
	if k.Now {
		t = NowTopic + "/" + strconv.Itoa(k.DurationMin)
	}
	if k.Slot != "" {
		t += "/" + k.Slot
		if k.Lane != "" {
			t += "/l" + k.Lane
		}
	}
	return t
}

func (k Key) String() string { return k.Topic() }

// SealedTopic is the topic of the shard's sealed private offers; version
// 1's topic and slot classes have none ("": private offers travel on their
// day shard).
func (k Key) SealedTopic() string {
	if k.V1 || k == (Key{}) || k.Slot != "" {
		return ""
	}
	return SealedPrefix + strings.TrimPrefix(k.Topic(), Prefix)
}

// ParseSealed reads a sealed topic name back into its shard's Key.
func ParseSealed(topic string) (Key, error) {
	rest, ok := strings.CutPrefix(topic, SealedPrefix)
	if !ok {
		return Key{}, fmt.Errorf("%q is not a sealed offer topic", topic)
	}
	k, err := Parse(Prefix + rest)
	if err != nil || k.V1 || k.Slot != "" {
		return Key{}, fmt.Errorf("%q is not a sealed offer topic", topic)
	}
	return k, nil
}

// Parse reads an offer topic name (version 1 or 2) back into its Key.
func Parse(topic string) (Key, error) {
	switch topic {
	case V1Topic:
		return V1Key, nil
	case NowTopic:
		return NowKey, nil
	}
	rest, ok := strings.CutPrefix(topic, Prefix)
	if !ok {
		return Key{}, fmt.Errorf("%q is not an offer topic", topic)
	}
	day, dur, ok := strings.Cut(rest, "/")
	if !ok {
		return Key{}, fmt.Errorf("offer topic %q has no duration", topic)
	}
	dur, slot, _ := strings.Cut(dur, "/")
	slot, lane, _ := strings.Cut(slot, "/")
	now := day == "now"
	if _, err := time.Parse(dayLayout, day); err != nil && !now {
		return Key{}, fmt.Errorf("offer topic %q: day: %w", topic, err)
	}
	d, err := strconv.Atoi(dur)
	if err != nil || !validDuration(d) {
		return Key{}, fmt.Errorf("offer topic %q: duration %q", topic, dur)
	}
	k := Key{Day: day, DurationMin: d, Slot: slot}
	if now {
		k = Key{Now: true, DurationMin: d, Slot: slot}
		if slot != nowSlot && slot != nowSlot+"q" {
			return Key{}, fmt.Errorf("offer topic %q: focus-now class %q", topic, slot)
		}
	} else if slot != "" {
		hhmm := strings.TrimSuffix(slot, "q")
		t, err := time.Parse("1504", hhmm)
		if err != nil || t.Minute()%15 != 0 || len(hhmm) != 4 {
			return Key{}, fmt.Errorf("offer topic %q: slot %q", topic, slot)
		}
	}
	if lane != "" {
		bits, ok := strings.CutPrefix(lane, "l")
		if !ok || bits == "" || len(bits) > MaxLaneBits || strings.Trim(bits, "01") != "" {
			return Key{}, fmt.Errorf("offer topic %q: lane %q", topic, lane)
		}
		k.Lane = bits
	}
	if k.Topic() != topic {
		return Key{}, fmt.Errorf("offer topic %q is not in canonical form", topic)
	}
	return k, nil
}

// IsOfferTopic reports whether topic carries offers (version 1 or 2, or
// a shard's sealed offers): what peer scoring attaches its offer-topic
// parameters to.
func IsOfferTopic(topic string) bool {
	if _, err := Parse(topic); err == nil {
		return true
	}
	_, err := ParseSealed(topic)
	return err == nil
}

func validDuration(d int) bool {
	for _, v := range Durations {
		if v == d {
			return true
		}
	}
	return false
}

// Days lists the shards of every duration for the UTC days that
// [from, to) touches, at most maxDays days.
func Days(from, to time.Time, maxDays int) []Key {
	var out []Key
	day := from.UTC().Truncate(24 * time.Hour)
	for i := 0; i < maxDays && day.Before(to); i++ {
		for _, d := range Durations {
			out = append(out, Scheduled(day, d))
		}
		day = day.Add(24 * time.Hour)
	}
	return out
}

// All lists every shard a node could join at now with a booking horizon
// of ahead: the now shard and each (day, duration) from today's UTC date
// to now+ahead. Peer scoring and tests use it to name the topics that can
// exist.
func All(now time.Time, ahead time.Duration) []Key {
	return append([]Key{NowKey}, Days(now, now.Add(ahead).Add(24*time.Hour), 32)...)
}

// Interest counts, per shard, the reasons a node is on it: one reference
// per open booking of its own there (Hold/Release, keyed by booking) and
// views with a lease (the calendar showing a day). A shard nobody wants
// any more is kept for Linger, so a withdrawal published on the way out
// still travels and a cancel-and-rebook does not leave and rejoin.
type Interest struct {
	mu     sync.Mutex
	linger time.Duration
	refs   map[Key]map[string]bool
	views  map[Key]time.Time // viewed until
	unused map[Key]time.Time // when the last reason went away
}

// NewInterest returns an empty Interest whose unwanted shards linger for
// linger.
func NewInterest(linger time.Duration) *Interest {
	return &Interest{linger: linger, refs: map[Key]map[string]bool{}, views: map[Key]time.Time{}, unused: map[Key]time.Time{}}
}

// Hold adds reason (a booking ID) to k's references.
func (in *Interest) Hold(k Key, reason string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	m := in.refs[k]
	if m == nil {
		m = map[string]bool{}
		in.refs[k] = m
	}
	m[reason] = true
	delete(in.unused, k)
}

// Release drops reason from k's references; at now the shard starts to
// linger if nothing else wants it.
func (in *Interest) Release(k Key, reason string, now time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if m := in.refs[k]; m[reason] {
		delete(m, reason)
		if len(m) == 0 {
			delete(in.refs, k)
			if !in.views[k].After(now) {
				in.unused[k] = now
			}
		}
	}
}

// ReleaseSooner is Release with a linger of d (at most the Interest's).
func (in *Interest) ReleaseSooner(k Key, reason string, now time.Time, d time.Duration) {
	in.Release(k, reason, now.Add(-max(in.linger-d, 0)))
}

// Drop is Release without the linger: nothing was announced on k for
// reason (a booking moving to another lane), so nothing needs to travel.
func (in *Interest) Drop(k Key, reason string) {
	in.Release(k, reason, time.Now().Add(-in.linger))
}

// Refs is how many references hold k (views not counted).
func (in *Interest) Refs(k Key) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.refs[k])
}

// View wants every shard in ks until until (a later call extends it).
func (in *Interest) View(ks []Key, until time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, k := range ks {
		if until.After(in.views[k]) {
			in.views[k] = until
		}
		delete(in.unused, k)
	}
}

// Wanted lists the shards wanted at now, sorted by topic: held ones,
// viewed ones and those still lingering. It forgets views and lingers
// that are over.
func (in *Interest) Wanted(now time.Time) []Key {
	in.mu.Lock()
	defer in.mu.Unlock()
	set := map[Key]bool{}
	for k := range in.refs {
		set[k] = true
	}
	for k, until := range in.views {
		if until.After(now) {
			set[k] = true
			continue
		}
		delete(in.views, k)
		if len(in.refs[k]) == 0 {
			if _, ok := in.unused[k]; !ok {
				in.unused[k] = until
			}
		}
	}
	for k, since := range in.unused {
		if set[k] || now.Sub(since) >= in.linger {
			delete(in.unused, k)
			continue
		}
		set[k] = true
	}
	out := make([]Key, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic() < out[j].Topic() })
	return out
}
