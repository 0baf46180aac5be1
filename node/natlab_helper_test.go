package node_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sys/unix"

	"github.com/tandem-cowork/tandem/node/client"
)

// The NAT lab: network namespaces that stand for the internet, home
// routers and the machines behind them, built and torn down by each test.
//
//	internet (namespace <lab>-net): a bridge; every public host and every
//	router's WAN side has a veth on it, addresses in 192.0.0.128/25 (the
//	upper half of 192.0.0.0/24: go-multiaddr counts it as public, so
//	AutoNAT, the relay service and hole punching behave as on the
//	internet; it is never routed anywhere real).
//	public hosts (<lab>-pN): one Tandem node each, 192.0.0.130+N,
//	listening on TCP and QUIC port 4001; every node bootstraps from them.
//	routers (<lab>-rN): WAN 192.0.0.150+N, a LAN bridge 10.N.0.1/24,
//	nftables masquerade ("cone" keeps the source port, "symmetric" is
//	fully-random) and a home router's firewall: from the WAN only
//	established/related packets come in, to the router or through it.
//	homes (<lab>-hN): a Tandem node behind a router, 10.R.0.10+N.
//
// Nodes are real `tandem` binaries started with `ip netns exec`; each is
// local-only apart from its --bootstrap list: no mDNS, no UPnP, no STUN
// servers, no DNS names anywhere.

// natLab is one lab; every namespace and process it makes is removed by
// t.Cleanup, whether the test passes or not.
type natLab struct {
	t      *testing.T
	bin    string
	prefix string
	inet   string
	ports  int // veths on the internet bridge so far
	pubs   []*labNode
	nRtr   int
	nHome  int
	// quic: homes bootstrap over QUIC instead of TCP, so their observed
	// addresses (and so hole punching) are UDP ones.
	quic bool
}

// labRouter is a home router.
type labRouter struct {
	ns     string
	subnet int // 10.subnet.0.0/24
	lans   int
}

// labNode is one tandem process in a namespace.
type labNode struct {
	name   string
	ns     string
	dir    string
	ip     string
	id     peer.ID
	cmd    *exec.Cmd
	done   chan struct{}
	logBuf *lockedBuffer
	client *client.Client
}

// labPublicNodes is how many public nodes a lab runs: AutoRelay wants
// several relay candidates before it reserves a slot, and AutoNAT
// counts an observed address once four different IPs report it.
const labPublicNodes = 4

// skipWithoutNATLab skips the test, saying why, where the lab cannot be
// built: it needs root, ip (iproute2) and nft (nftables).
func skipWithoutNATLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("the NAT lab runs real nodes for minutes; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("the NAT lab needs root to make network namespaces and nftables rules")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the NAT lab needs %s (iproute2, nftables) on PATH", tool)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("cannot list network namespaces here (ip netns list: %v %s)", err, out)
	}
}

// buildTandem builds cmd/tandem into a temporary directory of t.
func buildTandem(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tandem")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tandem").CombinedOutput(); err != nil {
		t.Fatalf("building tandem: %v\n%s", err, out)
	}
	return bin
}

// newNATLab makes an empty internet; bin is the tandem binary.
func newNATLab(t *testing.T, bin string) *natLab {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	l := &natLab{t: t, bin: bin, prefix: "tl" + hex.EncodeToString(rnd[:])}
	l.inet = l.netns("net")
	l.ip(l.inet, "link", "add", "br0", "type", "bridge")
	l.ip(l.inet, "link", "set", "br0", "up")
	return l
}

// sh runs a command and fails the test if it fails.
func (l *natLab) sh(stdin string, args ...string) {
	l.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ip runs `ip -n ns ARGS`.
func (l *natLab) ip(ns string, args ...string) {
	l.t.Helper()
	l.sh("", append([]string{"ip", "-n", ns}, args...)...)
}

// netns makes a namespace with lo up, deleted at cleanup.
func (l *natLab) netns(name string) string {
	l.t.Helper()
	ns := l.prefix + "-" + name
	l.sh("", "ip", "netns", "add", ns)
	l.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("removing namespace %s: %v %s", ns, err, out)
		}
	})
	l.ip(ns, "link", "set", "lo", "up")
	return ns
}

