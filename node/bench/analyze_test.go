package bench

import (
	"bytes"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestAnalysisMatchesReference checks the post-run analysis against the
// implementation it replaced (analyze_ref_test.go, which looked every
// record up on every node) on synthetic runs: every figure, every sample
// in order and every problem line must be the same.
func TestAnalysisMatchesReference(t *testing.T) {
	for _, c := range []struct {
		n    int
		seed uint64
		o    synthOpts
	}{
		{200, 1, synthOpts{matchShare: 0.1}},
		{200, 2, synthOpts{matchShare: 0.5, monotonic: true}},
		{80, 3, synthOpts{matchShare: 0.3, every: 4 * time.Second}},
	} {
		t.Run(fmt.Sprintf("N=%d/seed=%d/%+v", c.n, c.seed, c.o), func(t *testing.T) {
			r := synthSwarm(c.n, c.seed, c.o)
			t.Log(r)
			compareAnalysis(t, r)
		})
	}
}

func compareAnalysis(t *testing.T, r synthRun) {
	t.Helper()
	chk, want := checkBookings(r.nodes, r.end), refCheckBookings(r.nodes, r.end)
	if !reflect.DeepEqual(chk, want) {
		t.Errorf("checkBookings: %d pairs, %d double, %d one-sided, %d unconfirmed, %d problems; reference %d, %d, %d, %d, %d",
			len(chk.pairs), chk.double, chk.oneSided, chk.unconfirmed, len(chk.problems),
			len(want.pairs), want.double, want.oneSided, want.unconfirmed, len(want.problems))
	}
	if len(chk.pairs) == 0 || chk.oneSided == 0 {
		t.Errorf("the synthetic run has %d pairs and %d one-sided bookings: it tests too little", len(chk.pairs), chk.oneSided)
	}
	for _, opp := range []time.Duration{time.Second, time.Minute} {
		e, s := exactMax(r.reqs, r.nodes, chk.pairs, r.end, opp)
		we, ws := refExactMax(r.reqs, r.nodes, chk.pairs, r.end, opp)
		if e != we || s != ws {
			t.Errorf("exactMax (opportunity %v) = %d, %d; reference %d, %d", opp, e, s, we, ws)
		}
	}
	mt, wmt := matchTimes(r.nodes, chk.pairs, r.end), refMatchTimes(r.nodes, chk.pairs, r.end)
	slices.Sort(mt) // both walk a map
	slices.Sort(wmt)
	if !slices.Equal(mt, wmt) {
		t.Errorf("matchTimes: %v; reference %v", distOf(mt), distOf(wmt))
	}
	for _, from := range []time.Time{r.from, r.from.Add(time.Minute)} {
		s, inc, open, wd := propagation(r.nodes, from, r.end)
		ws, winc, wopen, wwd := refPropagation(r.nodes, from, r.end)
		if !slices.Equal(s, ws) || inc != winc || open != wopen || wd != wwd {
			t.Errorf("propagation from +%v: %v, %d incomplete, %d open, %d withdrawn; reference %v, %d, %d, %d",
				from.Sub(r.from), distOf(s), inc, open, wd, distOf(ws), winc, wopen, wwd)
		}
		if inc == 0 || wd == 0 || len(s) == 0 {
			t.Errorf("propagation from +%v: %d samples, %d incomplete, %d withdrawn: the synthetic run tests too little", from.Sub(r.from), len(s), inc, wd)
		}
	}
	// Records of one booking that reached a node out of seq order (after
	// a restart): the first with a seq of at least s is not the first
	// with a higher one.
	ix, unordered := newOfferIndex(r.nodes), 0
	for _, runs := range ix.runs {
		for _, run := range runs {
			for i := run.from + 1; i < run.to; i++ {
				offers := r.nodes[run.node].offers
				if offers[ix.got[i].idx].e.Seq < offers[ix.got[i-1].idx].e.Seq {
					unordered++
					break
				}
			}
		}
	}
	if unordered == 0 {
		t.Errorf("no node received the records of a booking out of order: the synthetic run tests too little")
	}
	var got, ref bytes.Buffer
	debugPropagation(&got, r.nodes, r.from, r.end)
	refDebugPropagation(&ref, r.nodes, r.from, r.end)
	if got.String() != ref.String() {
		t.Errorf("debugPropagation wrote\n%s\nthe reference\n%s", &got, &ref)
	}
}

// synthCache keeps the synthetic runs the benchmarks share: building one
// of N = 1000 takes seconds.
var synthCache sync.Map // synthKey -> synthRun

type synthKey struct {
	n int
	o synthOpts
}

func cachedSynth(n int, o synthOpts) synthRun {
	k := synthKey{n, o}
	if r, ok := synthCache.Load(k); ok {
		return r.(synthRun)
	}
	r := synthSwarm(n, 1, o)
	synthCache.Store(k, r)
	return r
}

// BenchmarkAnalysis times each step of the post-run analysis on a
// synthetic run of 1000 nodes (synthSwarm; building it, some seconds, is
// not timed), and the implementation it replaced (ref). cpu-ms/op is the
// CPU time of the benchmark's own thread, which a loaded machine changes
// less than the wall time.
//
//	go test ./node/bench -run '^$' -bench Analysis -benchtime 3x
func BenchmarkAnalysis(b *testing.B) {
	// As in the N = 1000 run that collapsed: few matches, so every
	// booking searches, and is re-announced, for the whole run.
	benchAnalysis(b, cachedSynth(1000, synthOpts{matchShare: 0.1, monotonic: true}))
}

func benchAnalysis(b *testing.B, r synthRun) {
	b.Logf("synthetic run: %v", r)
	chk := checkBookings(r.nodes, r.end)
	steps := []struct {
		name      string
		new, prev func()
	}{
		{"checkBookings", func() { checkBookings(r.nodes, r.end) }, func() { refCheckBookings(r.nodes, r.end) }},
		{"exactMax", func() { exactMax(r.reqs, r.nodes, chk.pairs, r.end, time.Second) },
			func() { refExactMax(r.reqs, r.nodes, chk.pairs, r.end, time.Second) }},
		{"matchTimes", func() { matchTimes(r.nodes, chk.pairs, r.end) }, func() { refMatchTimes(r.nodes, chk.pairs, r.end) }},
		{"propagation", func() { propagation(r.nodes, r.from, r.end) }, func() { refPropagation(r.nodes, r.from, r.end) }},
		{"offersIn", func() { offersIn(r.nodes, r.from, r.end) }, nil},
		{"all", func() { analyzeAll(r, checkBookings, exactMax, matchTimes, propagation) },
			func() { analyzeAll(r, refCheckBookings, refExactMax, refMatchTimes, refPropagation) }},
	}
	for _, s := range steps {
		b.Run(s.name, func(b *testing.B) { timeCPU(b, s.new) })
		if s.prev != nil {
			b.Run(s.name+"/ref", func(b *testing.B) { timeCPU(b, s.prev) })
		}
	}
}

// BenchmarkAnalysisStorm is BenchmarkAnalysis on a smaller run whose
// offers are re-announced every 3 s instead of every 24-30 s, as in a
// storm of shard joins: a node then holds a hundred records or more of
// each booking on its shards.
//
//	go test ./node/bench -run '^$' -bench AnalysisStorm -benchtime 3x
func BenchmarkAnalysisStorm(b *testing.B) {
	benchAnalysis(b, cachedSynth(300, synthOpts{matchShare: 0.1, every: 3 * time.Second, monotonic: true}))
}

// analyzeAll runs the analysis of RunSwarm after settling.
func analyzeAll(r synthRun,
	check func([]nodeState, time.Time) bookingCheck,
	exact func([]request, []nodeState, map[bkey]bkey, time.Time, time.Duration) (int, int),
	times func([]nodeState, map[bkey]bkey, time.Time) []time.Duration,
	prop func([]nodeState, time.Time, time.Time) ([]time.Duration, int, int, int)) {
	chk := check(r.nodes, r.end)
	exact(r.reqs, r.nodes, chk.pairs, r.end, time.Second)
	distOf(times(r.nodes, chk.pairs, r.end))
	samples, _, _, _ := prop(r.nodes, r.from, r.end)
	distOf(samples)
	offersIn(r.nodes, r.from, r.end)
}

// timeCPU runs f in the benchmark loop and reports the thread's CPU time
// per run too.
func timeCPU(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu time.Duration
	for b.Loop() {
		t0 := threadCPU()
		f()
		cpu += threadCPU() - t0
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
