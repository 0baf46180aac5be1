package node_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// natCell is one cell of the NAT lab's matrix: where the two users sit
// and when they start.
type natCell struct {
	name string
	// homes builds the cell's network and returns where users A and B
	// run (namespace and IP each).
	homes func(l *natLab) (nsA, ipA, nsB, ipB string)
	// staggered: B starts only once A is reachable through a relay (the
	// usual case: one user comes later and reaches the other through its
	// relay address); otherwise both start at once.
	staggered bool
}

var natCells = []natCell{
	{name: "home-public", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natCone, false))
		nsB, ipB := l.publicHost()
		return nsA, ipA, nsB, ipB
	}},
	{name: "cone-cone-simultaneous", homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natCone, false))
		nsB, ipB := l.home(l.router(natCone, false))
		return nsA, ipA, nsB, ipB
	}},
	{name: "cone-cone-staggered", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natCone, false))
		nsB, ipB := l.home(l.router(natCone, false))
		return nsA, ipA, nsB, ipB
	}},
	{name: "cone-symmetric", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natCone, false))
		nsB, ipB := l.home(l.router(natSymmetric, false))
		return nsA, ipA, nsB, ipB
	}},
	{name: "symmetric-symmetric", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natSymmetric, false))
		nsB, ipB := l.home(l.router(natSymmetric, false))
		return nsA, ipA, nsB, ipB
	}},
	{name: "hairpin", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		r := l.router(natCone, false)
		nsA, ipA := l.home(r)
		nsB, ipB := l.home(r)
		return nsA, ipA, nsB, ipB
	}},
	{name: "udp-blocked", staggered: true, homes: func(l *natLab) (string, string, string, string) {
		nsA, ipA := l.home(l.router(natCone, true))
		nsB, ipB := l.home(l.router(natCone, true))
		return nsA, ipA, nsB, ipB
	}},
}

// natResult is one run of a cell.
type natResult struct {
	cell               string
	matched, connected bool
	// toMatch and toConnect run from the moment both users pressed
	// "focus now" to both bookings matched / both sessions' data
	// channels open.
	toMatch, toConnect time.Duration
	// media: each user's browser leg received the partner's clip intact
	// and audio, toMedia after the legs were started; kbpsA and kbpsB are
	// the video bitrates A's and B's legs received; path is how the
	// session flowed (sessionPath).
	media        bool
	toMedia      time.Duration
	kbpsA, kbpsB float64
	path         string
	capKbps      int // A's cap on the video it sends over TURN, 0 direct
	// loadKbpsA and loadKbpsB: the video A and B received from synthetic
	// 1.5 Mbit/s cameras (TANDEM_NATLAB_MEDIA_LOAD=1; zero otherwise).
	loadKbpsA, loadKbpsB float64
}

// The NAT lab (see natlab_helper_test.go): every cell builds its own
// internet with four public Tandem nodes and two users behind home
// routers, books "focus now" on both users' nodes, and wants them matched
// and their session connected (the data channel open on both sides), and
// then media to flow both ways between the users' browser legs
// (natlab_media_test.go).
//
// TANDEM_NATLAB_RUNS=N runs each cell N times and prints the matrix;
// TANDEM_NATLAB_CELLS=a,b picks cells; TANDEM_NATLAB_CONNECT_WAIT=45s
// shortens the wait for a session; TANDEM_NATLAB_LOGS=1 prints every
// node's log; TANDEM_NATLAB_MEDIA_LOAD=1 adds the media load step
// (checkMediaLoad); go test -parallel N runs N cells at once (GOMAXPROCS
// by default). The measured matrices in docs/reach.md come from
//
//	TANDEM_NATLAB_RUNS=5 go test -count=1 -timeout 60m -run 'TestNATLab$' -v ./node
//	TANDEM_NATLAB_MEDIA_LOAD=1 TANDEM_NATLAB_RUNS=2 go test -count=1 -timeout 40m -run 'TestNATLab$' -v ./node
func TestNATLab(t *testing.T) {
	skipWithoutNATLab(t)
	runs := 1
	if v := os.Getenv("TANDEM_NATLAB_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("TANDEM_NATLAB_RUNS=%q: want a positive number", v)
		}
		runs = n
	}
	var pick []string
	if v := os.Getenv("TANDEM_NATLAB_CELLS"); v != "" {
		pick = strings.Split(v, ",")
	}
	bin := buildTandem(t)

	var mu sync.Mutex
	var results []natResult
	// The cells run side by side (go test -parallel, GOMAXPROCS by
	// default): each has its own namespaces, and most of a cell's time is
	// spent waiting for AutoNAT and AutoRelay.
	t.Run("cells", func(t *testing.T) {
		for _, c := range natCells {
			if pick != nil && !slices.Contains(pick, c.name) {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				for i := range runs {
					t.Run(strconv.Itoa(i), func(t *testing.T) {
						r := natResult{cell: c.name}
						// Recorded however the run ends (a failure ends it
						// with Goexit).
						defer func() {
							load := ""
							if r.loadKbpsA > 0 || r.loadKbpsB > 0 {
								load = fmt.Sprintf("; at 1.5 Mbit/s sent: %.0f / %.0f", r.loadKbpsA, r.loadKbpsB)
							}
							t.Logf("natlab %s run %d: matched=%v in %v, connected=%v in %v, media=%v in %v (video %.0f / %.0f kbit/s%s), path: %s, A's video cap %d kbit/s",
								c.name, i, r.matched, r.toMatch, r.connected, r.toConnect, r.media, r.toMedia, r.kbpsA, r.kbpsB, load, r.path, r.capKbps)
							mu.Lock()
							results = append(results, r)
							mu.Unlock()
						}()
						runNATCell(t, bin, c, &r)
					})
				}
			})
		}
	})
	t.Log("NAT lab matrix:\n" + natMatrix(results))
}

