package node_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// tcpAddr is n's 127.0.0.1 TCP address with /p2p/ID, ready to bootstrap from.
func tcpAddr(t *testing.T, n *node.Node) string {
	t.Helper()
	for _, a := range n.Addrs() {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("node has no /ip4/127.0.0.1/tcp address: %v", n.Addrs())
	return ""
}

func apiClient(t *testing.T, dataDir string) *client.Client {
	t.Helper()
	c, err := client.FromDataDir(dataDir)
	if err != nil {
		t.Fatalf("client for %s: %v", dataDir, err)
	}
	return c
}

func TestIdentityPersistsAcrossRestart(t *testing.T) {
	cfg := nodetest.Config(t)
	n1 := nodetest.Start(t, cfg)
	id1 := n1.ID()
	if err := n1.Stop(); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, node.APIFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API file still there after Stop: %v", err)
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("identity.key mode = %o, want 600", m)
	}

	n2 := nodetest.Start(t, cfg)
	if n2.ID() != id1 {
		t.Fatalf("peer ID changed across restart: %s then %s", id1, n2.ID())
	}
	if _, err := n2.ID().ExtractPublicKey(); err != nil {
		t.Fatalf("peer ID does not embed its key: %v", err)
	}
	if pk, _ := n2.ID().ExtractPublicKey(); pk.Type() != crypto.Ed25519 {
		t.Errorf("identity key type = %v, want Ed25519", pk.Type())
	}
	st, err := apiClient(t, cfg.DataDir).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerID != id1.String() {
		t.Errorf("API status peer ID = %s, want %s", st.PeerID, id1)
	}
}

func TestSecondNodeOnSameDataDirFails(t *testing.T) {
	cfg := nodetest.Config(t)
	first := nodetest.Start(t, cfg)

	start := time.Now()
	second, err := node.New(cfg, nodetest.Logger(t, "error"))
	if err == nil {
		second.Stop()
		t.Fatal("a second node.New on the same data dir succeeded")
	}
	if !errors.Is(err, node.ErrAlreadyRunning) {
		t.Fatalf("second node.New: err = %v, want ErrAlreadyRunning", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second node.New took %v to fail", d)
	}

	// The failed attempt must leave the running node alone.
	st, err := apiClient(t, cfg.DataDir).Status(context.Background())
	if err != nil {
		t.Fatalf("first node's API after the failed second start: %v", err)
	}
	if st.PeerID != first.ID().String() {
		t.Errorf("status peer ID = %s, want %s", st.PeerID, first.ID())
	}

	// Once the first node stops, the data dir is free again.
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	nodetest.Start(t, cfg)
}

func TestThreeNodesFindEachOther(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t))
	boot := tcpAddr(t, a)

	cfgB, cfgC := nodetest.Config(t), nodetest.Config(t)
	cfgB.Bootstrap = []string{boot}
	cfgC.Bootstrap = []string{boot}
	b := nodetest.Start(t, cfgB)
	c := nodetest.Start(t, cfgC)

	type member struct {
		name string
		n    *node.Node
		api  *client.Client
	}
	all := []member{
		{"A", a, apiClient(t, a.Status().DataDir)},
		{"B", b, apiClient(t, cfgB.DataDir)},
		{"C", c, apiClient(t, cfgC.DataDir)},
	}
	ctx := context.Background()
	// B and C only know A; they must find each other through the DHT
	// rendezvous.
	connected := func(m member) (bool, string) {
		st, err := m.api.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		ps, err := m.api.Peers(ctx)
		if err != nil {
			return false, err.Error()
		}
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID)
			if p.LatencyMS <= 0 {
				return false, "no latency measured yet for " + p.ID
			}
		}
		for _, o := range all {
			if o.n != m.n && !slices.Contains(ids, o.n.ID().String()) {
				return false, "peers " + strings.Join(ids, ",")
			}
		}
		if st.ConnectedPeers < 2 {
			return false, "status shows too few peers"
		}
		return true, ""
	}
	var why lastReason
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		for _, m := range all {
			ok, w := connected(m)
			if !ok {
				why.s = m.name + ": " + w
				return false
			}
		}
		return true
	}, "all three nodes to be connected pairwise (last: %s)", &why)

	for _, m := range all {
		ps, err := m.api.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if len(p.Addrs) == 0 {
				t.Errorf("%s: peer %s listed without an address", m.name, p.ID)
			}
			for _, addr := range p.Addrs {
				if !strings.HasPrefix(addr, "/ip4/127.0.0.1/") {
					t.Errorf("%s: peer %s reached at non-loopback %s", m.name, p.ID, addr)
				}
			}
		}
	}
}

