package session

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// BenchmarkSessionSetup measures, on loopback, from both nodes opening a
// "now" session to (1) the partner's hello arriving over the data channel
// (ms-joined: PeerConnection up, data channel open, one message), and
// (2) the first RTP packet from A's browser leg arriving at B's browser leg
// through both nodes (ms-first-rtp; the browsers attach right after Open).
// Reported as medians:
//
//	go test ./session -run '^$' -bench SessionSetup -benchtime 20x
func BenchmarkSessionSetup(b *testing.B) {
	clk := newClock()
	a, bn := newPair(b, clk)
	var joined, firstRTP []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		browserA, browserB := newTestBrowser(b), newTestBrowser(b)
		ba, bb := bookings(a, bn, fmt.Sprintf("bench-%d", i), clk.Now(), 25*time.Minute, KindNow)
		b.StartTimer()

		t0 := time.Now()
		sa, sb := open(b, a, ba), open(b, bn, bb)
		browserA.attach(sa)
		browserB.attach(sb)
		browserA.send(1, 2*time.Millisecond)
		_, at := a.rec.waitAt(b, "b joins", is(EventPartnerJoined, ba.ID))
		browserB.received(webrtc.RTPCodecTypeVideo, 1)
		joined = append(joined, at.Sub(t0))
		browserB.mu.Lock()
		firstRTP = append(firstRTP, browserB.first.Sub(t0))
		browserB.mu.Unlock()

		b.StopTimer()
		sa.Leave("benchmark")
		waitDone(b, sa)
		waitDone(b, sb)
		browserA.close()
		browserB.close()
		b.StartTimer()
	}
	b.ReportMetric(median(joined), "ms-joined")
	b.ReportMetric(median(firstRTP), "ms-first-rtp")
}

func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
