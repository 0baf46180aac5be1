package bench

// maxMatching returns a maximum matching of the general (non-bipartite)
// graph with n vertices and adjacency lists adj, as mate[v] (-1 when v is
// unmatched), by Edmonds' blossom algorithm in O(V^3). Requests with
// activity "anything" are compatible with "desk" and "moving", which are
// not compatible with each other, so the compatibility graph is not
// bipartite and greedy matchings can fall short of the maximum.
func maxMatching(n int, adj [][]int) []int {
	match := make([]int, n)
	parent := make([]int, n)
	base := make([]int, n)
	used := make([]bool, n)
	inBlossom := make([]bool, n)
	queue := make([]int, 0, n)
	for i := range match {
		match[i] = -1
	}

	lca := func(a, b int) int {
		seen := make([]bool, n)
		for {
			a = base[a]
			seen[a] = true
			if match[a] == -1 {
				break
			}
			a = parent[match[a]]
		}
		for {
			b = base[b]
			if seen[b] {
				return b
			}
			b = parent[match[b]]
		}
	}
	markPath := func(v, b, child int) {
		for base[v] != b {
			inBlossom[base[v]] = true
			inBlossom[base[match[v]]] = true
			parent[v] = child
			child = match[v]
			v = parent[match[v]]
		}
	}
	findPath := func(root int) int {
		for i := range n {
			used[i], parent[i], base[i] = false, -1, i
		}
		used[root] = true
		queue = append(queue[:0], root)
		for qh := 0; qh < len(queue); qh++ {
			v := queue[qh]
			for _, to := range adj[v] {
				if base[v] == base[to] || match[v] == to {
					continue
				}
				if to == root || (match[to] != -1 && parent[match[to]] != -1) {
					cur := lca(v, to)
					for i := range inBlossom {
						inBlossom[i] = false
					}
					markPath(v, cur, to)
					markPath(to, cur, v)
					for i := range n {
						if inBlossom[base[i]] {
							base[i] = cur
							if !used[i] {
								used[i] = true
								queue = append(queue, i)
							}
						}
					}
				} else if parent[to] == -1 {
					parent[to] = v
					if match[to] == -1 {
						return to
					}
					used[match[to]] = true
					queue = append(queue, match[to])
				}
			}
		}
		return -1
	}

	for v := range n {
		if match[v] != -1 {
			continue
		}
		// A greedy start saves most augmentations.
		for _, to := range adj[v] {
			if match[to] == -1 && to != v {
				match[v], match[to] = to, v
				break
			}
		}
	}
	for v := range n {
		if match[v] != -1 {
			continue
		}
		if u := findPath(v); u != -1 {
			for u != -1 {
				pv := parent[u]
				ppv := match[pv]
				match[u], match[pv] = pv, u
				u = ppv
			}
		}
	}
	return match
}

// matchingSize counts the pairs of a mate slice.
func matchingSize(mate []int) int {
	n := 0
	for v, m := range mate {
		if m > v {
			n++
		}
	}
	return n
}
