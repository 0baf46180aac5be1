package session

import (
	"time"

	"github.com/tandem-cowork/tandem/session/pb"
)

// MaxClockSkew is how far apart the two nodes' clocks may be: the same
// bound matchmaking matches under (matchmaking.MaxClockSkew). Real
// machines disagree by seconds to minutes.
const MaxClockSkew = 5 * time.Minute

// The session clock. Both sides must change phase together, so the
// schedule cannot follow each node's own clock: with clocks two minutes
// apart one side would be in focus while the other still waits in the
// lobby. The session runs on the offerer's clock (the lower peer ID). It
// is also the node that proposed the match, so the start of a "now"
// session, which the proposer took from its own clock, is "now" on the
// session clock for both. The answerer measures the offset to the
// offerer's clock over the data channel, NTP style, and runs the schedule
// on its own clock plus that offset.
const (
	// clockProbeEvery paces the answerer's probes (after the one sent
	// when the channel opens).
	clockProbeEvery = 10 * time.Second
	// maxProbeRTT: answers slower than this (or a clock that moved while
	// a probe was out) say little about the offset and are dropped.
	maxProbeRTT = 5 * time.Second
	// clockSamples is how many recent answers the estimate is taken from:
	// the one with the shortest round trip, whose error (at most half of
	// it) is the smallest.
	clockSamples = 8
	// clockJitter: a new estimate within this of the one in use is not
	// applied, so that measurement noise never moves a phase back and
	// forth at a boundary; a corrected clock moves it by more.
	clockJitter = 500 * time.Millisecond
	// maxClockOffset bounds a believable offset: the skew, plus a minute
	// for transit and rounding. A partner claiming more is not followed.
	maxClockOffset = MaxClockSkew + time.Minute
)

type clockSample struct {
	offset, rtt time.Duration
}

// sessionNowLocked is the session clock: ours plus the offset to the
// offerer's (zero on the offerer, and until the answerer has measured it).
func (s *Session) sessionNowLocked() time.Time { return s.m.cfg.Now().Add(s.clockOffset) }

// probeClockLocked sends the offerer a clock probe when one is due (the
// answerer only; the offerer's clock is the session's).
func (s *Session) probeClockLocked(force bool) {
	if s.offerer || s.link == nil || !s.link.open {
		return
	}
	if !force && time.Since(s.lastProbe) < clockProbeEvery {
		return
	}
	sent := s.m.cfg.Now().UnixMilli()
	if sent <= 0 {
		return
	}
	if s.sendLocked(&pb.Message{Body: &pb.Message_Clock{Clock: &pb.Clock{SentUnixMs: sent}}}) != nil {
		return
	}
	s.lastProbe = time.Now()
	s.probes = append(s.probes, sent)
	if len(s.probes) > clockSamples {
		s.probes = s.probes[len(s.probes)-clockSamples:]
	}
}

// onClockLocked answers a probe, or takes a measurement from an answer to
// one of ours.
func (s *Session) onClockLocked(c *pb.Clock, now time.Time) {
	if c.GetEchoUnixMs() == 0 {
		s.sendLocked(&pb.Message{Body: &pb.Message_Clock{Clock: &pb.Clock{
			SentUnixMs: now.UnixMilli(), EchoUnixMs: c.GetSentUnixMs(),
		}}})
		return
	}
	if s.offerer {
		return // we never probe: the session runs on our clock
	}
	t0 := c.GetEchoUnixMs()
	i := -1
	for j, p := range s.probes {
		if p == t0 {
			i = j
		}
	}
	if i < 0 {
		return // not a probe of ours, or answered already
	}
	s.probes = append(s.probes[:i], s.probes[i+1:]...)
	t3 := now.UnixMilli()
	rtt := time.Duration(t3-t0) * time.Millisecond
	if rtt < 0 || rtt > maxProbeRTT {
		return
	}
	offset := time.Duration(c.GetSentUnixMs()-(t0+t3)/2) * time.Millisecond
	if offset.Abs() > maxClockOffset {
		s.log.Warn("partner's clock is too far from ours to follow", "offset", offset)
		return
	}
	s.clockSamples = append(s.clockSamples, clockSample{offset, rtt})
	if len(s.clockSamples) > clockSamples {
		s.clockSamples = s.clockSamples[len(s.clockSamples)-clockSamples:]
	}
	best := s.clockSamples[0]
	for _, cs := range s.clockSamples[1:] {
		if cs.rtt < best.rtt {
			best = cs
		}
	}
	if s.clockKnown && (best.offset-s.clockOffset).Abs() <= clockJitter {
		return
	}
	s.log.Debug("following the offerer's clock", "offset", best.offset, "rtt", best.rtt)
	s.clockOffset, s.clockKnown = best.offset, true
	s.saveLiveLocked()
	s.evaluateLocked()
}
