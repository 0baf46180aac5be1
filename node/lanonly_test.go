package node

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// A LAN-only node's settings and options reach nothing beyond the LAN: no
// bootstrap peers and no DHT, no public STUN, no UPnP, mDNS on, and a
// connection gater that refuses public addresses. Checked on the config,
// on the discovery it builds and on a real host (on loopback, without
// multicast: mDNS is built but never started here).
func TestLANOnlyDialsOnlyTheLAN(t *testing.T) {
	cfg := Default()
	cfg.DataDir, cfg.LANOnly, cfg.MDNS = t.TempDir(), true, false
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lan, err := cfg.withLANOnly()
	if err != nil {
		t.Fatal(err)
	}
	if !lan.MDNS || !lan.bootstrapNone() || lan.usesPublicDHT() || lan.wantsPortMap() || len(lan.iceServers()) != 0 {
		t.Fatalf("LAN-only config: mdns=%v bootstrap=%v publicDHT=%v portmap=%v ice=%v",
			lan.MDNS, lan.Bootstrap, lan.usesPublicDHT(), lan.wantsPortMap(), lan.iceServers())
	}
	if len(Default().iceServers()) == 0 {
		t.Fatal("the default node has no STUN server: the check above proves nothing")
	}
	for _, bad := range []func(*Config){
		func(c *Config) {
			c.Bootstrap = []string{"/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWGzN8e3PmGbyAkGL3uGD7CBqXmpnsBCGhp1Z5X9Fb1pj3"}
		},
		func(c *Config) { c.ICEServers = []ICEServer{{URLs: []string{"stun:stun.example.org:3478"}}} },
	} {
		c := cfg
		bad(&c)
		if err := c.Validate(); !errors.Is(err, errLANOnlyConflict) {
			t.Errorf("LAN-only with a setting beyond the LAN: %v, want a clear refusal", err)
		}
	}

	g := lanGater{}
	for addr, want := range map[string]bool{
		"/ip4/192.168.1.20/tcp/4001": true, "/ip4/10.1.2.3/udp/4001/quic-v1": true,
		"/ip4/127.0.0.1/tcp/4001": true, "/ip6/fe80::1/tcp/4001": true,
		"/ip4/8.8.8.8/tcp/4001": false, "/ip6/2001:4860:4860::8888/tcp/4001": false,
		"/dns4/bootstrap.libp2p.io/tcp/4001": false,
	} {
		if got := g.InterceptAddrDial("", ma.StringCast(addr)); got != want {
			t.Errorf("gater lets a dial to %s through: %v, want %v", addr, got, want)
		}
	}

	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lan.Listen, lan.LowResources = []string{"/ip4/127.0.0.1/tcp/0"}, true
	h, hp, err := newHost(lan, key, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { hp.close(); h.Close() }()
	other, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	pid, _ := peer.IDFromPrivateKey(other)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = h.Connect(ctx, peer.AddrInfo{ID: pid, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/8.8.8.8/tcp/4001")}})
	if err == nil || !strings.Contains(err.Error(), "gater") {
		t.Fatalf("dialling a public address: %v; want the gater to refuse it before any packet", err)
	}

	d, err := newDiscovery(ctx, lan, h, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.dht != nil || len(d.bootstrap) != 0 || d.mdns == nil {
		t.Fatalf("LAN-only discovery: dht=%v bootstrap=%d mdns=%v; want mDNS alone", d.dht != nil, len(d.bootstrap), d.mdns != nil)
	}
	if st := d.status(); !st.LANOnly || !st.MDNS || st.PublicDHT {
		t.Fatalf("discovery status %+v", st)
	}
}
