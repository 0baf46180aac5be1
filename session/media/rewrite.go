package media

import (
	"time"

	"github.com/pion/rtp"
)

// minSwitchGap is the least time a new source's first packet is placed
// after the old source's last, in media time: one 20 ms packet of audio or
// a frame at 50 fps. Two sources must never share a timestamp (a video
// receiver would take their packets for one frame).
const minSwitchGap = 20 * time.Millisecond

// rewriter keeps the RTP written to one outgoing track one continuous
// stream while its source changes: a browser reloads (new PeerConnection,
// new SSRC, random sequence numbers and timestamps), the partner's node
// reconnects. Without it the viewer sees sequence numbers and timestamps
// jump: SRTP replay protection drops the "old" packets, and a decoder
// that has seen newer frames discards the new source's keyframe, so the
// picture freezes for good.
//
// Each source's packets are shifted by a fixed offset, chosen when the
// source starts: its first sequence number follows the last one written,
// and its first timestamp follows the last one by the wall-clock time in
// between at the codec's clock rate. The first source is written as is.
// The outgoing SSRC is the track's own (pion sets it per binding).
type rewriter struct {
	clockRate uint32

	started bool
	src     uint64 // the current source
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16    // highest sequence number written
	lastTS  uint32    // timestamp of the packet with lastSeq
	lastAt  time.Time // when a packet was last written
}

func newRewriter(clockRate uint32) *rewriter { return &rewriter{clockRate: clockRate} }

// rewrite shifts h, a packet of source src that arrived at now, into the
// outgoing stream, and reports whether src is a new source.
func (w *rewriter) rewrite(src uint64, h *rtp.Header, now time.Time) (switched bool) {
	switch {
	case !w.started:
		w.started, w.src = true, src
		w.lastSeq, w.lastTS = h.SequenceNumber, h.Timestamp
	case src != w.src:
		switched = true
		w.src = src
		gap := max(now.Sub(w.lastAt), minSwitchGap)
		ticks := uint32(uint64(gap/time.Microsecond) * uint64(w.clockRate) / 1e6)
		w.seqOff = w.lastSeq + 1 - h.SequenceNumber
		w.tsOff = w.lastTS + ticks - h.Timestamp
	}
	h.SequenceNumber += w.seqOff
	h.Timestamp += w.tsOff
	// Serial number arithmetic (RFC 1982): a reordered older packet does
	// not move the end of the stream back.
	if d := h.SequenceNumber - w.lastSeq; d < 0x8000 || switched {
		w.lastSeq, w.lastTS = h.SequenceNumber, h.Timestamp
	}
	w.lastAt = now
	return switched
}
