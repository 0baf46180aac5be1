package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

func bookingsOf(t *testing.T, dir string) []apiv1.Booking {
	t.Helper()
	out, errOut, code := run(t, "bookings", "--json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("bookings: %s", errOut)
	}
	var bs []apiv1.Booking
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		t.Fatalf("bookings --json: %v\n%s", err, out)
	}
	return bs
}

func loopbackTCPAddr(t *testing.T, dir string) string {
	t.Helper()
	out, _, code := run(t, "status", "--json", "--data-dir", dir)
	var st apiv1.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: %s", out)
	}
	for _, a := range st.Addrs {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("no loopback TCP address in %v", st.Addrs)
	return ""
}

// Two real binaries book the same slot; one is killed with SIGKILL right
// after booking (before, during or after the negotiation) and restarted on
// its data dir. Whatever the interleaving, both end up holding the same
// match, and the identity and the booking survive the kill.
func TestMatchSurvivesSIGKILL(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startUp(t, dirA)
	addrA := loopbackTCPAddr(t, dirA)
	upB := append(localOnlyUp(dirB)[1:], "--peer", addrA)
	b := startUp(t, dirB, upB...)
	idA, idB := a.peerID(t), b.peerID(t)

	at := time.Now().Add(3 * time.Hour).Truncate(15 * time.Minute).Format(time.RFC3339)
	for _, dir := range []string{dirA, dirB} {
		if _, errOut, code := run(t, "book", "--at", at, "--duration", "25", "--data-dir", dir); code != 0 {
			t.Fatalf("book: %s", errOut)
		}
	}
	b.signal(t, syscall.SIGKILL)
	booked := bookingsOf(t, dirA)

	b = startUp(t, dirB, upB...)
	if got := b.peerID(t); got != idB {
		t.Fatalf("peer ID after SIGKILL = %s, want %s", got, idB)
	}
	var ba, bb apiv1.Booking
	defer func() {
		if t.Failed() {
			t.Logf("A's booking: %+v", ba)
			t.Logf("B's booking: %+v", bb)
		}
	}()
	settleStart := time.Now()
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		as, bs := bookingsOf(t, dirA), bookingsOf(t, dirB)
		if len(as) != 1 || len(bs) != 1 {
			t.Fatalf("bookings after restart: A %d, B %d (want 1 each)", len(as), len(bs))
		}
		ba, bb = as[0], bs[0]
		return ba.Confirmed && bb.Confirmed
	}, "both sides to settle the match")
	t.Logf("settled %v after the restart", time.Since(settleStart).Round(time.Millisecond))
	if ba.ID != booked[0].ID {
		t.Fatalf("A's booking changed: %s -> %s", booked[0].ID, ba.ID)
	}
	if ba.State != "matched" || bb.State != "matched" || ba.Partner != idB || bb.Partner != idA ||
		ba.PartnerBooking != bb.ID || bb.PartnerBooking != ba.ID {
		t.Fatalf("one-sided or crossed match:\nA: %+v\nB: %+v", ba, bb)
	}
	a.stop(t)
	b.stop(t)
}