// runNATCell runs one cell once, noting in res how far it got, and fails
// t unless the pair matched and connected.
func runNATCell(t *testing.T, bin string, c natCell, res *natResult) {
	l := newNATLab(t, bin)
	nsA, ipA, nsB, ipB := c.homes(l)
	l.startPublic()
	a := l.startHome("Ada", nsA, ipA)
	if c.staggered {
		l.waitReachability(a, 120*time.Second, "reachable through a relay", func(r labReachability) bool { return r.RelayAddrs > 0 || r.Reachability == "public" })
	}
	b := l.startHome("Bo", nsB, ipB)
	// Both know at least one public node before they book, as a user's
	// node would long before they press "focus now".
	for _, n := range []*labNode{a, b} {
		l.waitReachability(n, 60*time.Second, "connected", func(r labReachability) bool { return r.ConnectedPeers > 0 })
	}
	ctx := context.Background()
	var ba, bb apiv1.Booking
	var err error
	tb := time.Now()
	if ba, err = a.client.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatalf("booking on A: %v", err)
	}
	if bb, err = b.client.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatalf("booking on B: %v", err)
	}
	t0 := time.Now()
	t.Logf("booked on both in %v", t0.Sub(tb))
	matched := func(n *labNode, id, partner string) bool {
		bks, err := n.client.Bookings(ctx)
		if err != nil {
			return false
		}
		for _, bk := range bks {
			if bk.ID == id {
				return bk.State == "matched" && bk.Partner == partner
			}
		}
		return false
	}
	defer func() {
		if t.Failed() {
			for _, n := range []*labNode{a, b} {
				if r, err := l.reachability(n); err == nil {
					t.Logf("%s at the end: %+v", n.name, r)
				}
				if bks, err := n.client.Bookings(ctx); err == nil {
					t.Logf("%s's bookings at the end: %+v", n.name, bks)
				}
			}
		}
	}()
	nodetestWait(t, 90*time.Second, func() bool {
		tp := time.Now()
		defer func() {
			if d := time.Since(tp); d > time.Second {
				t.Logf("a poll of both nodes' bookings took %v", d)
			}
		}()
		return matched(a, ba.ID, b.id.String()) && matched(b, bb.ID, a.id.String())
	}, "A and B to be matched with each other")
	res.matched, res.toMatch = true, time.Since(t0)
	var sa, sb apiv1.Session
	nodetestWait(t, labConnectWait(t), func() bool {
		var errA, errB error
		sa, errA = a.client.Session(ctx, ba.ID)
		sb, errB = b.client.Session(ctx, bb.ID)
		return errA == nil && errB == nil && sa.Connected && sb.Connected
	}, "the session to connect on both sides (A: %+v; B: %+v)", &sa.Connect, &sb.Connect)
	res.connected, res.toConnect = true, time.Since(t0)
	res.path, res.capKbps = l.sessionPath(a, b, ba.ID)
	l.checkMedia(a, b, ba.ID, bb.ID, res)
	// The path media took (it may have changed while the legs attached).
	res.path, res.capKbps = l.sessionPath(a, b, ba.ID)
	if os.Getenv("TANDEM_NATLAB_MEDIA_LOAD") != "" {
		l.checkMediaLoad(a, b, ba.ID, bb.ID, res)
		res.path, res.capKbps = l.sessionPath(a, b, ba.ID)
	}
}

// labConnectWait bounds the wait for the session to connect:
// TANDEM_NATLAB_CONNECT_WAIT (a Go duration) shortens it for measuring
// cells that are expected to fail; 90 s by default, for a loaded machine.
func labConnectWait(t *testing.T) time.Duration {
	if v := os.Getenv("TANDEM_NATLAB_CONNECT_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("TANDEM_NATLAB_CONNECT_WAIT=%q: want a positive Go duration", v)
		}
		return d
	}
	return 90 * time.Second
}

