package matchmaking

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

// The board indexes every record by its shard, day and slot class, so
// that what one topic asks of it (a board sync's reply, a topic's volume)
// costs the records of that topic, not a walk of the whole board. A flood
// spread over the fortnight fills the board to its cap; before, each of
// the honest pair's join pulls, one per new slot class on each side,
// walked all 5000 records to serve the two or three of that class, 3-7 ms
// of CPU each beside the negotiation they held up.

// shardIndex files records under their day shard, then under their finest
// key (a slot class, or the day shard itself for a sealed record).
type shardIndex map[shard.Key]map[shard.Key]map[boardKey]*boardEntry

func (x shardIndex) add(k boardKey, e *boardEntry) {
	day := e.shard.DayKey()
	classes := x[day]
	if classes == nil {
		classes = map[shard.Key]map[boardKey]*boardEntry{}
		x[day] = classes
	}
	m := classes[e.shard]
	if m == nil {
		m = map[boardKey]*boardEntry{}
		classes[e.shard] = m
	}
	m[k] = e
}

func (x shardIndex) remove(k boardKey, e *boardEntry) {
	day := e.shard.DayKey()
	classes := x[day]
	if m := classes[e.shard]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(classes, e.shard)
			if len(classes) == 0 {
				delete(x, day)
			}
		}
	}
}

// each calls visit with every group of records that may travel on topic
// k: a slot class's or lane's own group, every group of a day shard (or
// of the now shard), or, for version 1's topic, all.
func (x shardIndex) each(k shard.Key, visit func(shard.Key, map[boardKey]*boardEntry)) {
	if k.V1 {
		for _, classes := range x {
			for c, m := range classes {
				visit(c, m)
			}
		}
		return
	}
	classes := x[k.DayKey()]
	if k.IsClass() {
		k.Lane = ""
		if m := classes[k]; m != nil {
			visit(k, m)
		}
		return
	}
	for c, m := range classes {
		visit(c, m)
	}
}

// boardWant is what a board sync asks for: the records that travel on
// some topics (keys), or every record (all: version 1's request).
type boardWant struct {
	all  bool
	keys []shard.Key
	set  map[shard.Key]bool
	// name is the same for the same records wanted (the topics in any
	// order): the board keeps the order it serves under it. Empty: none
	// kept.
	name string
}

var wantAll = boardWant{all: true}

func wantTopics(keys []shard.Key, name string) boardWant {
	w := boardWant{keys: keys, set: map[shard.Key]bool{}, name: name}
	for _, k := range keys {
		if k.V1 {
			return boardWant{all: true, name: "*"}
		}
		w.set[k] = true
	}
	return w
}

// accepts reports whether a record of owner whose finest key is k travels
// on one of the wanted topics.
func (w boardWant) accepts(k shard.Key, owner peer.ID) bool {
	if w.all || w.set[k] {
		return true
	}
	for _, r := range w.keys {
		if r.Contains(k, []byte(owner)) {
			return true
		}
	}
	return false
}

// eachLocked calls visit with every record want may accept, each once
// (visit still asks accepts: a lane wants only some of its class's).
func (b *board) eachLocked(w boardWant, visit func(boardKey, *boardEntry)) {
	if w.all {
		for k, e := range b.entries {
			visit(k, e)
		}
		return
	}
	var seen map[shard.Key]bool // a group two wanted topics share is visited once
	if len(w.keys) > 1 {
		seen = map[shard.Key]bool{}
	}
	for _, r := range w.keys {
		b.byShard.each(r, func(c shard.Key, m map[boardKey]*boardEntry) {
			if seen != nil {
				if seen[c] {
					return
				}
				seen[c] = true
			}
			for k, e := range m {
				visit(k, e)
			}
		})
	}
}
