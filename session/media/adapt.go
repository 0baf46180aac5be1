package media

import (
	"sync"
	"time"

	"github.com/pion/rtcp"
	"golang.org/x/time/rate"
)

// Media adaptation on a path of limited capacity (a peer's TURN relay
// polices each peer to a few Mbit/s, both directions together). The relay
// cannot re-encode, so it adapts at the source: it caps the browser's
// video encoder with REMB (which browsers honour as an upper bound), and
// it drops video towards the partner beyond the cap itself, so a camera
// that does not listen cannot crowd out audio and the data channel. The
// cap follows the loss the partner's node reports for our video in its
// RTCP receiver reports (less the packets the cap itself dropped, which
// the partner also counts as lost), a loss-based controller in the manner of GCC's
// (draft-ietf-rmcat-gcc-02 section 6): down to what got through when loss
// is high (at most halving per round), up by 8% when there is almost none. Below MinVideoBitrate video
// stops altogether (audio only) and is tried again after AudioOnlyHold.
const (
	AdaptInterval     = 2 * time.Second
	RelayStartBitrate = 800_000 // bit/s: video within a 2 Mbit/s relay share, both ways
	// RelayMaxBitrate: a Tandem peer's TURN relay allows each peer 2
	// Mbit/s, both directions together (peerturn.DefaultPeerBandwidth),
	// and both users send video through it. Above about 850 kbit/s each
	// way (with audio and packet overhead) the relay drops packets, and
	// the loss cut the cap again and again: in the NAT lab's load step,
	// with a ceiling of 1.5 Mbit/s, 440-874 kbit/s arrived; with 850
	// kbit/s, a steady 845 (docs/reach.md).
	RelayMaxBitrate = 850_000 // bit/s
	MinVideoBitrate = 150_000 // bit/s: below this, audio only
	AudioOnlyHold   = 20 * time.Second
	lossHigh        = 0.10
	lossLow         = 0.02
)

// adapter is the relay's video cap towards the partner.
type adapter struct {
	mu        sync.Mutex
	on        bool
	limit     int // bit/s; 0 when off
	audioOnly bool
	since     time.Time     // when audio-only began
	bucket    *rate.Limiter // video bytes towards the partner
	lost      uint8         // highest fraction lost (x/256) reported since the last tick
	reported  bool          // a receiver report came since the last tick
	sent      uint64        // video bytes written towards the partner since the last tick
	// Video packets let through and dropped at the cap since the last
	// tick: the partner counts our own drops as lost (the relay keeps the
	// camera's sequence numbers), which is not the path's loss.
	sentPkts, droppedPkts uint64
	lastTick              time.Time
}

// VideoLimit is the cap on video towards the partner (0: none) and
// whether video is off for want of capacity.
type VideoLimit struct {
	Bitrate   int  `json:"video_bitrate_limit"`
	AudioOnly bool `json:"audio_only"`
}

// Adapt turns the adaptation on (the session's path goes through a relay)
// or off (a direct path: the browsers' own congestion control is enough).
func (r *Relay) Adapt(on bool, now time.Time) {
	a := &r.adapt
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.on == on {
		return
	}
	a.on = on
	a.audioOnly, a.lost, a.reported, a.sent, a.lastTick = false, 0, false, 0, now
	a.limit = 0
	if on {
		a.setLimitLocked(RelayStartBitrate)
	}
}

// Limit reports the current cap.
func (r *Relay) Limit() VideoLimit {
	a := &r.adapt
	a.mu.Lock()
	defer a.mu.Unlock()
	return VideoLimit{Bitrate: a.limit, AudioOnly: a.audioOnly}
}

func (a *adapter) setLimitLocked(bps int) {
	a.limit = bps
	// A quarter second of burst: a keyframe gets through whole.
	if a.bucket == nil {
		a.bucket = rate.NewLimiter(rate.Limit(bps/8), max(bps/8/4, 8<<10))
	} else {
		a.bucket.SetLimit(rate.Limit(bps / 8))
		a.bucket.SetBurst(max(bps/8/4, 8<<10))
	}
}

