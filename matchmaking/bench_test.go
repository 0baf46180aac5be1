package matchmaking

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkTimeToMatch measures, per matched pair, the time from the moment
// both compatible bookings exist (the later CreatedAt) to the moment both
// sides hold the confirmed match. All nodes book the same slot at once;
// real hosts on loopback, real badger with synced writes, sparse topology.
//
//	go test ./matchmaking -run '^$' -bench TimeToMatch -benchtime 5x
func BenchmarkTimeToMatch(b *testing.B) {
	for _, n := range []int{2, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var mu sync.Mutex
			confirmedAt := map[string]time.Time{}
			record := func(c *Config) {
				c.OnBooking = func(bk Booking) {
					if bk.Confirmed {
						mu.Lock()
						if _, ok := confirmedAt[bk.ID]; !ok {
							confirmedAt[bk.ID] = time.Now()
						}
						mu.Unlock()
					}
				}
			}
			nodes := make([]*testNode, n)
			for i := range nodes {
				nodes[i] = newTestNode(b, record)
			}
			connectSparse(b, nodes)
			var samples []time.Duration
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				slot := nextSlot(time.Duration(it+1) * 2 * time.Hour)
				ids := make([]string, n)
				var wg sync.WaitGroup
				for i, nd := range nodes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						bk, err := nd.svc.Book(context.Background(), BookRequest{At: slot, DurationMin: 25})
						if err != nil {
							b.Error(err)
						}
						ids[i] = bk.ID
					}()
				}
				wg.Wait()
				waitFor(b, 60*time.Second, "all matched", func() bool {
					mu.Lock()
					defer mu.Unlock()
					for _, id := range ids {
						if _, ok := confirmedAt[id]; !ok {
							return false
						}
					}
					return true
				})
				for i, nd := range nodes {
					bk := nd.booking(ids[i])
					var partner *testNode
					for _, o := range nodes {
						if o.id().String() == bk.Partner {
							partner = o
						}
					}
					if nd.id() > partner.id() {
						continue // count each pair once
					}
					pb := partner.booking(bk.PartnerBooking)
					both := bk.CreatedAt
					if pb.CreatedAt.After(both) {
						both = pb.CreatedAt
					}
					mu.Lock()
					done := confirmedAt[bk.ID]
					if t := confirmedAt[pb.ID]; t.After(done) {
						done = t
					}
					mu.Unlock()
					samples = append(samples, done.Sub(both))
				}
			}
			b.StopTimer()
			slices.Sort(samples)
			q := func(p float64) float64 {
				return float64(samples[int(p*float64(len(samples)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.95), "p95-ms")
			b.ReportMetric(q(1), "max-ms")
			b.ReportMetric(float64(len(samples)), "pairs")
		})
	}
}
