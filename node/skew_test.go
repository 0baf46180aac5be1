package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session"
)

// Two nodes whose clocks are five minutes apart, either way round, ask to
// focus now: they match, meet, and go through the phases together.
func TestFocusNowUnderClockSkew(t *testing.T) {
	if matchmaking.MaxClockSkew != session.MaxClockSkew {
		t.Fatalf("matchmaking tolerates %v of clock skew, sessions %v", matchmaking.MaxClockSkew, session.MaxClockSkew)
	}
	for _, skew := range []time.Duration{5 * time.Minute, -5 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			clock := &nodetest.Clock{}
			cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
			cfgA.Now = clock.Now
			cfgB.Now = func() time.Time { return clock.Now().Add(skew) }
			a := nodetest.Start(t, cfgA)
			nodetest.Link(t, &cfgB, a)
			b := nodetest.Start(t, cfgB)
			ca, cb := apiClientFor(a), apiClientFor(b)
			ctx := context.Background()
			ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
			if err != nil {
				t.Fatal(err)
			}
			bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
			if err != nil {
				t.Fatal(err)
			}
			phases := func() (session.Phase, session.Phase) {
				sa, errA := ca.Session(ctx, ba.ID)
				sb, errB := cb.Session(ctx, bb.ID)
				if errA != nil || errB != nil || !sa.Connected || !sb.Connected {
					return "", "-"
				}
				return sa.Phase, sb.Phase
			}
			nodetest.WaitFor(t, 30*time.Second, func() bool {
				pa, pb := phases()
				return pa == session.PhaseFocus && pb == session.PhaseFocus
			}, "both in focus")
			clock.Advance(24 * time.Minute)
			nodetest.WaitFor(t, 15*time.Second, func() bool {
				pa, pb := phases()
				return pa == session.PhaseWarning && pb == session.PhaseWarning
			}, "both warned of the end")
		})
	}
}
