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
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// unreachableSTUN stands in for the public STUN server a node that is not
// local-only uses: nothing answers there, as nothing answers on a machine
// without internet, and no packet leaves the machine.
const unreachableSTUN = "stun:127.0.0.1:9"

// identityOrdered gives cfg's node a fresh key whose peer ID is below (low)
// or above than, so a test picks which side offers (the
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
				ca, cb, ba, bb := bookFocusNowPair(t, a, b)
				ctx := context.Background()
				nodetest.WaitFor(t, 45*time.Second, func() bool {
					sa, errA := ca.Session(ctx, ba.ID)
					sb, errB := cb.Session(ctx, bb.ID)
					return errA == nil && errB == nil && sa.Connected && sb.Connected
				}, "both sessions to connect")
			})
		}
	}
}

// A node that is not local-only uses the public STUN server by name. On a
// machine whose DNS never answers (offline; here a namespace whose only
// way out leads nowhere, and a resolver that waits 30 s per try) two such
// nodes still meet at once: the name is looked up aside, and a connection
// attempt neither waits for the lookup nor, when it is closed, for the
// lookup to give up (pion's Close waits for its own lookups: each closed
// attempt stalled signalling for the resolver's whole timeout, so the
// session took that long or never came up).
func TestSessionConnectsWhenDNSDoesNotAnswer(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if os.Getenv(netnsEnv) == "" {
		if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\noptions timeout:30 attempts:3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !inNetns(t, "ip link set lo up && ip link add uplink type veth peer name void && ip link set void up && "+
		"ip addr add 192.0.2.2/24 dev uplink && ip link set uplink up && ip route add default via 192.0.2.1 && "+
		"mount --bind "+resolv+" /etc/resolv.conf") {
		return
	}
	for _, aOffers := range []bool{true, false} {
		t.Run(map[bool]string{true: "a-offers", false: "a-answers"}[aOffers], func(t *testing.T) {
			clock := &nodetest.Clock{}
			cfgA := nodetest.Config(t)
			cfgA.Now = clock.Now
			a := nodetest.Start(t, cfgA)
			cfgB := nodetest.Config(t)
			cfgB.Now = clock.Now
			cfgB.Bootstrap = []string{loopbackTCP(t, a)}
			cfgB.ICEServers = nil // the public default, by name
			identityOrdered(t, &cfgB, a.ID(), !aOffers)
			b := nodetest.Start(t, cfgB)
			ca, cb, ba, bb := bookFocusNowPair(t, a, b)
			ctx := context.Background()
			// Well inside the resolver's 30 s: a session that waits for
			// DNS cannot make it.
			nodetest.WaitFor(t, 25*time.Second, func() bool {
				sa, errA := ca.Session(ctx, ba.ID)
				sb, errB := cb.Session(ctx, bb.ID)
				return errA == nil && errB == nil && sa.Connected && sb.Connected
			}, "both sessions to connect")
			s, _ := cb.Session(ctx, bb.ID)
			t.Logf("B's ICE servers: %q", s.Connect.ICEServers)
			// Stopping does not wait for DNS either (it waited 90 s, the
			// resolver's 3 tries of 30 s, before the lookups moved aside).
			stopped := make(chan error, 1)
			go func() { stopped <- b.Stop() }()
			select {
			case err := <-stopped:
				if err != nil {
					t.Errorf("stopping B: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("B still stopping after 30 s: waiting for DNS")
			}
		})
	}
}
