package matchmaking

import (
	"context"
	"math"
	"time"
)

// clock is the Service's one clock, Config.Now. Every time the matcher
// reads, compares or waits for runs on it: offer expiry and the
// re-announcements that keep offers alive, holds, backoffs and the plan's
// grace, the matcher's wake-ups, re-checks of matches, Cancel re-sends and
// board pulls. Under a compressed or fast-forwarded clock (the demo, tests)
// they all keep their proportions: a 10 s hold lasts 10 s of the node's
// clock, and so does everything it is weighed against.
//
// Stream I/O deadlines (SetDeadline, and the timeouts of dialling and
// publishing) stay in real time: they bound how long a socket or a peer
// may stall, which is the pace of the machine and the network, not of the
// schedule. On a 100x clock a 5 s bound would cut every round trip of a
// loaded machine after 50 ms. A hold outliving its stream is harmless:
// the proposer's re-check sends the Confirm again on a new stream.
type clock struct {
	now  func() time.Time
	rate func() float64 // how fast now runs against real time; nil: 1
	real bool           // now is time.Now: plain timers serve
}

// clockPoll bounds how long a wait on an injected clock sleeps before it
// reads the clock again: the clock may jump (a test moves it on) or change
// pace (the demo's FastForward).
const clockPoll = 50 * time.Millisecond

// wait returns true once d has passed on the clock or wake (which may be
// nil) receives, and false when ctx ends first.
func (c clock) wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if c.real {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		case <-t.C:
		}
		return true
	}
	// d is counted in the clock's forward steps: a jump ahead (a test
	// moving the clock on) counts, a step back (a clock set back) does
	// not make the wait longer.
	left, prev := d, c.now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		now := c.now()
		if step := now.Sub(prev); step > 0 {
			left -= step
		}
		prev = now
		if left <= 0 {
			return ctx.Err() == nil
		}
		rate := 1.0
		if c.rate != nil {
			rate = max(c.rate(), 1e-3)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(min(time.Duration(float64(left)/rate), clockPoll))
		select {
		case <-ctx.Done():
			return false
		case <-wake:
			return true
		case <-t.C:
		}
	}
}

// elapsed is how long ago t was on the clock. A t ahead of now (the
// clock was set back since) counts as long ago: whatever waited for it is
// due, rather than waiting for the clock to catch up.
func elapsed(now, t time.Time) time.Duration {
	if now.Before(t) {
		return math.MaxInt64
	}
	return now.Sub(t)
}

// every runs f every d of the clock until ctx ends.
func (c clock) every(ctx context.Context, d time.Duration, f func()) {
	for c.wait(ctx, d, nil) {
		f()
	}
}
