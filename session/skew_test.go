package session

import (
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/session/pb"
)

// skewedPair makes two introduced nodes: the offerer (lower ID) on clk,
// the answerer on clk plus skew.
func skewedPair(t *testing.T, clk *clock, skew time.Duration) (offerer, answerer *node) {
	t.Helper()
	a, b := newNode(t, "a", clk), newNode(t, "b", clk.skewed(skew))
	if b.h.ID() < a.h.ID() {
		a, b = b, a
		a.name, b.name = "a", "b"
		a.clk, b.clk = b.clk, a.clk
		a.restart(t)
		b.restart(t)
	}
	introduce(a, b)
	return a, b
}

// Two nodes whose clocks are MaxClockSkew apart, either way round, meet
// and go through the phases together, for a scheduled and a "now"
// session: the schedule runs on the offerer's clock, whose offset the
// answerer measures.
func TestPhasesAgreeUnderClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{MaxClockSkew, -MaxClockSkew} {
		for _, kind := range []string{KindScheduled, KindNow} {
			name := "answerer-ahead/" + kind
			if skew < 0 {
				name = "answerer-behind/" + kind
			}
			t.Run(name, func(t *testing.T) {
				clk := newClock()
				a, b := skewedPair(t, clk, skew)
				// The offerer is in its lobby (scheduled), or has just
				// matched and proposed the start from its clock (now).
				start := clk.Now().Add(4 * time.Minute)
				if kind == KindNow {
					start = clk.Now()
				}
				ba, bb := bookings(a, b, "skew", start, 25*time.Minute, kind)
				sa, sb := open(t, a, ba), open(t, b, bb)
				a.rec.wait(t, "a sees b join", is(EventPartnerJoined, ba.ID))
				b.rec.wait(t, "b sees a join", is(EventPartnerJoined, bb.ID))
				agree := func(want Phase) {
					t.Helper()
					waitFor(t, "both in "+string(want), func() bool {
						return sa.State().Phase == want && sb.State().Phase == want
					})
				}
				if kind == KindScheduled {
					agree(PhaseLobby)
					clk.Set(start)
				}
				agree(PhaseFocus)
				// b has measured a's clock (with b ahead, both were in
				// focus before that too) ...
				waitFor(t, "b to measure a's clock", func() bool {
					off := time.Duration(sb.State().ClockOffsetMs) * time.Millisecond
					return (off + skew).Abs() <= time.Second
				})
				// ... and each side's countdown is on its own clock: skew apart.
				if d := sb.State().NextPhaseAt.Sub(sa.State().NextPhaseAt) - skew; d.Abs() > time.Second {
					t.Errorf("next phase on b's clock is %v off a's plus the skew", d)
				}
				clk.Set(start.Add(24 * time.Minute))
				agree(PhaseWarning)
				clk.Set(start.Add(25 * time.Minute))
				agree(PhaseCheckin)
			})
		}
	}
}

// A partner's clock answers that are unsolicited, stale or claim more
// than the tolerated skew change nothing.
func TestBadClockAnswersIgnored(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	_, sb := meet(t, a, b, "badclock")
	now := clk.Now().UnixMilli()
	sb.mu.Lock()
	sb.probes = append(sb.probes, now-1)
	for name, c := range map[string]*pb.Clock{
		"unsolicited": {SentUnixMs: now + 60_000, EchoUnixMs: now - 7},
		"too far":     {SentUnixMs: now + int64(time.Hour/time.Millisecond), EchoUnixMs: now - 1},
	} {
		before := sb.clockOffset
		sb.onClockLocked(c, clk.Now())
		if sb.clockOffset != before {
			t.Errorf("%s: clock offset moved from %v to %v", name, before, sb.clockOffset)
		}
	}
	sb.probes = append(sb.probes, now-int64(time.Minute/time.Millisecond))
	sb.onClockLocked(&pb.Clock{SentUnixMs: now + 60_000, EchoUnixMs: now - int64(time.Minute/time.Millisecond)}, clk.Now())
	if sb.clockOffset != 0 {
		t.Errorf("an answer a minute late moved the clock offset to %v", sb.clockOffset)
	}
	sb.mu.Unlock()
	if st := sb.State(); st.Phase != PhaseFocus || st.ClockOffsetMs != 0 {
		t.Fatalf("state after bad clock answers: phase %s offset %d ms", st.Phase, st.ClockOffsetMs)
	}
}

// The answerer keeps the offerer's clock across a restart: while the
// offerer is away it still runs the schedule on the session clock.
func TestClockOffsetSurvivesRestart(t *testing.T) {
	clk := newClock()
	skew := -MaxClockSkew
	a, b := skewedPair(t, clk, skew)
	start := clk.Now().Add(2 * time.Minute) // a's lobby; b's clock says upcoming
	ba, bb := bookings(a, b, "restart", start, 25*time.Minute, KindScheduled)
	open(t, a, ba)
	sb := open(t, b, bb)
	b.rec.wait(t, "b sees a join", is(EventPartnerJoined, bb.ID))
	waitFor(t, "b to measure a's clock", func() bool {
		return time.Duration(sb.State().ClockOffsetMs)*time.Millisecond == -skew
	})
	a.m.Close() // the offerer goes away
	b.restart(t)
	sb = open(t, b, bb)
	if st := sb.State(); st.Phase != PhaseLobby || time.Duration(st.ClockOffsetMs)*time.Millisecond != -skew {
		t.Fatalf("after a restart without the offerer: phase %s, clock offset %d ms; want lobby, %v", st.Phase, st.ClockOffsetMs, -skew)
	}
}