// wire links ns (as dev, with addr) to the internet bridge.
func (l *natLab) wire(ns, dev, addr string) {
	l.t.Helper()
	port := fmt.Sprintf("p%d", l.ports)
	l.ports++
	l.sh("", "ip", "link", "add", "name", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", l.inet)
	l.ip(l.inet, "link", "set", port, "master", "br0", "up")
	l.ip(ns, "addr", "add", addr, "dev", dev)
	l.ip(ns, "link", "set", dev, "up")
}

// natKind is how a home router maps ports.
type natKind string

const (
	// cone: masquerade keeps the source port where it can, so one socket
	// shows one public address to every destination.
	natCone natKind = "cone"
	// symmetric: a new random port for every destination.
	natSymmetric natKind = "symmetric"
)

// router adds a home router of the given kind; blockUDP drops every UDP
// packet it would forward (networks that allow only TCP).
func (l *natLab) router(kind natKind, blockUDP bool) *labRouter {
	l.t.Helper()
	l.nRtr++
	r := &labRouter{ns: l.netns(fmt.Sprintf("r%d", l.nRtr)), subnet: l.nRtr}
	l.wire(r.ns, "wan", fmt.Sprintf("192.0.0.%d/25", 150+l.nRtr))
	l.ip(r.ns, "link", "add", "lan", "type", "bridge")
	l.ip(r.ns, "addr", "add", fmt.Sprintf("10.%d.0.1/24", r.subnet), "dev", "lan")
	l.ip(r.ns, "link", "set", "lan", "up")
	l.sh("", "ip", "netns", "exec", r.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	masq := "masquerade"
	if kind == natSymmetric {
		masq = "masquerade fully-random"
	}
	udp := ""
	if blockUDP {
		udp = "meta l4proto udp drop"
	}
	rules := fmt.Sprintf(`
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" %s
	}
}
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		%s
		ct state established,related accept
		iifname "wan" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		iifname "wan" drop
	}
}
`, masq, udp)
	l.sh(rules, "ip", "netns", "exec", r.ns, "nft", "-f", "-")
	return r
}

// blockBetween drops every packet between routers r and q (both ways, on
// both), so the only path between their homes is through a relay.
func (l *natLab) blockBetween(r, q *labRouter) {
	l.t.Helper()
	for _, x := range [][2]*labRouter{{r, q}, {q, r}} {
		ip := fmt.Sprintf("192.0.0.%d", 150+x[1].subnet)
		rules := fmt.Sprintf(`
table inet block {
	chain in {
		type filter hook prerouting priority -300; policy accept;
		ip saddr %s drop
	}
	chain out {
		type filter hook postrouting priority 300; policy accept;
		ip daddr %s drop
	}
}
`, ip, ip)
		l.sh(rules, "ip", "netns", "exec", x[0].ns, "nft", "-f", "-")
	}
}

// unblock undoes blockBetween.
func (l *natLab) unblock(r, q *labRouter) {
	l.t.Helper()
	for _, x := range []*labRouter{r, q} {
		l.sh("", "ip", "netns", "exec", x.ns, "nft", "delete", "table", "inet", "block")
	}
}

// path says how n is connected to m now: "direct", "relayed" or "none"
// (or the error that kept it from asking).
func (l *natLab) path(n, m *labNode) string {
	peers, err := n.client.Peers(context.Background())
	if err != nil {
		return err.Error()
	}
	for _, p := range peers {
		if p.ID != m.id.String() {
			continue
		}
		for _, a := range p.Addrs {
			if !strings.Contains(a, "/p2p-circuit") {
				return "direct"
			}
		}
		return "relayed"
	}
	return "none"
}

// home adds a machine on router r's LAN and returns its namespace and IP.
func (l *natLab) home(r *labRouter) (ns, ip string) {
	l.t.Helper()
	l.nHome++
	ns = l.netns(fmt.Sprintf("h%d", l.nHome))
	port := fmt.Sprintf("l%d", r.lans)
	r.lans++
	ip = fmt.Sprintf("10.%d.0.%d", r.subnet, 10+r.lans)
	l.sh("", "ip", "link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", r.ns)
	l.ip(r.ns, "link", "set", port, "master", "lan", "up")
	l.ip(ns, "addr", "add", ip+"/24", "dev", "eth0")
	l.ip(ns, "link", "set", "eth0", "up")
	l.ip(ns, "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", r.subnet))
	return ns, ip
}

// publicHost adds a host on the internet that is not one of the
// bootstrap nodes (a user with a public address).
func (l *natLab) publicHost() (ns, ip string) {
	l.t.Helper()
	l.nHome++
	ns = l.netns(fmt.Sprintf("h%d", l.nHome))
	ip = fmt.Sprintf("192.0.0.%d", 170+l.nHome)
	l.wire(ns, "eth0", ip+"/25")
	return ns, ip
}

// bootstrapAddrs are the public nodes' addresses for --bootstrap.
func (l *natLab) bootstrapAddrs() []string {
	var out []string
	for _, p := range l.pubs {
		tr := "tcp/4001"
		if l.quic {
			tr = "udp/4001/quic-v1"
		}
		out = append(out, fmt.Sprintf("/ip4/%s/%s/p2p/%s", p.ip, tr, p.id))
	}
	return out
}

// startPublic starts the public nodes, each bootstrapping from the
// others, and waits until each offers a relay (AutoNAT found it
// reachable), so homes find relays at once.
func (l *natLab) startPublic() {
	l.t.Helper()
	for i := range labPublicNodes {
		ns := l.netns(fmt.Sprintf("p%d", i))
		ip := fmt.Sprintf("192.0.0.%d", 130+i)
		l.wire(ns, "eth0", ip+"/25")
		l.pubs = append(l.pubs, l.prepare(fmt.Sprintf("public%d", i), ns, ip))
	}
	quic := l.quic
	l.quic = false
	all := l.bootstrapAddrs()
	l.quic = quic
	for i, p := range l.pubs {
		var boot []string
		for j, a := range all {
			if j != i {
				boot = append(boot, a)
			}
		}
		l.start(p, boot, "--listen", "/ip4/0.0.0.0/tcp/4001", "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1")
	}
	for _, p := range l.pubs {
		l.waitReachability(p, 90*time.Second, "public", func(r labReachability) bool { return r.Reachability == "public" })
	}
}

// startHome starts a node in namespace ns (a home) that bootstraps from
// the public nodes.
func (l *natLab) startHome(name, ns, ip string) *labNode {
	l.t.Helper()
	n := l.prepare(name, ns, ip)
	l.start(n, l.bootstrapAddrs())
	return n
}

// prepare makes a node's data dir, identity and config.
func (l *natLab) prepare(name, ns, ip string) *labNode {
	l.t.Helper()
	dir := l.t.TempDir()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		l.t.Fatal(err)
	}
	data, _ := crypto.MarshalPrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "identity.key"), data, 0o600); err != nil {
		l.t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	// No STUN server (the lab has none yet), no UPnP search.
	cfg := "ice_servers = []\nnat_port_map = false\n[matchmaking]\nstamp_bits = 8\n"
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return &labNode{name: name, ns: ns, dir: dir, ip: ip, id: id, logBuf: &lockedBuffer{}, done: make(chan struct{})}
}

