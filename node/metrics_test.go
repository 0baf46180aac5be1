package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// get sends a GET to n with header and returns status and body.
func get(t *testing.T, n *node.Node, path string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.APIURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		t.Fatalf("reading GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape parses n's /metrics as Prometheus does.
func scrape(t *testing.T, n *node.Node) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, n, "/metrics", bearer(n))
	if code != http.StatusOK {
		t.Fatalf("GET /metrics with the token: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams
}

// counter sums the samples of a counter family whose labels include want.
func counter(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// TestHealthz: the service manager's probe needs no token and learns
// nothing but "ok".
func TestHealthz(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	code, body := get(t, n, "/healthz", nil)
	if code != http.StatusOK || body != "ok" {
		t.Fatalf("GET /healthz without a token: %d %q, want 200 \"ok\"", code, body)
	}
}

// TestMetricsNeedToken: /metrics and pprof answer 401 without the API
// token and serve with it; the scrape has libp2p's collectors and ours.
func TestMetricsNeedToken(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
		for _, h := range []map[string]string{nil, {"Authorization": "Bearer " + strings.Repeat("0", 64)}} {
			if code, body := get(t, n, path, h); code != http.StatusUnauthorized {
				t.Errorf("GET %s with header %v: %d, want 401\n%.200s", path, h, code, body)
			}
		}
		if code, body := get(t, n, path, bearer(n)); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200\n%.200s", path, code, body)
		}
	}
	fams := scrape(t, n)
	for _, name := range []string{"tandem_matches_total", "tandem_holds_total", "tandem_offers_rejected_total", "tandem_offers_needless_refreshes_total",
		"tandem_relayed_connections", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	libp2p := 0
	for name := range fams {
		if strings.HasPrefix(name, "libp2p_") {
			libp2p++
		}
	}
	if libp2p == 0 {
		t.Errorf("/metrics has no libp2p_* collectors")
	}
}

// TestMetricsCountMatch: a match moves tandem_matches_total on both nodes,
// the hold on the side that accepted the proposal, and the offers seen.
func TestMetricsCountMatch(t *testing.T) {
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	for _, n := range []*node.Node{a, b} {
		if got := counter(scrape(t, n), "tandem_matches_total", nil); got != 0 {
			t.Fatalf("tandem_matches_total before any booking = %v", got)
		}
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool { return len(a.Host().Network().Peers()) > 0 }, "B to connect to A")
	_, _, ba, _ := bookFocusNowPair(t, a, b)
	nodetest.WaitFor(t, 60*time.Second, func() bool {
		bk, err := a.Matchmaking().Booking(ba.ID)
		return err == nil && bk.State == matchmaking.StateMatched
	}, "A's booking to be matched")
	var holds float64
	for _, n := range []*node.Node{a, b} {
		nodetest.WaitFor(t, 20*time.Second, func() bool {
			return counter(scrape(t, n), "tandem_matches_total", nil) == 1
		}, "tandem_matches_total = 1 on %s", n.ID())
		fams := scrape(t, n)
		holds += counter(fams, "tandem_holds_total", nil)
	}
	if holds < 1 {
		t.Errorf("tandem_holds_total summed over both nodes = %v, want at least 1", holds)
	}
	seen := counter(scrape(t, a), "tandem_offers_seen_total", nil) + counter(scrape(t, b), "tandem_offers_seen_total", nil)
	if seen < 1 {
		t.Errorf("tandem_offers_seen_total summed over both nodes = %v, want at least 1", seen)
	}
}
