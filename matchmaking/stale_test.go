package matchmaking

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// A re-announcement that read its booking before a Cancel must not reach
// the boards after the Cancel's withdrawal with a higher seq: the
// cancelled offer would come back and be proposed to. (Seen as
// TestSeqSurvivesClockSetBack failing under load: the start-up announce of
// the open offer overtook the Cancel's withdrawal.)
func TestStaleAnnouncementDoesNotOvertakeWithdrawal(t *testing.T) {
	var armed atomic.Bool
	var once sync.Once
	paused, resume, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	// Once armed, a re-announcement of the open offer stops right after it
	// read the booking, until the Cancel's withdrawal is on the watcher's
	// board.
	hook := func(p string) {
		if armed.Load() && p == "announce "+string(StateSearching) {
			once.Do(func() { close(paused); <-resume })
		}
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	owner := startTestNode(&testNode{t: t, key: key, dir: t.TempDir(), hook: hook})
	watcher := newTestNode(t, nil)
	watcher.view()
	connect(t, owner, watcher)
	slot := nextSlot(3 * time.Hour)
	b := owner.book(t, BookRequest{At: slot, DurationMin: 50})
	onBoard := func(id string) bool {
		for _, o := range watcher.svc.Board(time.Time{}, time.Time{}) {
			if o.BookingID == id {
				return true
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, "the offer on the watcher's board", func() bool { return onBoard(b.ID) })

	armed.Store(true)
	stale := owner.booking(b.ID)
	go func() {
		defer close(done)
		owner.svc.announce(owner.svc.ctx, stale)
	}()
	<-paused
	if _, err := owner.svc.Cancel(context.Background(), b.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the withdrawal on the watcher's board", func() bool { return !onBoard(b.ID) })
	close(resume)
	<-done

	// A later offer of the same owner on the same topic arrives after
	// whatever the stale announcement sent.
	later := owner.book(t, BookRequest{At: slot.Add(Grid), DurationMin: 50})
	waitFor(t, 10*time.Second, "the later offer on the watcher's board", func() bool { return onBoard(later.ID) })
	if onBoard(b.ID) {
		t.Fatal("the cancelled offer is back on the watcher's board: a stale announcement outranked its withdrawal")
	}
}
