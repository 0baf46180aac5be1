package node

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// reserveACL records who asked the relay for a reservation.
type reserveACL struct{ from atomic.Value }

func (a *reserveACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	a.from.Store(p)
	return true
}
func (a *reserveACL) AllowConnect(peer.ID, ma.Multiaddr, peer.ID) bool { return true }

// A node whose addresses are all private reserves a relay slot on the
// first relay it connects to, without waiting for AutoNAT (which, on
// loopback, never decides: it probes public addresses only). Before the
// early relay the reservation never came.
func TestEarlyRelayReservesWithoutAutoNAT(t *testing.T) {
	relayHost, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer relayHost.Close()
	acl := &reserveACL{}
	r, err := relayv2.New(relayHost, relayv2.WithACL(acl))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, LowResources: true}
	h, hp, err := newHost(cfg, key, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { hp.close(); h.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: relayHost.ID(), Addrs: relayHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	// AutoNAT would not probe before 15 s; 40 s leaves room for a loaded machine.
	deadline := time.Now().Add(40 * time.Second)
	for acl.from.Load() != h.ID() {
		if time.Now().After(deadline) {
			t.Fatal("no relay reservation 40 s after connecting to a relay")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
