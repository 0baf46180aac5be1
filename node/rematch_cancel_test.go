package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// sessionLog records, per node, which matches (booking|partner booking)
// have had a session event handled by the node. The node publishes a
// session event after acting on it, and a booking's sessions emit their
// events in order, so the first event of a new match's session means the
// end of the previous match's session has been dealt with.
type sessionLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

func followSessions(t *testing.T, n *node.Node) *sessionLog {
	l := &sessionLog{seen: map[string]bool{}}
	ch, unsubscribe := node.Subscribe(n)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			var ev apiv1.Event
			select {
			case <-quit:
				return
			case ev = <-ch:
			}
			if ev.Type != apiv1.EventSession {
				continue
			}
			var se struct {
				Booking        string `json:"booking"`
				PartnerBooking string `json:"partner_booking"`
			}
			if json.Unmarshal(ev.Data, &se) == nil {
				l.mu.Lock()
				l.seen[se.Booking+"|"+se.PartnerBooking] = true
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		unsubscribe()
		close(quit)
		<-done
	})
	return l
}

func (l *sessionLog) has(booking, partnerBooking string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[booking+"|"+partnerBooking]
}

// Five nodes book one slot: two pairs and a spare. One matched node
// cancels; its partner P goes back to searching and is matched with the
// spare within a second or two. The session of the cancelled match ends
// meanwhile, and that must not end P's new match ("done, session ended
// early", hours before the slot, leaving the spare one-sided). After each
// round the node that cancelled books the slot again and is the next
// spare, so one set of nodes plays the story many times. None may be
// lost.
func TestCancelAndQuickRematchKeepsTheNewMatch(t *testing.T) {
	slots, rounds := 1, 50
	if testing.Short() {
		slots, rounds = 1, 5
	}
	clock := &nodetest.Clock{}
	var nodes []*node.Node
	var logs []*sessionLog
	for i := range 5 {
		cfg := nodetest.Config(t)
		cfg.Now = clock.Now
		if i > 0 {
			nodetest.Link(t, &cfg, nodes[0])
		}
		n := nodetest.Start(t, cfg)
		nodes = append(nodes, n)
		logs = append(logs, followSessions(t, n))
	}
	// Slots 30 minutes apart, so a node's 25-minute bookings never overlap,
	// and hours ahead: no session reaches its lobby.
	base := clock.Now().Add(3 * time.Hour).Truncate(15 * time.Minute)
	var mu sync.Mutex
	var failures []string
	played, lost := 0, 0
	var wg sync.WaitGroup
	for r := range slots {
		wg.Go(func() {
			n, err := cancelAndRematch(nodes, logs, base.Add(time.Duration(r)*30*time.Minute), rounds, r)
			mu.Lock()
			defer mu.Unlock()
			played += n
			if err != nil {
				played++
				lost++
				failures = append(failures, fmt.Sprintf("slot %d, round %d: %v", r, n+1, err))
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d of %d rounds lost (a slot stops at its first loss)", lost, played)
}

// roundGap paces the rounds of one slot (see cancelAndRematch).
const roundGap = 800 * time.Millisecond

// cancelAndRematch plays the story rounds times on the slot at; it returns
// how many rounds went well before the first that did not.
func cancelAndRematch(nodes []*node.Node, logs []*sessionLog, at time.Time, rounds, seed int) (int, error) {
	ctx := context.Background()
	ids := make([]string, len(nodes))
	book := func(i int) error {
		b, err := nodes[i].Matchmaking().Book(ctx, matchmaking.BookRequest{At: at, DurationMin: 25})
		if err != nil {
			return fmt.Errorf("booking on node %d: %w", i, err)
		}
		ids[i] = b.ID
		return nil
	}
	for i := range nodes {
		if err := book(i); err != nil {
			return 0, err
		}
	}
	get := func(i int) matchmaking.Booking {
		b, _ := nodes[i].Matchmaking().Booking(ids[i])
		return b
	}
	index := func(id string) int {
		for i, n := range nodes {
			if n.ID().String() == id {
				return i
			}
		}
		return -1
	}
	// Rounds start at most every roundGap: each costs its nodes about
	// five offer records, and peers rate limit each node's gossip (20 at
	// once, then 2 a second). Faster rounds have offers dropped and wait
	// for re-announcements, which is not what this test is about.
	pace := time.NewTicker(roundGap)
	defer pace.Stop()
	for round := range rounds {
		if round > 0 {
			<-pace.C
		}
		// Two confirmed pairs whose sessions are open, and one spare.
		var matched []int
		spare := -1
		err := poll(30*time.Second, func() bool {
			matched, spare = matched[:0], -1
			for i := range nodes {
				b := get(i)
				switch {
				case b.State == matchmaking.StateSearching && spare < 0:
					spare = i
				case b.State == matchmaking.StateMatched && b.Confirmed:
					if s, ok := nodes[i].Sessions().Get(ids[i]); !ok || s.Partner().String() != b.Partner {
						return false
					}
					matched = append(matched, i)
				default:
					return false
				}
			}
			return spare >= 0 && len(matched) == 4
		})
		if err != nil {
			return round, fmt.Errorf("two pairs and a spare: %w", err)
		}
		canceller := matched[(seed+round)%len(matched)]
		p := index(get(canceller).Partner)
		if _, err := nodes[canceller].Matchmaking().Cancel(ctx, ids[canceller], "plans changed"); err != nil {
			return round, fmt.Errorf("cancelling: %w", err)
		}
		// P and the spare match; each opens the new match's session, which
		// (see sessionLog) comes after the old session of P has ended and
		// been handled.
		var lost error
		err = poll(30*time.Second, func() bool {
			bp, bs := get(p), get(spare)
			if bp.State == matchmaking.StateDone || bp.State == matchmaking.StateCancelled {
				lost = fmt.Errorf("P's booking is %s (%q) hours before its start", bp.State, bp.Note)
				return true
			}
			return bp.State == matchmaking.StateMatched && bp.PartnerBooking == ids[spare] &&
				bs.State == matchmaking.StateMatched && bs.PartnerBooking == ids[p] &&
				logs[p].has(ids[p], ids[spare]) && logs[spare].has(ids[spare], ids[p])
		})
		if lost != nil {
			return round, lost
		}
		if err != nil {
			onBoard := func(i, j int) bool {
				for _, o := range nodes[i].Matchmaking().Board(time.Time{}, time.Time{}) {
					if o.BookingID == ids[j] {
						return true
					}
				}
				return false
			}
			return round, fmt.Errorf("P %+v and the spare %+v to be matched with their sessions open (P's offer on the spare's board: %v, the spare's on P's: %v, P<spare: %v): %w",
				get(p), get(spare), onBoard(spare, p), onBoard(p, spare), nodes[p].ID() < nodes[spare].ID(), err)
		}
		if bp := get(p); bp.State != matchmaking.StateMatched || bp.PartnerBooking != ids[spare] {
			return round, fmt.Errorf("P's booking is %s (%q) once the old session ended", bp.State, bp.Note)
		}
		for _, i := range []int{p, spare} {
			s, ok := nodes[i].Sessions().Get(ids[i])
			if b := get(i); !ok || s.Partner().String() != b.Partner {
				return round, fmt.Errorf("node %d has no session with its new partner", i)
			}
		}
		// The node that cancelled is the next round's spare.
		if err := book(canceller); err != nil {
			return round + 1, err
		}
	}
	return rounds, nil
}

// poll is WaitFor for goroutines other than the test's.
func poll(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		<-tick.C
	}
	return nil
}
