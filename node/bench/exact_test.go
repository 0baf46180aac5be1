package bench

import (
	"math/rand/v2"
	"testing"
)

// bruteMax is the maximum matching by dynamic programming over vertex
// subsets, for small graphs.
func bruteMax(n int, edge [][]bool) int {
	memo := map[uint32]int{}
	var best func(mask uint32) int
	best = func(mask uint32) int {
		if v, ok := memo[mask]; ok {
			return v
		}
		first := -1
		for i := range n {
			if mask&(1<<i) == 0 {
				first = i
				break
			}
		}
		if first == -1 {
			return 0
		}
		m := mask | 1<<first
		r := best(m) // first stays unmatched
		for j := first + 1; j < n; j++ {
			if m&(1<<j) == 0 && edge[first][j] {
				r = max(r, 1+best(m|1<<j))
			}
		}
		memo[mask] = r
		return r
	}
	return best(0)
}

func TestMaxMatchingAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for it := 0; it < 3000; it++ {
		n := 1 + rng.IntN(13)
		p := rng.Float64()
		edge := make([][]bool, n)
		for i := range edge {
			edge[i] = make([]bool, n)
		}
		adj := make([][]int, n)
		for i := range n {
			for j := i + 1; j < n; j++ {
				if rng.Float64() < p {
					edge[i][j], edge[j][i] = true, true
					adj[i] = append(adj[i], j)
					adj[j] = append(adj[j], i)
				}
			}
		}
		mate := maxMatching(n, adj)
		for v, m := range mate {
			if m != -1 && (mate[m] != v || !edge[v][m]) {
				t.Fatalf("graph %v: mate %v is not a matching", adj, mate)
			}
		}
		if got, want := matchingSize(mate), bruteMax(n, edge); got != want {
			t.Fatalf("graph %v: matching of %d pairs, maximum is %d", adj, got, want)
		}
	}
}

// The case greedy matchers get wrong: desk - anything - anything - moving.
// Pairing the two "anything" requests strands both others.
func TestMaxMatchingActivities(t *testing.T) {
	// 0 desk, 1 anything, 2 anything, 3 moving
	adj := [][]int{{1, 2}, {0, 2, 3}, {0, 1, 3}, {1, 2}}
	if got := matchingSize(maxMatching(4, adj)); got != 2 {
		t.Fatalf("got %d pairs, want 2", got)
	}
}