// allowVideo says whether a video packet of n bytes may go to the partner.
func (a *adapter) allowVideo(n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on {
		return true
	}
	if a.audioOnly {
		return false
	}
	if !a.bucket.AllowN(time.Now(), n) {
		a.droppedPkts++
		return false
	}
	a.sent += uint64(n)
	a.sentPkts++
	return true
}

// noteReport takes the fraction lost of a receiver report block about our
// video towards the partner.
func (a *adapter) noteReport(rr *rtcp.ReceiverReport, ssrcs map[uint32]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range rr.Reports {
		if ssrcs[b.SSRC] {
			a.reported = true
			a.lost = max(a.lost, b.FractionLost)
		}
	}
}

// tick moves the cap; it reports whether video resumed (the camera then
// owes the partner a keyframe).
func (a *adapter) tick(now time.Time) (resumed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on {
		return false
	}
	dt := now.Sub(a.lastTick).Seconds()
	sentRate := 0.0
	if dt > 0 {
		sentRate = float64(a.sent) * 8 / dt
	}
	loss, reported := pathLoss(float64(a.lost)/256, a.sentPkts, a.droppedPkts), a.reported
	a.lost, a.reported, a.sent, a.sentPkts, a.droppedPkts, a.lastTick = 0, false, 0, 0, 0, now
	switch {
	case a.audioOnly:
		if now.Sub(a.since) >= AudioOnlyHold {
			a.audioOnly = false
			a.setLimitLocked(2 * MinVideoBitrate)
			return true
		}
	case !reported:
	case loss > lossHigh:
		// What got through, but at most halving per round: one report
		// of a burst lost is not the path's capacity.
		next := a.limit * 3 / 4
		if got := int(sentRate * (1 - loss)); sentRate > 0 && got < next {
			next = max(got, a.limit/2)
		}
		if next < MinVideoBitrate {
			a.audioOnly, a.since = true, now
			return false
		}
		a.setLimitLocked(next)
	case loss < lossLow:
		a.setLimitLocked(min(a.limit*108/100, RelayMaxBitrate))
	}
	return false
}

// pathLoss is the share of the video we sent that the path lost, given
// the share the partner reports lost and the packets we sent and dropped
// at the cap ourselves: the partner received (1-reported) of sent+dropped.
// Without this, a camera that does not honour REMB (a browser's encoder
// overshooting, or one that ignores it) had every packet the cap dropped
// counted as the path's loss, and the cap fell round after round to audio
// only on a path with room to spare.
func pathLoss(reported float64, sent, dropped uint64) float64 {
	if dropped == 0 || sent == 0 {
		return reported
	}
	total := float64(sent + dropped)
	return min(max(1-(1-reported)*total/float64(sent), 0), 1)
}

// adaptLoop ticks the controller and tells the browser's camera the cap.
func (r *Relay) adaptLoop() {
	defer r.wg.Done()
	t := time.NewTicker(AdaptInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			if r.adapt.tick(now) {
				r.RequestKeyframe(Browser)
			}
			r.sendREMB()
		}
	}
}

// sendREMB caps the browser's video encoder at the current limit (audio
// only: the minimum, as the camera keeps running for the user's own view).
func (r *Relay) sendREMB() {
	lim := r.Limit()
	if lim.Bitrate == 0 {
		return
	}
	bps := lim.Bitrate
	if lim.AudioOnly {
		bps = MinVideoBitrate / 2
	}
	r.mu.Lock()
	l := r.legs[Browser]
	if l == nil || !l.hasVideo {
		r.mu.Unlock()
		return
	}
	pc, ssrc := l.pc, l.videoSSRC
	r.mu.Unlock()
	if err := pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{
		Bitrate: float32(bps), SSRCs: []uint32{uint32(ssrc)},
	}}); err != nil {
		r.log.Debug("sending REMB", "err", err)
	}
}