// start runs `tandem up` for n in its namespace; the process is stopped
// at cleanup and its log shown if the test failed.
func (l *natLab) start(n *labNode, bootstrap []string, extra ...string) {
	l.t.Helper()
	args := []string{"netns", "exec", n.ns, l.bin, "--data-dir", n.dir, "--config", filepath.Join(n.dir, "config.toml"),
		"--log-level", labLogLevel(), "up", "--no-mdns", "--name", n.name, "--api", "127.0.0.1:0"}
	for _, b := range bootstrap {
		args = append(args, "--bootstrap", b)
	}
	args = append(args, extra...)
	n.cmd = exec.Command("ip", args...)
	n.cmd.Stdout, n.cmd.Stderr = n.logBuf, n.logBuf
	n.cmd.Env = append(os.Environ(), "GOLOG_LOG_LEVEL="+os.Getenv("TANDEM_NATLAB_LIBP2P_LOG"))
	// A test binary that is killed (a timeout, ^C) runs no cleanup: the
	// kernel stops its nodes. (`ip netns exec` execs tandem, which keeps
	// the signal; dialInNetns never lets an OS thread die, so it cannot
	// fire early.)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		l.t.Fatalf("starting %s: %v", n.name, err)
	}
	go func() {
		n.cmd.Wait()
		close(n.done)
	}()
	l.t.Cleanup(func() {
		n.stop()
		if l.t.Failed() || os.Getenv("TANDEM_NATLAB_LOGS") != "" {
			l.t.Logf("--- log of %s (%s, %s, %s):\n%s", n.name, n.ns, n.ip, n.id, n.logBuf.String())
		}
	})
	// The API file appears once the node serves its API.
	nodetestWait(l.t, 60*time.Second, func() bool {
		select {
		case <-n.done:
			l.t.Fatalf("%s exited at start:\n%s", n.name, n.logBuf.String())
		default:
		}
		c, err := client.FromDataDir(n.dir)
		if err != nil {
			return false
		}
		c.HTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: dialInNetns(n.ns)}}
		n.client = c
		return true
	}, "%s to serve its API", n.name)
}

