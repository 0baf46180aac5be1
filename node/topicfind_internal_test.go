package node

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
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

// TestTopicFinderLocatesPeer: the finder's FindPeer (what the matcher asks
// for a partner it cannot reach at the addresses it knows) finds a peer
// that came back on a new port through a DHT peer both know; without a
// DHT it says so instead of looking.
func TestTopicFinderLocatesPeer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hubInfo := peer.AddrInfo{}
	// withDHT starts a host on a new port, with a DHT server that knows
	// the hub, and connects it to the hub.
	withDHT := func(opts ...libp2p.Option) (host.Host, *dht.IpfsDHT) {
		h, err := libp2p.New(append(opts, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(&network.NullResourceManager{}))...)
		if err != nil {
			t.Fatal(err)
		}
		var boot []peer.AddrInfo
		if hubInfo.ID != "" {
			boot = []peer.AddrInfo{hubInfo}
		}
		d, err := dht.New(h, dht.Mode(dht.ModeServer), dht.BootstrapPeers(boot...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close(); h.Close() })
		if hubInfo.ID != "" {
			if err := h.Connect(ctx, hubInfo); err != nil {
				t.Fatal(err)
			}
		}
		return h, d
	}
	hub, hubDHT := withDHT()
	hubInfo = peer.AddrInfo{ID: hub.ID(), Addrs: hub.Addrs()}
	a, aDHT := withDHT()
	bKey, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, bDHT := withDHT(libp2p.Identity(bKey))
	waitUntil := func(what string, cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
		}
	}
	waitUntil("the hub's routing table to hold a and b", func() bool { return hubDHT.RoutingTable().Size() >= 2 })
	// b goes away and comes back on a new port, with the same identity.
	oldAddrs := b.Addrs()
	bDHT.Close()
	b.Close()
	b, _ = withDHT(libp2p.Identity(bKey))
	waitUntil("the hub's DHT to list b again", func() bool {
		return hub.Network().Connectedness(b.ID()) == network.Connected && hubDHT.RoutingTable().Find(b.ID()) != ""
	})
	a.Network().ClosePeer(b.ID())
	a.Peerstore().ClearAddrs(b.ID())
	a.Peerstore().AddAddrs(b.ID(), oldAddrs, time.Hour) // all a knows of b

	f := &topicFinder{log: slog.New(slog.DiscardHandler)}
	if _, err := f.FindPeer(ctx, b.ID()); err == nil {
		t.Fatal("FindPeer without discovery answered")
	}
	f.disc.Store(&discovery{host: a, dht: aDHT, ctx: ctx, dialing: map[peer.ID]bool{}})
	// A lookup can miss (on loopback the first one often ends before it
	// has reached b), or answer with b's old address only (a DHT peer's
	// peerstore still holds it); the matcher then fails to dial and looks
	// again on its next retry, and so does this test.
	now := map[string]bool{}
	for _, m := range b.Addrs() {
		now[m.String()] = true
	}
	var ai peer.AddrInfo
	var lookups int
	waitUntil("a's finder to locate b at its new address", func() bool {
		lookups++
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		defer lcancel()
		ai, err = f.FindPeer(lctx, b.ID())
		return err == nil && ai.ID == b.ID() && slices.ContainsFunc(ai.Addrs, func(m multiaddr.Multiaddr) bool { return now[m.String()] })
	})
	t.Logf("located b after %d lookups", lookups)

	f.disc.Store(&discovery{host: a, ctx: ctx, dialing: map[peer.ID]bool{}}) // LAN-only
	if _, err := f.FindPeer(ctx, b.ID()); !errors.Is(err, errNoDHT) {
		t.Fatalf("LAN-only FindPeer: %v, want errNoDHT", err)
	}
}
