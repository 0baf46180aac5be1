package matchmaking

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Board sync replies are paid from byte budgets, one per requester and one
// for all requesters together: a 64-byte request must not buy a 1 MiB
// answer as often as a stranger likes (with a full board 16 requesters
// once took 42% of a core and 1 GB in 15 s). An honest node pulls a
// board when a peer joins the topic and one every SyncInterval from a
// random peer, so a full board per requester per minute is plenty.
const (
	// syncBytesPerPeer is what one requester may receive per minute.
	syncBytesPerPeer = MaxBoardResponse
	// syncBytesTotal is what all requesters together may receive per minute.
	syncBytesTotal = 8 * MaxBoardResponse
	// minBoardReply: with less budget left than this the request is
	// refused (the stream reset) rather than answered with a scrap.
	minBoardReply = 4 << 10
	// maxSyncPeers bounds the requesters tracked; only those whose budget
	// has refilled are forgotten.
	maxSyncPeers = 4096
	// refusalDelay is how long a request over budget waits before it is
	// refused, and maxSlowRefusals how many wait at once (the others are
	// refused at once). A refusal that came at once invited the next
	// request at once: 16 requesters asking in a loop made 2,800 requests
	// a second, each a stream to set up, and took 40% of a core of the
	// victim though every one was refused. Waiting paces a requester that
	// asks again as soon as it hears to one request a second; an honest
	// node pulls in the background and loses nothing by it.
	refusalDelay    = time.Second
	maxSlowRefusals = 64
	// maxQueuedPulls bounds the requests of one peer waiting for their
	// turn (turn), and maxQueuedTotal those of all peers (each holds a
	// stream and a goroutine; many identities must not pile them up);
	// more are refused at once.
	maxQueuedPulls = maxBoardTopics
	maxQueuedTotal = 4 * maxSlowRefusals
)

// slowRefusal waits refusalDelay (real time: it paces a socket) before a
// board request over budget is refused, unless maxSlowRefusals are
// waiting already or the service is stopping.
func (s *Service) slowRefusal() {
	select {
	case s.syncBudget.slow <- struct{}{}:
	default:
		return
	}
	defer func() { <-s.syncBudget.slow }()
	t := time.NewTimer(refusalDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

type syncBudget struct {
	mu    sync.Mutex
	total *byteBucket
	peers map[peer.ID]*byteBucket
	// slow holds a place for each refusal waiting (slowRefusal).
	slow chan struct{}
	// turns: the requests of one peer are answered one at a time (turn);
	// queued counts the requests of all peers in turns.
	turns  map[peer.ID]*peerTurn
	queued int
}

// peerTurn is one peer's queue of board requests: ch holds the one being
// answered, users counts it and those waiting.
type peerTurn struct {
	ch    chan struct{}
	users int
}

// byteBucket is a token bucket of bytes: up to burst, refilled at perMin
// a minute. Unlike rate.Limiter it takes back what a grant did not use.
type byteBucket struct {
	tokens, burst, perMin float64
	last                  time.Time
}

func newByteBucket(perMin float64, now time.Time) *byteBucket {
	return &byteBucket{tokens: perMin, burst: perMin, perMin: perMin, last: now}
}

// at returns the tokens at now (refilled since last).
func (k *byteBucket) at(now time.Time) float64 {
	if now.After(k.last) {
		k.tokens = min(k.burst, k.tokens+now.Sub(k.last).Minutes()*k.perMin)
		k.last = now
	}
	return k.tokens
}

func (k *byteBucket) take(n float64, now time.Time) {
	k.at(now)
	k.tokens -= n
}

func newSyncBudget() *syncBudget {
	return &syncBudget{
		total: newByteBucket(syncBytesTotal, time.Now()),
		peers: map[peer.ID]*byteBucket{},
		slow:  make(chan struct{}, maxSlowRefusals),
		turns: map[peer.ID]*peerTurn{},
	}
}

// turn waits until no other request of p is being answered, and returns
// the function that ends this one's turn; false if p already has
// maxQueuedPulls requests queued (all peers maxQueuedTotal) or ctx ends
// first. A grant charges the whole budget left until settle gives back
// what the reply did not use, so without turns a node that joins many
// topics at once (the calendar joins 46 shards) and pulls each from the
// same peer had all its pulls but one refused.
func (b *syncBudget) turn(ctx context.Context, p peer.ID) (func(), bool) {
	b.mu.Lock()
	t := b.turns[p]
	if t == nil {
		t = &peerTurn{ch: make(chan struct{}, 1)}
		b.turns[p] = t
	}
	if t.users >= maxQueuedPulls || b.queued >= maxQueuedTotal {
		if t.users == 0 {
			delete(b.turns, p)
		}
		b.mu.Unlock()
		return nil, false
	}
	t.users++
	b.queued++
	b.mu.Unlock()
	leave := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.queued--
		if t.users--; t.users == 0 {
			delete(b.turns, p)
		}
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; leave() }, true
	case <-ctx.Done():
		leave()
		return nil, false
	}
}

// grant returns how many reply bytes p may be sent now (0: refuse), and
// charges them at once: a request being answered has its bytes counted
// while it is written, so requests opened all at once share one budget
// (charged only once written, 16 streams opened at once were each granted
// the whole budget and got 16 boards). settle then gives back what the
// reply did not use.
func (b *syncBudget) grant(p peer.ID, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.peers[p]
	if l == nil {
		if len(b.peers) >= maxSyncPeers {
			for q, ql := range b.peers {
				if ql.at(now) >= syncBytesPerPeer {
					delete(b.peers, q)
				}
			}
			if len(b.peers) >= maxSyncPeers {
				return 0
			}
		}
		l = newByteBucket(syncBytesPerPeer, now)
		b.peers[p] = l
	}
	n := int(min(l.at(now), b.total.at(now), MaxBoardResponse))
	if n < minBoardReply {
		return 0
	}
	l.take(float64(n), now)
	b.total.take(float64(n), now)
	return n
}

// settle records that a reply granted granted bytes took n: the rest is
// given back.
func (b *syncBudget) settle(p peer.ID, granted, n int, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	back := float64(max(granted-n, 0))
	if l := b.peers[p]; l != nil {
		l.take(-back, now)
		l.tokens = min(l.tokens, l.burst)
	}
	b.total.take(-back, now)
	b.total.tokens = min(b.total.tokens, b.total.burst)
}