// stop ends the node: SIGTERM, and SIGKILL if it has not stopped in 15 s.
func (n *labNode) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

func labLogLevel() string {
	if v := os.Getenv("TANDEM_NATLAB_LOG_LEVEL"); v != "" {
		return v
	}
	return "debug"
}

// labReachability is GET /api/v1/reachability.
type labReachability struct {
	Reachability   string `json:"reachability"`
	PublicAddrs    int    `json:"public_addrs"`
	RelayAddrs     int    `json:"relay_addrs"`
	ConnectedPeers int    `json:"connected_peers"`
	RelayedConns   int    `json:"relayed_conns"`
}

func (l *natLab) reachability(n *labNode) (labReachability, error) {
	var r labReachability
	req, _ := http.NewRequest(http.MethodGet, n.client.URL+"/api/v1/reachability", nil)
	req.Header.Set("Authorization", "Bearer "+n.client.Token)
	resp, err := n.client.HTTP.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("reachability: %s", resp.Status)
	}
	return r, jsonDecode(resp.Body, &r)
}

// waitReachability waits until n's reachability report passes cond.
func (l *natLab) waitReachability(n *labNode, timeout time.Duration, what string, cond func(labReachability) bool) {
	l.t.Helper()
	var last labReachability
	var lastErr error
	nodetestWait(l.t, timeout, func() bool {
		last, lastErr = l.reachability(n)
		return lastErr == nil && cond(last)
	}, "%s to be %s (last: %+v, err %v)", n.name, what, &last, &lastErr)
}

// nodetestWait polls cond every 100 ms until it holds or timeout passes.
// The lab's conditions are HTTP calls into namespaces: a slower poll than
// nodetest.WaitFor's keeps them off the CPU.
func nodetestWait(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(msg, args...))
		}
		<-tick.C
	}
}

// dialInNetns dials from inside the named network namespace: the socket
// is made on an OS thread moved into the namespace (a socket stays in the
// namespace it was made in), and the thread is moved back before it is
// unlocked. If it cannot be moved back, its goroutine ends locked and the
// runtime throws the thread away.
func dialInNetns(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			home, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("opening this thread's namespace: %w", err)}
				return
			}
			defer home.Close()
			f, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("opening namespace %s: %w", ns, err)}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("entering namespace %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		select {
		case r := <-ch:
			return r.c, r.err
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
