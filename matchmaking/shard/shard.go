// Package shard names the gossipsub topics offers travel on (version 2 of
// the offer protocol, docs/protocol.md section 2) and counts why a node
// wants each of them.
//
// An offer belongs to exactly one shard: scheduled offers to the UTC day of
// their start and their duration ("/tandem/offers/2/2026-12-03/25"),
// "focus now" offers to one small topic ("/tandem/offers/2/now"). Every
// offer that could pair with a booking is in that booking's shard (same
// start, hence same day; same duration), so a node matches using only the
// shards of its own open bookings, and shows the calendar from the shards
// of the days the user looks at.
package shard

import (
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
	case k.Now:
		return NowTopic
	}
	return Prefix + k.Day + "/" + strconv.Itoa(k.DurationMin)
}

func (k Key) String() string { return k.Topic() }

// SealedTopic is the topic of the shard's sealed private offers; version
// 1's topic has none ("").
func (k Key) SealedTopic() string {
	if k.V1 || k == (Key{}) {
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
	if err != nil || k.V1 {
		return Key{}, fmt.Errorf("%q is not a sealed offer topic", topic)
	}
	return k, nil
}

// Holds reports whether an offer of shard o travels on this shard's topic:
// its own, and every one on version 1's topic.
func (k Key) Holds(o Key) bool { return k.V1 || k == o }

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
	if _, err := time.Parse(dayLayout, day); err != nil {
		return Key{}, fmt.Errorf("offer topic %q: day: %w", topic, err)
	}
	d, err := strconv.Atoi(dur)
	if err != nil || !validDuration(d) {
		return Key{}, fmt.Errorf("offer topic %q: duration %q", topic, dur)
	}
	k := Key{Day: day, DurationMin: d}
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