// natMatrix is the results as a table: runs, matched, connected, p50s.
func natMatrix(results []natResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| cell | runs | matched | connected | media | p50 to match | p50 to data channel | p50 to media | video kbit/s received (p50, A / B) | at 1.5 Mbit/s sent | A's video cap (kbit/s) | path (runs) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var cells []string
	for _, r := range results {
		if !slices.Contains(cells, r.cell) {
			cells = append(cells, r.cell)
		}
	}
	for _, c := range cells {
		var runs, matched, connected, withMedia int
		var tm, tc, tmed []time.Duration
		var ka, kb, la, lb, caps []float64
		paths := map[string]int{}
		for _, r := range results {
			if r.cell != c {
				continue
			}
			runs++
			if r.matched {
				matched++
				tm = append(tm, r.toMatch)
			}
			if r.connected {
				connected++
				tc = append(tc, r.toConnect)
			}
			if r.media {
				withMedia++
				tmed = append(tmed, r.toMedia)
				ka, kb = append(ka, r.kbpsA), append(kb, r.kbpsB)
			}
			if r.path != "" {
				paths[r.path]++
			}
			if r.loadKbpsA > 0 || r.loadKbpsB > 0 {
				la, lb = append(la, r.loadKbpsA), append(lb, r.loadKbpsB)
			}
			if r.capKbps > 0 {
				caps = append(caps, float64(r.capKbps))
			}
		}
		var ps []string
		for p, n := range paths {
			ps = append(ps, fmt.Sprintf("%s (%d)", p, n))
		}
		slices.Sort(ps)
		pair := func(xa, xb []float64) string {
			if len(xa) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f / %.0f", p50f(xa), p50f(xb))
		}
		capRange := "-"
		if len(caps) > 0 {
			capRange = fmt.Sprintf("%.0f-%.0f", slices.Min(caps), slices.Max(caps))
		}
		fmt.Fprintf(&b, "| %s | %d | %d/%d | %d/%d | %d/%d | %s | %s | %s | %s | %s | %s | %s |\n", c, runs, matched, runs, connected, runs, withMedia, runs,
			p50(tm), p50(tc), p50(tmed), pair(ka, kb), pair(la, lb), capRange, strings.Join(ps, "; "))
	}
	return b.String()
}

func p50f(xs []float64) float64 {
	slices.Sort(xs)
	return xs[(len(xs)-1)/2]
}

func p50(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return fmt.Sprintf("%.1f s", ds[(len(ds)-1)/2].Seconds())
}

// A pair reachable only through a relay at match time is hole punched
// later: the first hole punch (when the relayed connection comes in) is
// blocked, and once the path is open the nodes' retries give them a
// direct connection. libp2p alone punches once per relayed connection and
// never again, so before the retries the pair stayed relayed until the
// relay closed the circuit (2 minutes).
func TestNATLabHolePunchRetry(t *testing.T) {
	skipWithoutNATLab(t)
	l := newNATLab(t, buildTandem(t))
	// Over QUIC: after a failed round of TCP punches, go-libp2p dialled
	// the next ones from another local port (its reuse-port dial from the
	// listening port failed), which the partner's NAT never saw, so TCP
	// retries could not succeed here (see docs/reach.md).
	l.quic = true
	rA, rB := l.router(natCone, false), l.router(natCone, false)
	nsA, ipA := l.home(rA)
	nsB, ipB := l.home(rB)
	l.startPublic()
	a := l.startHome("Ada", nsA, ipA)
	l.waitReachability(a, 120*time.Second, "reachable through a relay", func(r labReachability) bool { return r.RelayAddrs > 0 })
	// Nothing passes between the two routers: only the relay path works.
	l.blockBetween(rA, rB)
	b := l.startHome("Bo", nsB, ipB)
	ctx := context.Background()
	ba, err := a.client.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetestWait(t, 90*time.Second, func() bool {
		bks, err := a.client.Bookings(ctx)
		return err == nil && len(bks) == 1 && bks[0].ID == ba.ID && bks[0].State == "matched" && bks[0].Partner == b.id.String()
	}, "A to be matched with B through the relay")
	if path := l.path(a, b); path != "relayed" {
		t.Fatalf("A's path to B with the routers blocking each other: %s, want relayed", path)
	}
	// B reached A through A's relay, so A starts the hole punch (DCUtR);
	// open the path only once a whole round of it has failed.
	nodetestWait(t, 120*time.Second, func() bool {
		return strings.Contains(a.logBuf.String(), "all retries for hole punch with peer "+b.id.String())
	}, "A's first hole punch to B to fail")
	l.unblock(rA, rB)
	opened := time.Now()
	var path lastReason
	// Within a minute: the relay closes the circuit after two minutes,
	// and a new relayed connection would be hole punched afresh.
	nodetestWait(t, 60*time.Second, func() bool {
		path.s = l.path(a, b)
		return path.s == "direct"
	}, "a direct connection between A and B once the path is open (last: %s)", &path)
	t.Logf("direct %v after the path opened", time.Since(opened).Round(time.Millisecond))
}
