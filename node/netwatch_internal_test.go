package node

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// watchAddrs reports a change of the machine's addresses once per change,
// ignoring loopback, link-local addresses and failed reads.
func TestWatchAddrs(t *testing.T) {
	var mu sync.Mutex
	cur := []string{"127.0.0.1/8", "192.168.1.20/24", "fe80::1/64"}
	fail := false
	addrs := func() ([]net.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return nil, net.UnknownNetworkError("x")
		}
		var out []net.Addr
		for _, c := range cur {
			ip, n, _ := net.ParseCIDR(c)
			n.IP = ip
			out = append(out, n)
		}
		return out, nil
	}
	set := func(f bool, a ...string) {
		mu.Lock()
		cur, fail = a, f
		mu.Unlock()
	}
	tick := make(chan time.Time)
	changes := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchAddrs(ctx, addrs, tick, func(was, now string) { changes <- was + " -> " + now })
	}()
	step := func() { tick <- time.Time{} }

	step() // nothing changed
	set(false, "127.0.0.1/8", "192.168.1.20/24", "fe80::2/64")
	step() // only link-local changed
	set(true)
	step() // unreadable
	set(false, "127.0.0.1/8", "10.0.0.7/8")
	step() // Wi-Fi to cable
	step()
	cancel()
	<-done
	close(changes)
	var got []string
	for c := range changes {
		got = append(got, c)
	}
	if len(got) != 1 || got[0] != "192.168.1.20 -> 10.0.0.7" {
		t.Fatalf("changes seen: %q, want one: 192.168.1.20 -> 10.0.0.7", got)
	}
}
