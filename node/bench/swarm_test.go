package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSwarmSmoke runs the swarm benchmark at N = 10 for a short workload,
// as CI's smoke test: every invariant holds at the end and the swarm made
// every pair it could. It stays well under a minute on a 2-core machine.
// Latencies are measured, never asserted.
func TestSwarmSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 10-node swarm for about 20 s")
	}
	// QUIC too: the large runs in docs/benchmarks.md use it.
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			res, err := RunSwarm(ctx, SwarmConfig{Nodes: 10, Duration: 12 * time.Second, Settle: 20 * time.Second, Seed: 1, Transport: transport})
			if err != nil {
				t.Fatal(err)
			}
			res.Table(testWriter{t})
			if res.Transport != transport {
				t.Errorf("ran over %q, want %q", res.Transport, transport)
			}
			if res.DoubleBookings != 0 || res.OneSidedBookings != 0 {
				t.Errorf("%d double and %d one-sided bookings, want none", res.DoubleBookings, res.OneSidedBookings)
			}
			if res.MatchedPairs != res.MaxPairs {
				t.Errorf("matched %d pairs, the exact maximum is %d", res.MatchedPairs, res.MaxPairs)
			}
			if res.Requests == 0 || res.OffersPublished == 0 {
				t.Errorf("the workload did nothing: %d requests, %d offers", res.Requests, res.OffersPublished)
			}
		})
	}
}

// A swarm that cannot fit the open-file limit is refused before it starts,
// with what to do; an unknown transport too.
func TestSwarmRefusedUpFront(t *testing.T) {
	ctx := context.Background()
	_, err := RunSwarm(ctx, SwarmConfig{Nodes: 10_000_000, Transport: "tcp"})
	if err == nil || !strings.Contains(err.Error(), "open files") || !strings.Contains(err.Error(), "--transport quic") {
		t.Errorf("10 million nodes over TCP: %v, want a refusal naming the open-file limit and --transport quic", err)
	}
	if _, err := RunSwarm(ctx, SwarmConfig{Nodes: 2, Transport: "carrier-pigeon"}); err == nil || !strings.Contains(err.Error(), "want tcp or quic") {
		t.Errorf("unknown transport: %v", err)
	}
}

// TestSessionSmoke runs the session benchmark with two pairs briefly.
func TestSessionSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two WebRTC sessions for a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunSession(ctx, SessionConfig{Pairs: 2, RelayWindow: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res.Table(testWriter{t})
	if res.Setup.N != 2 || res.FirstRTP.N != 2 {
		t.Errorf("measured %d setups and %d first packets, want 2 each", res.Setup.N, res.FirstRTP.N)
	}
}

// BenchmarkSwarm wraps the swarm benchmark for `go test -bench` at small
// N; each iteration is a whole run.
//
//	go test ./node/bench -run '^$' -bench Swarm -benchtime 1x
func BenchmarkSwarm(b *testing.B) {
	for i := 0; i < b.N; i++ {
		res, err := RunSwarm(context.Background(), SwarmConfig{Nodes: 10, Duration: 20 * time.Second, Seed: uint64(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		if os.Getenv("TANDEM_BENCH_TABLE") != "" {
			res.Table(os.Stdout)
		}
		b.ReportMetric(res.Propagation.P99, "prop-p99-ms")
		b.ReportMetric(res.TimeToMatch.P50, "ttm-p50-ms")
		b.ReportMetric(res.TimeToMatch.P99, "ttm-p99-ms")
		b.ReportMetric(res.FloorRatio[0], "ttm-p50/floor")
		b.ReportMetric(float64(res.MatchedPairs), "pairs")
		b.ReportMetric(float64(res.MaxPairs), "max-pairs")
		b.ReportMetric(float64(res.DoubleBookings+res.OneSidedBookings), "violations")
		b.ReportMetric(res.Traffic.Messages(), "msgs/node/min")
		b.ReportMetric(res.RSSPerNodeMiB, "MiB/node")
	}
}

// BenchmarkSession wraps the session benchmark with 5 pairs.
//
//	go test ./node/bench -run '^$' -bench Session -benchtime 1x
func BenchmarkSession(b *testing.B) {
	for i := 0; i < b.N; i++ {
		res, err := RunSession(context.Background(), SessionConfig{Pairs: 5, RelayWindow: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Setup.P50, "setup-p50-ms")
		b.ReportMetric(res.FirstRTP.P50, "first-rtp-p50-ms")
		b.ReportMetric(res.RelayCPUPct, "relay-cpu-%/stream")
	}
}

// testWriter sends a table to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// TestSwarmSybilsSmoke runs a small swarm with two attackers present
// (--sybils): they publish offers into honest classes and propose, and
// whatever they do, no honest booking is double or one-sided. How much
// they slow matching is measured, never asserted (docs/benchmarks.md).
func TestSwarmSybilsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an 8-node swarm for about 20 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := RunSwarm(ctx, SwarmConfig{Nodes: 8, Duration: 10 * time.Second, Settle: 10 * time.Second, Seed: 1, Sybils: 2})
	if err != nil {
		t.Fatal(err)
	}
	res.Table(testWriter{t})
	if res.DoubleBookings != 0 || res.OneSidedBookings != 0 {
		t.Errorf("%d double and %d one-sided bookings, want none", res.DoubleBookings, res.OneSidedBookings)
	}
	if res.Sybils != 2 || res.SybilOffers == 0 || res.SybilProposals == 0 {
		t.Errorf("the attackers did nothing: %d attackers, %d offers, %d proposals", res.Sybils, res.SybilOffers, res.SybilProposals)
	}
}
