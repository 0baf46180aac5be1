package node_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestSessionThroughPeerTURN: a third node that offers a STUN/TURN relay
// (turn.offer = "on") carries the session of two nodes that may only use
// relays (turn.relay_only): they learn of the helper from identify (it
// serves /tandem/turn/1), get credentials over that stream, connect
// through its relay, and say so in the session's connect report.
func TestSessionThroughPeerTURN(t *testing.T) {
	clock := &nodetest.Clock{}
	cfgH := nodetest.Config(t)
	cfgH.Now = clock.Now
	cfgH.TURN.Offer = node.TURNOfferOn
	helper := nodetest.Start(t, cfgH)
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		return strings.HasPrefix(helper.Status().TURNHelper, "offering stun:127.0.0.1:")
	}, "the helper to offer its relay")
	t.Logf("helper: %s", helper.Status().TURNHelper)
	if st := helper.Status().TURNHelper; !strings.Contains(st, " turns:127.0.0.1:") {
		t.Errorf("the helper's status %q names no turns: URL", st)
	}

	cfgA := nodetest.Config(t)
	cfgA.Now = clock.Now
	cfgA.TURN.RelayOnly = true
	cfgA.Peers = []string{loopbackTCP(t, helper)}
	a := nodetest.Start(t, cfgA)
	cfgB := nodetest.Config(t)
	cfgB.Now = clock.Now
	cfgB.TURN.RelayOnly = true
	cfgB.Peers = []string{loopbackTCP(t, helper), loopbackTCP(t, a)}
	b := nodetest.Start(t, cfgB)

	ca, cb, ba, bb := bookFocusNowPair(t, a, b)
	ctx := context.Background()
	nodetest.WaitFor(t, 45*time.Second, func() bool {
		sa, errA := ca.Session(ctx, ba.ID)
		sb, errB := cb.Session(ctx, bb.ID)
		return errA == nil && errB == nil && sa.Connected && sb.Connected && sa.Connect.Path != nil && sb.Connect.Path != nil
	}, "both sessions to connect")
	for name, s := range map[string]func() (string, error){
		"a": func() (string, error) { s, err := ca.Session(ctx, ba.ID); return s.Connect.Path.Text, err },
		"b": func() (string, error) { s, err := cb.Session(ctx, bb.ID); return s.Connect.Path.Text, err },
	} {
		text, err := s()
		if err != nil {
			t.Fatal(err)
		}
		if want := "via relay (Tandem peer " + helper.ID().String(); !strings.HasPrefix(text, want) {
			t.Errorf("%s's session is connected %q, want %q...", name, text, want)
		}
	}
	sa, _ := ca.Session(ctx, ba.ID)
	t.Logf("a: %s; ICE servers %q", sa.Connect.Path.Text, sa.Connect.ICEServers)
	// The helper's TLS server is offered, pinned, instead of plain TCP.
	var tls, tcp bool
	for _, u := range sa.Connect.ICEServers {
		tls = tls || strings.HasPrefix(u, "turns:127.0.0.1:")
		tcp = tcp || strings.HasPrefix(u, "turn:") && strings.Contains(u, "?transport=tcp")
	}
	if !tls || tcp {
		t.Errorf("a's ICE servers %q: want the helper's turns: URL and no plain TCP one", sa.Connect.ICEServers)
	}
}

// The [turn] table: every key read, bad values stop the start.
func TestConfigTURN(t *testing.T) {
	path := filepath.Join(t.TempDir(), "turn.toml")
	load := func(file string) (node.Config, error) {
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := node.Default()
		if err := node.LoadConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load("name = \"Ada\"\n[turn]\noffer = \"off\"\nport = 3479\nrelay_ip = \"192.0.0.200\"\nmax_allocations_per_peer = 2\n" +
		"max_allocations = 8\npeer_kbps = 500\ntotal_kbps = 4000\nuse_peers = false\nrelay_only = true\ntls = false\ntls_port = 443\n")
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := node.TURNConfig{Offer: "off", Port: 3479, RelayIP: "192.0.0.200", MaxAllocationsPerPeer: 2,
		MaxAllocations: 8, PeerKbps: 500, TotalKbps: 4000, UsePeers: &no, RelayOnly: true, TLS: &no, TLSPort: 443}
	if !reflect.DeepEqual(cfg.TURN, want) {
		t.Errorf("turn = %+v, want %+v", cfg.TURN, want)
	}
	if cfg, _ := load(""); cfg.TURN.Port != node.DefaultTURNPort || cfg.TURN.Offer != "" || cfg.TURN.TLS != nil || cfg.TURN.TLSPort != node.DefaultTURNTLSPort {
		t.Errorf("default turn table: %+v", cfg.TURN)
	}
	for file, msg := range map[string]string{
		"[turn]\noffer = \"sometimes\"": `offer "sometimes"`,
		"[turn]\nport = 70000":          "port 70000",
		"[turn]\nrelay_ip = \"::1\"":    "want an IPv4 address",
		"[turn]\npeer_kbps = -1":        "must not be negative",
		"[turn]\ntls_port = -5":         "tls_port -5",
		"[turn]\ntls_port = 3478":       "tls_port 3478 is port too",
		"[turn]\nsecret = \"x\"":        `unknown key "turn.secret"`,
	} {
		if _, err := load(file); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: err = %v, want %q", file, err, msg)
		}
	}
}

// A node that offers a relay advertises it in the DHT under
// tandem/turn/v1 (soon after start, not after util.Advertise's 2-minute
// retry); a node that does not offer one (auto, not publicly reachable)
// does not.
func TestHelperAdvertisedInDHT(t *testing.T) {
	cfgD := nodetest.Config(t)
	d := nodetest.Start(t, cfgD)
	cfgH := nodetest.Config(t)
	cfgH.TURN.Offer = node.TURNOfferOn
	nodetest.Link(t, &cfgH, d)
	h := nodetest.Start(t, cfgH)
	cfgN := nodetest.Config(t)
	nodetest.Link(t, &cfgN, d)
	n := nodetest.Start(t, cfgN)
	ctx := context.Background()
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		ids, _ := node.HelperProviders(ctx, d)
		return slices.Contains(ids, h.ID())
	}, "the helper's record in the DHT")
	ids, _ := node.HelperProviders(ctx, d)
	if slices.Contains(ids, n.ID()) {
		t.Errorf("a node that offers no relay is advertised as a helper: %v", ids)
	}
	if st := n.Status().TURNHelper; !strings.HasPrefix(st, "waiting") {
		t.Errorf("status of a node in auto mode that is not public: %q", st)
	}
}
