package node_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// unreachableSTUN stands in for the public STUN server a node that is not
// local-only uses: nothing answers there, as nothing answers on a machine
// without internet, and no packet leaves the machine.
const unreachableSTUN = "stun:127.0.0.1:9"

// withIdentity gives cfg's node a fresh key whose peer ID is below (low)
// or above every ID in others, so a test picks which side offers (the
// lower peer ID does).
func identityOrdered(t *testing.T, cfg *node.Config, than peer.ID, low bool) {
	t.Helper()
	for {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if (id < than) != low {
			continue
		}
		data, err := crypto.MarshalPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "identity.key"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
}

func loopbackTCP(t *testing.T, n *node.Node) string {
	t.Helper()
	for _, a := range n.Addrs() {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("node %s has no loopback TCP address", n.ID())
	return ""
}

// Two nodes on one machine meet in a session whatever mix of settings
// they were started with: local-only or bootstrapped from the other,
// listening on 127.0.0.1 or on every interface, offering or answering.
func TestSessionConnectsForEveryMixOfSettings(t *testing.T) {
	type side struct {
		bootstrap bool // --bootstrap <the other> instead of --bootstrap none --no-mdns
		anyAddr   bool // listen on 0.0.0.0 instead of 127.0.0.1
	}
	cases := []struct {
		name string
		a, b side
	}{
		{"local+local", side{}, side{}},
		{"local+bootstrap", side{}, side{bootstrap: true}},
		{"local+bootstrap-anyaddr", side{}, side{bootstrap: true, anyAddr: true}},
		{"local-anyaddr+bootstrap", side{anyAddr: true}, side{bootstrap: true}},
		{"local-anyaddr+local", side{anyAddr: true}, side{}},
	}
	for _, c := range cases {
		for _, aOffers := range []bool{true, false} {
			name := c.name + "/a-answers"
			if aOffers {
				name = c.name + "/a-offers"
			}
			t.Run(name, func(t *testing.T) {
				clock := &nodetest.Clock{}
				cfg := func(s side) node.Config {
					cfg := nodetest.Config(t)
					cfg.Now = clock.Now
					if s.anyAddr {
						cfg.Listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
					}
					return cfg
				}
				cfgA := cfg(c.a)
				a := nodetest.Start(t, cfgA)
				cfgB := cfg(c.b)
				if c.b.bootstrap {
					cfgB.Bootstrap = []string{loopbackTCP(t, a)}
					cfgB.ICEServers = []node.ICEServer{{URLs: []string{unreachableSTUN}}}
				} else {
					cfgB.Peers = []string{loopbackTCP(t, a)}
				}
				identityOrdered(t, &cfgB, a.ID(), !aOffers)
				b := nodetest.Start(t, cfgB)
				ca, cb := apiClientFor(a), apiClientFor(b)
				ctx := context.Background()
				ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
				if err != nil {
					t.Fatal(err)
				}
				bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
				if err != nil {
					t.Fatal(err)
				}
				nodetest.WaitFor(t, 45*time.Second, func() bool {
					sa, errA := ca.Session(ctx, ba.ID)
					sb, errB := cb.Session(ctx, bb.ID)
					return errA == nil && errB == nil && sa.Connected && sb.Connected
				}, "both sessions to connect")
			})
		}
	}
}