// TestRendezvousRecordReachesBootstrapPeer: a node announces itself under
// the rendezvous namespace as soon as it has joined the DHT, so that nodes
// it has never met can find it through any peer it knows.
func TestRendezvousRecordReachesBootstrapPeer(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t))
	var joined []peer.ID
	for range 2 {
		cfg := nodetest.Config(t)
		cfg.Bootstrap = []string{tcpAddr(t, a)}
		joined = append(joined, nodetest.Start(t, cfg).ID())
	}
	var have []peer.ID
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		var err error
		if have, err = node.RendezvousProviders(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		for _, id := range joined {
			if !slices.Contains(have, id) {
				return false
			}
		}
		return true
	}, "the bootstrap peer to hold both joiners' rendezvous records")
}

// lastReason shows, in a WaitFor failure, why the condition last failed.
type lastReason struct{ s string }

func (r *lastReason) String() string { return r.s }

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunsWithoutReachableBootstrap(t *testing.T) {
	// A loopback port nobody listens on, and a peer ID nobody has.
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
	ghost, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}

	cfg := nodetest.Config(t)
	cfg.Bootstrap = []string{"/ip4/127.0.0.1/tcp/" + strconv.Itoa(port) + "/p2p/" + ghost.String()}
	logs := &lockedBuffer{}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })

	const warning = "no bootstrap peer reachable"
	nodetest.WaitFor(t, 15*time.Second, func() bool { return strings.Contains(logs.String(), warning) },
		"the node to say the bootstrap peer is unreachable")

	st, err := apiClient(t, cfg.DataDir).Status(context.Background())
	if err != nil {
		t.Fatalf("node with no reachable bootstrap does not answer its API: %v", err)
	}
	if st.PeerID != n.ID().String() || st.ConnectedPeers != 0 {
		t.Errorf("status = %+v, want own ID and 0 peers", st)
	}

	// It still accepts peers that dial in.
	other := nodetest.Start(t, nodetest.Config(t))
	ai, err := peer.AddrInfoFromString(tcpAddr(t, n))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := other.Host().Connect(ctx, *ai); err != nil {
		t.Fatalf("dialling the node: %v", err)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool { return n.Status().ConnectedPeers == 1 },
		"the dialling peer to show up")

	if c := strings.Count(logs.String(), warning); c != 1 {
		t.Errorf("warning logged %d times, want once:\n%s", c, logs.String())
	}
}

func TestDefaultPaths(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name             string
		getenv           func(string) string
		wantData, wantCf string
	}{
		{"xdg", env("HOME", "/home/u", "XDG_DATA_HOME", "/xdg/data", "XDG_CONFIG_HOME", "/xdg/config"),
			"/xdg/data/tandem", "/xdg/config/tandem/config.toml"},
		{"home only", env("HOME", "/home/u"),
			"/home/u/.local/share/tandem", "/home/u/.config/tandem/config.toml"},
		{"empty xdg means unset", env("HOME", "/home/u", "XDG_DATA_HOME", "", "XDG_CONFIG_HOME", ""),
			"/home/u/.local/share/tandem", "/home/u/.config/tandem/config.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := node.DefaultDataDir(tc.getenv); got != tc.wantData {
				t.Errorf("DefaultDataDir = %q, want %q", got, tc.wantData)
			}
			if got := node.DefaultConfigPath(tc.getenv); got != tc.wantCf {
				t.Errorf("DefaultConfigPath = %q, want %q", got, tc.wantCf)
			}
		})
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	const file = `
data_dir = "/srv/tandem"
listen = ["/ip4/127.0.0.1/tcp/4001"]
api = "127.0.0.1:9999"
bootstrap = ["none"]
mdns = false
name = "Ada"
log_level = "debug"
relay_service = false

[matchmaking]
favourites_only = true
`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := node.Default()
	if err := node.LoadConfigFile(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/srv/tandem" || cfg.API != "127.0.0.1:9999" || cfg.Name != "Ada" ||
		cfg.LogLevel != "debug" || cfg.MDNS || !cfg.Matchmaking.FavouritesOnly {
		t.Errorf("config not overlaid: %+v", cfg)
	}
	if !slices.Equal(cfg.Listen, []string{"/ip4/127.0.0.1/tcp/4001"}) {
		t.Errorf("listen = %v, want only the file's address", cfg.Listen)
	}
	if !cfg.LocalOnly() {
		t.Error(`bootstrap = ["none"] and mdns = false: want LocalOnly`)
	}
	if !cfg.NATPortMap {
		t.Error("a key absent from the file changed its default")
	}
	if cfg.RelayService || !node.Default().RelayService {
		t.Errorf("relay_service: %v after the file's false, default %v; want false, true", cfg.RelayService, node.Default().RelayService)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// Most users never write a config file.
	def := node.Default()
	if err := node.LoadConfigFile(filepath.Join(dir, "missing.toml"), &def); err != nil {
		t.Errorf("missing file: %v", err)
	}
	// But a file the user named (--config) must be there.
	missing := filepath.Join(dir, "missing.toml")
	if err := node.ReadConfigFile(missing, &def); err == nil || !strings.Contains(err.Error(), missing+" does not exist") {
		t.Errorf("ReadConfigFile of a missing file: %v, want an error naming it", err)
	}
	// A broken one is reported with its path.
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("api = [unterminated"), 0o600)
	if err := node.LoadConfigFile(bad, &def); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("broken file: err = %v, want an error naming %s", err, bad)
	}
}

