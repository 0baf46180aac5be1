package media

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

type pkt struct {
	src uint64
	seq uint16
	ts  uint32
	at  time.Duration // arrival, from the start of the test
}

type out struct {
	seq      uint16
	ts       uint32
	switched bool
}

func TestRewriter(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name string
		rate uint32
		in   []pkt
		want []out
	}{{
		name: "one source passes as is",
		rate: 90000,
		in:   []pkt{{1, 100, 5000, 0}, {1, 101, 5000, 0}, {1, 102, 8000, 33 * ms}},
		want: []out{{100, 5000, false}, {101, 5000, false}, {102, 8000, false}},
	}, {
		name: "a reload: the new source continues the sequence, its timestamps follow the wall-clock gap",
		rate: 90000,
		in:   []pkt{{1, 100, 5000, 0}, {1, 101, 8000, 33 * ms}, {2, 40000, 123456, 2033 * ms}, {2, 40001, 126456, 2066 * ms}},
		want: []out{{100, 5000, false}, {101, 8000, false}, {102, 8000 + 2*90000, true}, {103, 8000 + 2*90000 + 3000, false}},
	}, {
		name: "audio at 48 kHz",
		rate: 48000,
		in:   []pkt{{1, 7, 960, 0}, {2, 9000, 1, 500 * ms}, {2, 9001, 961, 520 * ms}},
		want: []out{{7, 960, false}, {8, 960 + 24000, true}, {9, 960 + 24000 + 960, false}},
	}, {
		name: "a switch at once still moves the timestamp on",
		rate: 90000,
		in:   []pkt{{1, 10, 3000, 0}, {2, 500, 0, 0}},
		want: []out{{10, 3000, false}, {11, 3000 + 1800, true}},
	}, {
		name: "sequence numbers and timestamps wrap",
		rate: 90000,
		in:   []pkt{{1, 65535, 0xffffff00, 0}, {2, 30000, 5, 10 * ms}, {2, 30001, 905, 20 * ms}},
		want: []out{{65535, 0xffffff00, false}, {0, 1800 - 0x100, true}, {1, 1800 - 0x100 + 900, false}},
	}, {
		name: "a late packet does not move the end back",
		rate: 90000,
		in:   []pkt{{1, 200, 9000, 0}, {1, 202, 12000, 33 * ms}, {1, 201, 9000, 34 * ms}, {2, 7, 77, 100 * ms}},
		want: []out{{200, 9000, false}, {202, 12000, false}, {201, 9000, false}, {203, 12000 + 5940, true}},
	}, {
		name: "back to the first source is another switch",
		rate: 90000,
		in:   []pkt{{1, 1, 100, 0}, {2, 60000, 7, 100 * ms}, {1, 2, 200, 200 * ms}},
		want: []out{{1, 100, false}, {2, 100 + 9000, true}, {3, 100 + 18000, true}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			w := newRewriter(c.rate)
			t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
			for i, p := range c.in {
				h := rtp.Header{SequenceNumber: p.seq, Timestamp: p.ts, SSRC: 42}
				sw := w.rewrite(p.src, &h, t0.Add(p.at))
				got := out{h.SequenceNumber, h.Timestamp, sw}
				if got != c.want[i] {
					t.Errorf("packet %d %+v: got %+v, want %+v", i, p, got, c.want[i])
				}
				if h.SSRC != 42 {
					t.Errorf("packet %d: SSRC changed to %d", i, h.SSRC)
				}
			}
		})
	}
}

// FuzzRewriter: whatever the sources send, within one source the output
// keeps the input's spacing, and a new source's first packet follows the
// highest sequence number written so far.
func FuzzRewriter(f *testing.F) {
	f.Add([]byte{1, 0, 10, 0, 0, 0, 1, 2, 0, 200, 0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		w := newRewriter(90000)
		now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
		var last struct {
			src           uint64
			inSeq, outSeq uint16
			inTS, outTS   uint32
		}
		var highest uint16
		started := false
		for len(data) >= 7 {
			src := uint64(data[0] % 3)
			seq := uint16(data[1])<<8 | uint16(data[2])
			ts := uint32(data[3])<<24 | uint32(data[4])<<16 | uint32(data[5])<<8
			now = now.Add(time.Duration(data[6]) * time.Millisecond)
			data = data[7:]
			h := rtp.Header{SequenceNumber: seq, Timestamp: ts}
			sw := w.rewrite(src, &h, now)
			switch {
			case !started:
				if sw || h.SequenceNumber != seq || h.Timestamp != ts {
					t.Fatalf("first packet rewritten: %d/%d -> %d/%d", seq, ts, h.SequenceNumber, h.Timestamp)
				}
			case src != last.src:
				if !sw || h.SequenceNumber != highest+1 {
					t.Fatalf("switch to %d: seq %d after highest %d (switched %v)", src, h.SequenceNumber, highest, sw)
				}
			default:
				if sw || h.SequenceNumber-last.outSeq != seq-last.inSeq || h.Timestamp-last.outTS != ts-last.inTS {
					t.Fatalf("same source: spacing changed")
				}
			}
			if !started || h.SequenceNumber-highest < 0x8000 || src != last.src {
				highest = h.SequenceNumber
			}
			started = true
			last.src, last.inSeq, last.outSeq, last.inTS, last.outTS = src, seq, h.SequenceNumber, ts, h.Timestamp
		}
	})
}
