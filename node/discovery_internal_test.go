package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	ma "github.com/multiformats/go-multiaddr"
)

// TestShareAddrsOrder: the addresses worth sharing come first: public,
// then LAN, then relayed, then loopback and link-local. (A host that
// listens nowhere and claims these addresses.)
func TestShareAddrsOrder(t *testing.T) {
	claimed := []string{
		"/ip4/127.0.0.1/tcp/4001",
		"/ip6/fe80::1/tcp/4001",
		"/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWGRUVh9n6bqP9nBWGwbdqyxiCnF5DxYvYa9MtJFHY5yVU/p2p-circuit",
		"/ip4/192.168.1.20/tcp/4001",
		"/ip4/5.6.7.8/udp/4001/quic-v1",
		"/ip4/10.0.0.3/tcp/4001",
		"/ip4/5.6.7.8/tcp/4001",
	}
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range claimed {
			out = append(out, ma.StringCast(s))
		}
		return out
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Within a kind the host's own order stays.
	kind := map[string]string{
		claimed[4]: "public", claimed[6]: "public", claimed[3]: "LAN", claimed[5]: "LAN",
		claimed[2]: "relay", claimed[0]: "local", claimed[1]: "local",
	}
	var kinds []string
	for _, a := range shareAddrs(h) {
		base, ok := strings.CutSuffix(a, "/p2p/"+h.ID().String())
		if !ok || kind[base] == "" {
			t.Fatalf("share addr %q: not one of the host's", a)
		}
		kinds = append(kinds, kind[base])
	}
	if want := []string{"public", "public", "LAN", "LAN", "relay", "local", "local"}; !slices.Equal(kinds, want) {
		t.Errorf("share addrs by kind: %v, want %v", kinds, want)
	}
}

func TestShortErr(t *testing.T) {
	multi := errors.New("failed to dial 12D3KooW...:\n  * [/ip4/127.0.0.1/udp/1/quic-v1] dial backoff\n  * [/ip4/127.0.0.1/tcp/1] dial tcp4 127.0.0.1:1: connect: connection refused")
	backoff := errors.New("failed to dial 12D3KooW...:\n  * [/ip4/127.0.0.1/tcp/1] dial backoff")
	for err, want := range map[error]string{
		multi:   "dial tcp4 127.0.0.1:1: connect: connection refused",
		backoff: errBackoffMsg,
		fmt.Errorf("dial: %w", context.DeadlineExceeded): "no answer in time",
		errors.New(strings.Repeat("x", 300)):             strings.Repeat("x", 200) + "…",
	} {
		if got := shortErr(err); got != want {
			t.Errorf("shortErr(%q) = %q, want %q", err, got, want)
		}
	}
}
