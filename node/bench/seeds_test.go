package bench

import "testing"

// TestSummarise: the median and spread over seeds, in the seeds' order.
func TestSummarise(t *testing.T) {
	runs := []*SwarmResult{
		{Seed: 1, MatchedPairs: 9, MaxPairs: 10, CPUPerNodeMS: 300},
		{Seed: 2, MatchedPairs: 10, MaxPairs: 10, CPUPerNodeMS: 100},
		{Seed: 3, MatchedPairs: 10, MaxPairs: 10, CPUPerNodeMS: 200},
	}
	got := map[string]SeriesRow{}
	for _, r := range summarise(runs) {
		got[r.Name] = r
	}
	cpu := got["CPU per node per minute"]
	if cpu.Median != 200 || cpu.Min != 100 || cpu.Max != 300 || cpu.Values[0] != 300 {
		t.Fatalf("CPU row %+v", cpu)
	}
	if p := got["matched / possible pairs"]; p.Median != 100 || p.Min != 90 {
		t.Fatalf("pairs row %+v", p)
	}
	even := summarise(runs[:2])
	for _, r := range even {
		if r.Name == "CPU per node per minute" && r.Median != 200 {
			t.Fatalf("median of two: %v", r.Median)
		}
	}
}

// TestMachineCPU: the machine's CPU counters read and move forward.
func TestMachineCPU(t *testing.T) {
	a := machineNow()
	if a.total == 0 || a.idle > a.total {
		t.Fatalf("/proc/stat read as %+v", a)
	}
	if got := busyPct(machineCPU{100, 50}, machineCPU{200, 75}); got != 75 {
		t.Fatalf("busy %v%%, want 75", got)
	}
	if loadAvg() == "unknown" {
		t.Fatal("no load average")
	}
	var h harnessMeter
	h.run(func() {
		x := 0
		for i := range 1_000_000 {
			x += i
		}
		_ = x
	})
	if h.total() <= 0 {
		t.Fatal("the harness meter measured nothing")
	}
}
