package session

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/webrtc/v4"
)

// ICE server names are resolved aside: a PeerConnection gets addresses,
// never a name pion would look up (and wait for on Close), and no server
// whose name does not resolve.
func TestICEResolverUsesResolvedAddressesOnly(t *testing.T) {
	servers := []webrtc.ICEServer{
		{URLs: []string{"stun:stun.example.org:19302", "stun:198.51.100.7:3478", "stun:down.example.org"}},
		{URLs: []string{"turn:turn.example.org:3478?transport=udp"}, Username: "u", Credential: "p"},
		{URLs: []string{"turns:tls.example.org:5349"}},
		{URLs: []string{"stun:v6.example.org:3478"}},
	}
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "stun.example.org":
			return []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("203.0.113.9")}, nil
		case "turn.example.org":
			return []netip.Addr{netip.MustParseAddr("203.0.113.10")}, nil
		case "v6.example.org":
			return []netip.Addr{netip.MustParseAddr("2001:db8::2")}, nil
		}
		return nil, errors.New("no such host")
	}
	r := newICEResolver(servers, lookup)
	if got := r.current(); len(got) != 2 || !slices.Equal(got[0].URLs, []string{"stun:198.51.100.7:3478"}) ||
		!slices.Equal(got[1].URLs, []string{"turns:tls.example.org:5349"}) {
		t.Fatalf("before any lookup: %+v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one round, then stop
	r.run(ctx)
	got := r.current()
	want := [][]string{
		{"stun:203.0.113.9:19302", "stun:198.51.100.7:3478"},
		{"turn:203.0.113.10:3478?transport=udp"},
		{"turns:tls.example.org:5349"},
		{"stun:[2001:db8::2]:3478"},
	}
	if len(got) != len(want) {
		t.Fatalf("servers = %+v", got)
	}
	for i := range want {
		if !slices.Equal(got[i].URLs, want[i]) {
			t.Errorf("server %d = %q, want %q", i, got[i].URLs, want[i])
		}
	}
	if got[1].Username != "u" || got[1].Credential != "p" {
		t.Errorf("TURN credentials lost: %+v", got[1])
	}
}
