package matchmaking

// Relay duty, paced. A node that joins a shard pulls every peer's board
// of it, and every reply may carry 1 MiB of sealed records (some 1,300),
// each of which costs a signature check and a stamp hash to store. Those
// checks, made as the replies came, took the CPU the joining node needed
// for its own match: under a sealed flood a late invitee that had the
// record it waited for at once still matched several times slower than
// without the flood, much of the difference being the thousands of relay
// records it checked meanwhile (TestAttackSealedFlood; with them skipped
// outright, measured, about half the delay went). So a board sync reply's
// sealed records are split: those of a peer our private bookings wait
// for are checked and opened at once (mergeSealed); the rest, relay duty
// (records kept only to serve on, or an invitation from a peer we do not
// wait for), wait in a bounded queue that one goroutine checks at
// relayCheckRate. What does not fit is dropped: a later pull brings it
// again, and gossip brings new records anyway.

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

const (
	// relayCheckRate and relayCheckBurst pace the checks of queued
	// records: 500 a second is some 10% of a core here (a check is
	// 150-250 us on the loaded 2-core test machine), and a full sealed
	// board (5000) in 10 s.
	relayCheckRate  = 500
	relayCheckBurst = 32
	// relayPeekRate bounds the cheap look at a queued record (is it
	// news, is there room for it) that decides whether it is checked.
	relayPeekRate = 10 * relayCheckRate
	// maxSealedQueue bounds the queue: a sealed board's worth, of which
	// one forwarder may fill what the board would take from it.
	maxSealedQueue = maxBoard
)

type queuedSealed struct {
	env  []byte
	from peer.ID
}

// sealedQueue is the queue of relay-duty records from board syncs.
type sealedQueue struct {
	mu      sync.Mutex
	items   []queuedSealed
	perFrom map[peer.ID]int
	wake    chan struct{}
}

func newSealedQueue() *sealedQueue {
	return &sealedQueue{perFrom: map[peer.ID]int{}, wake: make(chan struct{}, 1)}
}

// push queues what fits and reports how many it dropped.
func (q *sealedQueue) push(envs [][]byte, from peer.ID) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	dropped := 0
	for _, env := range envs {
		if len(q.items) >= maxSealedQueue || q.perFrom[from] >= maxPerForwarder {
			dropped++
			continue
		}
		q.items = append(q.items, queuedSealed{env, from})
		q.perFrom[from]++
	}
	if len(envs) > dropped {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return dropped
}

func (q *sealedQueue) pop() (queuedSealed, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return queuedSealed{}, false
	}
	it := q.items[0]
	q.items[0] = queuedSealed{}
	q.items = q.items[1:]
	if q.perFrom[it.from]--; q.perFrom[it.from] <= 0 {
		delete(q.perFrom, it.from)
	}
	return it, true
}

func (q *sealedQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// mergeSealedReply takes the sealed records of a board sync reply from
// p: those of peers our private bookings wait for now, the rest through
// the queue. A record of an awaited peer carries that peer's public key
// (its signer's, in the envelope), so a byte search finds the candidates
// without decoding a thousand records on the joining node's hot path;
// each candidate is then checked in full, and one that only contains the
// key (forged or junk) fails that check and counts against p.
func (s *Service) mergeSealedReply(envs [][]byte, from peer.ID) {
	var keys [][]byte
	for p := range s.awaitedPeers() {
		if pk, err := p.ExtractPublicKey(); err == nil {
			if raw, err := pk.Raw(); err == nil {
				keys = append(keys, raw)
			}
		}
	}
	var urgent, later [][]byte
	for _, env := range envs {
		if slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Contains(env, k) }) {
			urgent = append(urgent, env)
		} else {
			later = append(later, env)
		}
	}
	if len(urgent) > 0 {
		s.mergeSealed(urgent, from)
	}
	if n := s.sealedQ.push(later, from); n > 0 {
		s.log.Debug("relay queue full: sealed records dropped", "from", from, "dropped", n)
	}
}

// relayLoop checks the queued records, paced (real time: it bounds CPU).
func (s *Service) relayLoop(ctx context.Context) {
	lim := rate.NewLimiter(relayCheckRate, relayCheckBurst)
	peeks := rate.NewLimiter(relayPeekRate, relayCheckBurst)
	for {
		it, ok := s.sealedQ.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.sealedQ.wake:
			}
			continue
		}
		if err := peeks.Wait(ctx); err != nil {
			return
		}
		if s.skipsSealed(it.env, it.from, s.now(), s.awaitedPeers()) {
			continue // the board got it meanwhile, or has no room: no check to pay
		}
		if err := lim.Wait(ctx); err != nil {
			return
		}
		s.mergeSealed([][]byte{it.env}, it.from)
	}
}

// relayIdle reports whether the relay queue is empty (tests).
func (s *Service) relayIdle() bool { return s.sealedQ.len() == 0 }
