package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
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
			ca, cb, ba, bb := bookFocusNowPair(t, a, b)
			ctx := context.Background()
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
			// Both check in at the end; the session is over on time, not
			// early, on either side.
			clock.Advance(time.Minute)
			nodetest.WaitFor(t, 15*time.Second, func() bool {
				pa, pb := phases()
				return pa == session.PhaseCheckin && pb == session.PhaseCheckin
			}, "both at check-in")
			sides := []struct {
				c  *client.Client
				id string
			}{{ca, ba.ID}, {cb, bb.ID}}
			for _, x := range sides {
				if _, err := x.c.SessionAction(ctx, x.id, "checkin", apiv1.SessionAction{Outcome: "done"}); err != nil {
					t.Fatalf("checking in: %v", err)
				}
			}
			for _, x := range sides {
				nodetest.WaitFor(t, 15*time.Second, func() bool {
					bs, _ := x.c.Bookings(ctx)
					for _, b := range bs {
						if b.ID == x.id {
							return b.State == "done"
						}
					}
					return false
				}, "booking %s done", x.id)
				bs, _ := x.c.Bookings(ctx)
				for _, b := range bs {
					if b.ID == x.id && b.Note != "" {
						t.Errorf("booking %s after a full session: note %q", b.ID, b.Note)
					}
				}
			}
		})
	}
}
