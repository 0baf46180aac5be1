package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// SwarmSeries is RunSwarms's result: one run per seed, and for the main
// figures their median and spread (lowest and highest).
type SwarmSeries struct {
	Runs    []*SwarmResult `json:"runs"`
	Summary []SeriesRow    `json:"summary"`
}

// SeriesRow summarises one figure over the runs.
type SeriesRow struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"` // in the order of the seeds
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

// RunSwarms runs the swarm benchmark once per seed, one after the other,
// with cfg otherwise the same.
func RunSwarms(ctx context.Context, cfg SwarmConfig, seeds []uint64) (*SwarmSeries, error) {
	if len(seeds) == 0 {
		seeds = []uint64{cfg.Seed}
	}
	out := &SwarmSeries{}
	for _, seed := range seeds {
		c := cfg
		c.Seed = seed
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "seed %d (%d of %d)\n", seed, len(out.Runs)+1, len(seeds))
		}
		res, err := RunSwarm(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", seed, err)
		}
		out.Runs = append(out.Runs, res)
	}
	out.Summary = summarise(out.Runs)
	return out, nil
}

func summarise(runs []*SwarmResult) []SeriesRow {
	figures := []struct {
		name, unit string
		f          func(*SwarmResult) float64
	}{
		{"offer propagation p50", "ms", func(r *SwarmResult) float64 { return r.Propagation.P50 }},
		{"offer propagation p99", "ms", func(r *SwarmResult) float64 { return r.Propagation.P99 }},
		{"propagation incomplete", "records", func(r *SwarmResult) float64 { return float64(r.PropagationIncomplete) }},
		{"time-to-match p50", "ms", func(r *SwarmResult) float64 { return r.TimeToMatch.P50 }},
		{"time-to-match p99", "ms", func(r *SwarmResult) float64 { return r.TimeToMatch.P99 }},
		{"floor of a match", "ms", func(r *SwarmResult) float64 { return r.Floor.MatchMS }},
		{"time-to-match p50 / floor", "x", func(r *SwarmResult) float64 { return r.FloorRatio[0] }},
		{"time-to-match p99 / floor", "x", func(r *SwarmResult) float64 { return r.FloorRatio[2] }},
		{"matched / possible pairs", "%", func(r *SwarmResult) float64 { return pctOf(r.MatchedPairs, r.MaxPairs) }},
		{"double + one-sided bookings", "", func(r *SwarmResult) float64 { return float64(r.DoubleBookings + r.OneSidedBookings) }},
		{"CPU per node per minute", "ms", func(r *SwarmResult) float64 { return r.CPUPerNodeMS }},
		{"bytes sent per node per minute", "KiB", func(r *SwarmResult) float64 { return r.Traffic.BytesOut / 1024 }},
		{"messages per node per minute", "", func(r *SwarmResult) float64 { return r.Traffic.Messages() }},
		{"offer records received per node per minute", "", func(r *SwarmResult) float64 { return r.OffersInPerNode }},
		{"shards per node", "", func(r *SwarmResult) float64 { return r.ShardsPerNode }},
		{"machine busy", "%", func(r *SwarmResult) float64 { return r.MachineBusyPct }},
		{"this process", "% of all cores", func(r *SwarmResult) float64 { return r.ProcessCPUPct }},
		{"harness CPU", "s", func(r *SwarmResult) float64 { return r.HarnessCPUS }},
	}
	var rows []SeriesRow
	for _, fig := range figures {
		row := SeriesRow{Name: fig.name, Unit: fig.unit}
		for _, r := range runs {
			row.Values = append(row.Values, fig.f(r))
		}
		sorted := slices.Clone(row.Values)
		slices.Sort(sorted)
		row.Min, row.Max = sorted[0], sorted[len(sorted)-1]
		if k := len(sorted); k%2 == 1 {
			row.Median = sorted[k/2]
		} else {
			row.Median = (sorted[k/2-1] + sorted[k/2]) / 2
		}
		rows = append(rows, row)
	}
	return rows
}

func pctOf(a, b int) float64 {
	if b == 0 {
		return 100
	}
	return 100 * float64(a) / float64(b)
}

// Table writes every run's table, then the summary over the seeds.
func (s *SwarmSeries) Table(w io.Writer) {
	for i, r := range s.Runs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		r.Table(w)
	}
	if len(s.Runs) < 2 {
		return
	}
	var seeds, loads []string
	for _, r := range s.Runs {
		seeds = append(seeds, fmt.Sprint(r.Seed))
		loads = append(loads, fmt.Sprintf("seed %d: %s -> %s", r.Seed, r.LoadAvg, r.LoadAvgEnd))
	}
	fmt.Fprintf(w, "\nOver seeds %s (%d nodes): median [lowest - highest], each seed's value in order\n", strings.Join(seeds, ","), s.Runs[0].Nodes)
	fmt.Fprintf(w, "%-44s %s\n", "load average at start -> end", strings.Join(loads, "; "))
	for _, row := range s.Summary {
		var vals []string
		for _, v := range row.Values {
			vals = append(vals, fmtNum(v))
		}
		fmt.Fprintf(w, "%-44s %s %s [%s - %s]  (%s)\n", row.Name, fmtNum(row.Median), row.Unit, fmtNum(row.Min), fmtNum(row.Max), strings.Join(vals, ", "))
	}
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