// ice_servers entries are URL strings or tables with TURN credentials.
func TestConfigICEServers(t *testing.T) {
	dir := t.TempDir()
	load := func(file string) (node.Config, error) {
		path := filepath.Join(dir, "ice.toml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := nodetest.Config(t)
		err := node.LoadConfigFile(path, &cfg)
		return cfg, err
	}
	cfg, err := load(`ice_servers = [
  "stun:stun.example.org:3478",
  { urls = "turn:turn.example.org:3478", username = "ada", credential = "s3cret" },
  { urls = ["turns:turn.example.org:5349", "turn:turn.example.org:3478?transport=tcp"], username = "ada", credential = "s3cret" },
]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []node.ICEServer{
		{URLs: []string{"stun:stun.example.org:3478"}},
		{URLs: []string{"turn:turn.example.org:3478"}, Username: "ada", Credential: "s3cret"},
		{URLs: []string{"turns:turn.example.org:5349", "turn:turn.example.org:3478?transport=tcp"}, Username: "ada", Credential: "s3cret"},
	}
	if !reflect.DeepEqual(cfg.ICEServers, want) {
		t.Errorf("ice_servers = %+v, want %+v", cfg.ICEServers, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// A TURN server written as a plain string has no credentials.
	cfg, err = load(`ice_servers = ["turn:turn.example.org:3478"]`)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "needs a username and a credential") {
		t.Errorf("TURN without credentials: Validate = %v", err)
	}
	for file, want := range map[string]string{
		`ice_servers = [{ url = "stun:x" }]`:                        `unknown key "url"`,
		`ice_servers = [{ urls = 3 }]`:                              "urls must be a string or a list",
		`ice_servers = [{ urls = "turn:x", username = 1 }]`:         "username must be a string",
		`ice_servers = [3]`:                                         "want a URL string or a table",
		`ice_servers = [{ urls = ["stun:x", 2], credential = "" }]`: "urls must be strings",
	} {
		if _, err := load(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", file, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.1:7480", "[::1]:7480", "localhost:7480"} {
		cfg := nodetest.Config(t)
		cfg.API = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(api=%q) = %v, want ok", addr, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:7480", "[::]:7480", ":7480", "192.168.1.10:7480",
		"example.com:7480", "127.0.0.1", "localhost.evil.example:7480"} {
		cfg := nodetest.Config(t)
		cfg.API = addr
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(api=%q) = nil, want an error (the API must stay on loopback)", addr)
		}
	}
	// Peers without their /p2p/ part are caught before the node builds its
	// host (which may multicast a UPnP search as it starts).
	for _, mutate := range []func(*node.Config){
		func(c *node.Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4001"} },
		func(c *node.Config) { c.Peers = []string{"/ip4/127.0.0.1/tcp/4001"} },
		func(c *node.Config) { c.Listen = []string{"not-a-multiaddr"} },
	} {
		cfg := nodetest.Config(t)
		mutate(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate accepted bootstrap %v, peers %v, listen %v", cfg.Bootstrap, cfg.Peers, cfg.Listen)
		}
	}

	// Every other setting is checked at start with the rules the API and
	// the wire apply later, so that nothing fails silently once running.
	for name, tc := range map[string]struct {
		mutate func(*node.Config)
		want   string
	}{
		// A name every peer refuses would make the node invisible.
		"long name":      {func(c *node.Config) { c.Name = strings.Repeat("n", 80) }, "80 bytes, at most 64"},
		"escape in name": {func(c *node.Config) { c.Name = "\x1b[2JAda" }, "control character U+001B"},
		"bidi in name":   {func(c *node.Config) { c.Name = "Ada\u202e" }, "U+202E"},
		"log level":      {func(c *node.Config) { c.LogLevel = "loud" }, "loud"},
		"ice url":        {func(c *node.Config) { c.ICEServers = []node.ICEServer{{URLs: []string{"http://x"}}} }, "http://x"},
		"ice no urls":    {func(c *node.Config) { c.ICEServers = []node.ICEServer{{}} }, "no urls"},
		"turn no credential": {func(c *node.Config) {
			c.ICEServers = []node.ICEServer{{URLs: []string{"turn:127.0.0.1:3478"}, Username: "u"}}
		}, "needs a username and a credential"},
		"turns no username": {func(c *node.Config) {
			c.ICEServers = []node.ICEServer{{URLs: []string{"turns:127.0.0.1:5349"}, Credential: "p"}}
		}, "needs a username and a credential"},
		"negative announce":  {func(c *node.Config) { c.Matchmaking.AnnounceInterval = -time.Second }, "negative"},
		"negative offer ttl": {func(c *node.Config) { c.Matchmaking.OfferTTL = -time.Second }, "negative"},
		"negative clock":     {func(c *node.Config) { c.ClockRate = -1 }, "negative"},
	} {
		cfg := nodetest.Config(t)
		tc.mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want an error with %q", name, err, tc.want)
		}
	}
	ok := nodetest.Config(t)
	ok.Name = strings.Repeat("n", 64)
	ok.ICEServers = []node.ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}},
		{URLs: []string{"turn:127.0.0.1:3478?transport=tcp", "turns:127.0.0.1:5349"}, Username: "u", Credential: "p"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("a 64-byte name and TURN servers with credentials: %v", err)
	}

	// And New refuses to start with a non-loopback API address.
	cfg := nodetest.Config(t)
	cfg.API = "0.0.0.0:0"
	if n, err := node.New(cfg, nil); err == nil {
		n.Stop()
		t.Fatal("node.New accepted a non-loopback API address")
	}
}

// TestStopLeavesNoGoroutines: every goroutine a node starts has an owner
// that stops it; after Stop nothing of the node keeps running.
func TestStopLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	a := nodetest.Start(t, nodetest.Config(t))
	cfg := nodetest.Config(t)
	cfg.Bootstrap = []string{tcpAddr(t, a)}
	b := nodetest.Start(t, cfg)
	nodetest.WaitFor(t, 10*time.Second, func() bool { return a.Status().ConnectedPeers == 1 && b.Status().ConnectedPeers == 1 },
		"the two nodes to connect")
	for _, n := range []*node.Node{b, a} {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n.Done():
		default:
			t.Fatal("Done not closed after Stop returned")
		}
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= base },
		"goroutines to go back to %d; still running:\n%s", base, goroutineDump{})
}

// goroutineDump prints all stacks, when a failure message is formatted.
type goroutineDump struct{}

func (goroutineDump) String() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// FuzzConfigFile: a config file, whatever its content, loads or fails with
// an error (never a panic), and what loads and validates holds no TURN
// server without credentials.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		`name = "Ada"`,
		`ice_servers = ["stun:127.0.0.1:3478", { urls = "turn:127.0.0.1:3478", username = "u", credential = "p" }]`,
		`ice_servers = [{ urls = ["turns:127.0.0.1:5349", 3] }]`,
		`ice_servers = [{ urls = "turn:127.0.0.1" }]`,
		"name = \"\\u001b[2J\"",
		`[matchmaking]
favourites_only = true`,
	} {
		f.Add(s)
	}
	path := filepath.Join(f.TempDir(), "config.toml")
	f.Fuzz(func(t *testing.T, file string) {
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := node.Default()
		cfg.DataDir = "/nonexistent"
		if node.LoadConfigFile(path, &cfg) != nil || cfg.Validate() != nil {
			return
		}
		for _, s := range cfg.ICEServers {
			for _, u := range s.URLs {
				if (strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")) && (s.Username == "" || s.Credential == "") {
					t.Fatalf("validated a TURN server without credentials: %+v", s)
				}
			}
		}
		if strings.ContainsFunc(cfg.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("validated a name with a control character: %q", cfg.Name)
		}
	})
}
