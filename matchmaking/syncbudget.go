package matchmaking

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
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
	total *rate.Limiter
	peers map[peer.ID]*rate.Limiter
	// slow holds a place for each refusal waiting (slowRefusal).
	slow chan struct{}
}

func newSyncBudget() *syncBudget {
	return &syncBudget{
		total: rate.NewLimiter(rate.Limit(syncBytesTotal)/60, syncBytesTotal),
		peers: map[peer.ID]*rate.Limiter{},
		slow:  make(chan struct{}, maxSlowRefusals),
	}
}

// grant returns how many reply bytes p may be sent now (0: refuse).
func (b *syncBudget) grant(p peer.ID, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.peers[p]
	if l == nil {
		if len(b.peers) >= maxSyncPeers {
			for q, ql := range b.peers {
				if ql.TokensAt(now) >= syncBytesPerPeer {
					delete(b.peers, q)
				}
			}
			if len(b.peers) >= maxSyncPeers {
				return 0
			}
		}
		l = rate.NewLimiter(rate.Limit(syncBytesPerPeer)/60, syncBytesPerPeer)
		b.peers[p] = l
	}
	n := int(min(l.TokensAt(now), b.total.TokensAt(now), MaxBoardResponse))
	if n < minBoardReply {
		return 0
	}
	return n
}

// spend charges n bytes sent to p.
func (b *syncBudget) spend(p peer.ID, n int, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.peers[p]; l != nil {
		l.ReserveN(now, n)
	}
	b.total.ReserveN(now, n)
}
