package matchmaking

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// A booking held exclusively answers another proposer "busy" with how
// long the hold keeps it (Reject.retry_ms), so that proposer comes back
// as the window ends instead of after its 30-60 ms busy backoff.
func TestBusySaysWhenToComeBack(t *testing.T) {
	q := newTestNode(t, func(cfg *Config) { cfg.HoldTimeout = 20 * time.Second })
	window := q.svc.maxExclusive() // 5 s: room for a slow machine between the two proposals
	q.svc.mu.Lock()
	q.svc.noteConfirmDelayLocked("earlier-partner", window)
	q.svc.mu.Unlock()
	b := q.book(t, BookRequest{At: nextSlot(3 * time.Hour), DurationMin: 25})
	target := q.svc.offerFor(b, time.Now())
	s := newSybils(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !s[0].hold(ctx, t, q, target) {
		t.Fatal("the first proposal was not accepted")
	}
	reply, _ := s[1].proposeRaw(t, q, target, "second", s[1].offerLike(t, target, "second"), false)
	rej := reply.GetReject()
	if rej.GetReason() != reasonBusy {
		t.Fatalf("a proposal to a booking held exclusively got %v, want busy", reply)
	}
	if got := time.Duration(rej.GetRetryMs()) * time.Millisecond; got <= 0 || got > window {
		t.Fatalf("busy says come back in %v, want within the exclusive window (%v)", got, window)
	}
}

// A proposer takes a hint shorter than its busy backoff, once per offer
// in two busy backoffs, and waits the backoff otherwise.
func TestBusyHintTakenOnce(t *testing.T) {
	n := newTestNode(t, nil)
	e := &boardEntry{owner: peer.ID("owner"), offer: &pb.Offer{BookingId: "b"}}
	if d := n.svc.takeBusyHint(e, 0); d != 0 {
		t.Fatalf("no hint: wait %v, want the busy backoff (0)", d)
	}
	if d := n.svc.takeBusyHint(e, uint32(busyBackoff.Milliseconds())); d != 0 {
		t.Fatalf("a hint as long as the backoff: wait %v, want the backoff (0)", d)
	}
	if d := n.svc.takeBusyHint(e, 8); d < 8*time.Millisecond || d > 11*time.Millisecond {
		t.Fatalf("a hint of 8 ms: wait %v, want 8-11 ms", d)
	}
	if d := n.svc.takeBusyHint(e, 8); d != 0 {
		t.Fatalf("a second hint of the same offer at once: wait %v, want the backoff (0)", d)
	}
	other := &boardEntry{owner: peer.ID("owner"), offer: &pb.Offer{BookingId: "c"}}
	if d := n.svc.takeBusyHint(other, 8); d == 0 {
		t.Fatal("another offer's hint was not taken")
	}
}
