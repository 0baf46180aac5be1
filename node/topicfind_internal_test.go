package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestTopicFinderLANOnly: a LAN-only node has no DHT; its topic finder
// gives up at once instead of using the missing DHT (it would panic on
// its first look with a peer connected).
func TestTopicFinderLANOnly(t *testing.T) {
	h1, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	defer h2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h1.Connect(ctx, peer.AddrInfo{ID: h2.ID(), Addrs: h2.Addrs()}); err != nil {
		t.Fatal(err)
	}
	f := &topicFinder{log: slog.New(slog.DiscardHandler)}
	f.disc.Store(&discovery{host: h1, ctx: ctx, dialing: map[peer.ID]bool{}}) // LAN-only: no DHT
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.FindTopicPeers(ctx, "/tandem/offers/2/now", func() int { return 0 }, func() {})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a bound, not a wait: it returns within its first second
		t.Fatal("the finder kept running without a DHT")
	}
}
