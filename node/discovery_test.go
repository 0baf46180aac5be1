package node_test

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// discoveryOf is n's GET /api/v1/discovery.
func discoveryOf(t *testing.T, n *node.Node) node.DiscoveryStatus {
	t.Helper()
	code, body := uiRequest(t, n, "GET", "/api/v1/discovery", "")
	var st node.DiscoveryStatus
	if code != 200 {
		t.Fatalf("GET discovery: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET discovery: %v: %s", err, body)
	}
	return st
}

// ghostAddr is a loopback address nobody listens on, with a peer ID nobody
// has: dialling it fails at once.
func ghostAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return "/ip4/127.0.0.1/tcp/" + strconv.Itoa(port) + "/p2p/" + id.String()
}

// TestDiscoveryStatus: a local-only node says that it has nothing to try;
// a node with one reachable and one unreachable bootstrap peer (and an
// unreachable direct peer) says which is which, and that its rendezvous
// search ran.
func TestDiscoveryStatus(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t))
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		st := discoveryOf(t, a)
		return st.StartDialsDone && st.Rendezvous.Skipped > 0
	}, "A's first (skipped) rendezvous round")
	st := discoveryOf(t, a)
	if !st.LocalOnly || st.MDNS || st.PublicDHT || len(st.Bootstrap) != 0 || len(st.Static) != 0 || st.Rendezvous.Rounds != 0 {
		t.Errorf("local-only node's discovery = %+v", st)
	}
	if want := a.Addrs(); len(st.ShareAddrs) != len(want) || !slices.ContainsFunc(st.ShareAddrs, func(s string) bool {
		return strings.HasSuffix(s, "/p2p/"+a.ID().String()) && slices.Contains(want, s)
	}) {
		t.Errorf("share addrs = %v, want those of %v", st.ShareAddrs, want)
	}

	ghost, ghostPeer := ghostAddr(t), ghostAddr(t)
	cfg := nodetest.Config(t)
	cfg.Bootstrap = []string{tcpAddr(t, a), ghost}
	cfg.Peers = []string{ghostPeer}
	b := nodetest.Start(t, cfg)
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		st = discoveryOf(t, b)
		return st.StartDialsDone && st.Rendezvous.Rounds > 0
	}, "B's start dials and first rendezvous search; last status %+v", st)
	if st.LocalOnly || st.PublicDHT || len(st.Bootstrap) != 2 || len(st.Static) != 1 {
		t.Fatalf("B's discovery = %+v", st)
	}
	reached, lost := st.Bootstrap[0], st.Bootstrap[1]
	if reached.Peer != a.ID().String() || reached.State != node.SeedReached || !reached.Connected || reached.Error != "" || reached.LastTry.IsZero() {
		t.Errorf("A as B's bootstrap peer: %+v", reached)
	}
	if lost.Addr != ghost || lost.State != node.SeedUnreachable || lost.Connected || lost.Error == "" || strings.Contains(lost.Error, "\n") {
		t.Errorf("the unreachable bootstrap peer: %+v", lost)
	}
	if p := st.Static[0]; p.Addr != ghostPeer || p.State != node.SeedUnreachable || p.Error == "" {
		t.Errorf("the unreachable direct peer: %+v", p)
	}
	if st.Rendezvous.LastSearch.IsZero() || st.Rendezvous.LastError != "" {
		t.Errorf("B's rendezvous search: %+v", st.Rendezvous)
	}
	t.Logf("unreachable bootstrap peer: %s", lost.Error)
}
