package demo

import (
	"context"
	"errors"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/session"
)

// persona is how one demo partner behaves.
type persona struct {
	name  string
	goals []string
	// slots are the local times of day (minutes after midnight) at which
	// the partner keeps offers open, with their durations.
	slots    []slot
	greeting string
	// late: this partner is sometimes late (its laptop is closed until
	// 2.5 minutes after the start), so the rematch flow can be seen.
	late bool
}

type slot struct {
	minute   int
	duration int
	activity matchmaking.Activity
}

var personas = []persona{
	{name: "Ada", goals: []string{"Drafting the intro", "Reviewing chapter 2"},
		slots:    []slot{{9 * 60, 50, "desk"}, {14 * 60, 25, "anything"}, {17*60 + 30, 50, "anything"}},
		greeting: "Hi! Glad you're here. Let's do this."},
	{name: "Bo", goals: []string{"Inbox zero", "Expense report"},
		slots:    []slot{{10*60 + 30, 25, "anything"}, {13 * 60, 50, "desk"}, {16 * 60, 75, "anything"}},
		greeting: "Hey :) going quiet now, good luck!"},
	{name: "Chen", goals: []string{"Tidying the flat", "Stretching and a walk"},
		slots:    []slot{{8*60 + 15, 25, "moving"}, {12 * 60, 50, "anything"}, {19 * 60, 25, "anything"}},
		greeting: "Morning! Camera's on, mic's off."},
	{name: "Dee", goals: []string{"Fixing the flaky test", "Writing the report"},
		slots:    []slot{{11 * 60, 50, "anything"}, {15*60 + 30, 50, "desk"}, {20 * 60, 25, "anything"}},
		greeting: "Sorry, hi! Ready now.", late: true},
}

// partner is one demo partner: a real node and the script that drives it.
type partner struct {
	d       *Demo
	persona persona
	cfg     node.Config
	n       *node.Node // nil while the partner is "away from the laptop"
	backAt  time.Time  // demo time the node comes back
	// pendingNow: focus-now requests the partner will answer once due.
	pendingNow []pendingNow
	sessions   map[string]*sessionScript
	// lateDecided: bookings for which lateness was already decided (kept
	// across the partner's own restarts).
	lateDecided map[string]bool
}

type pendingNow struct {
	key  string
	req  matchmaking.BookRequest
	when time.Time // real time: people take a moment to click
}

// sessionScript is what the partner has done in one session.
type sessionScript struct {
	cam       *camera
	camTried  bool
	greeted   bool
	awayFrom  time.Time // demo time to step away, zero if not planned
	awayUntil time.Time
	away      bool
	checkedIn bool
}

func (p *partner) start() error {
	n, err := node.New(p.cfg, p.d.log.With("node", p.persona.name))
	if err != nil {
		return err
	}
	if err := n.Start(); err != nil {
		return err
	}
	p.n = n
	// The user's "Focus now" travels on the focus-now shard, which no
	// booking of the partner's holds: watch it to answer.
	n.Matchmaking().WatchFocusNow()
	return nil
}

func (p *partner) stop() error {
	for _, s := range p.sessions {
		if s.cam != nil {
			s.cam.close()
		}
	}
	p.sessions = map[string]*sessionScript{}
	if p.n == nil {
		return nil
	}
	err := p.n.Stop()
	p.n = nil
	return err
}

// run drives the partner twice a second until ctx ends.
func (p *partner) run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.step(ctx)
	}
}

func (p *partner) step(ctx context.Context) {
	now := p.d.Clock.Now()
	if p.n == nil {
		if now.Before(p.backAt) {
			return
		}
		if err := p.start(); err != nil {
			p.d.log.Warn("demo partner could not come back", "partner", p.persona.name, "err", err)
			p.backAt = now.Add(time.Minute)
		}
		return
	}
	p.keepOffers(ctx, now)
	p.answerFocusNow(ctx, now)
	p.driveSessions(ctx, now)
}

// keepOffers keeps the persona's slots open over the next three days.
func (p *partner) keepOffers(ctx context.Context, now time.Time) {
	mm := p.n.Matchmaking()
	have := map[int64]bool{}
	for _, b := range mm.Bookings() {
		if b.Live() {
			have[b.Start.Unix()] = true
		}
	}
	local := now.Local()
	day := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, time.Local)
	for d := 0; d < 3; d++ {
		for _, s := range p.persona.slots {
			at := day.AddDate(0, 0, d).Add(time.Duration(s.minute) * time.Minute)
			if at.Before(now.Add(30*time.Minute)) || have[at.Unix()] {
				continue
			}
			mm.Book(ctx, matchmaking.BookRequest{
				At: at, DurationMin: s.duration, Kind: matchmaking.KindScheduled, Activity: s.activity,
				Goal: p.persona.goals[p.d.pick(len(p.persona.goals))],
			}) // an overlap with a live "now" session is fine to skip
		}
	}
}

// answerFocusNow answers the user's "Focus now" requests within seconds;
// one partner per request.
func (p *partner) answerFocusNow(ctx context.Context, now time.Time) {
	mm := p.n.Matchmaking()
	user := p.d.User.ID().String()
	for _, o := range mm.Board(time.Time{}, time.Time{}) {
		if o.Kind != matchmaking.KindNow || o.Owner != user {
			continue
		}
		key := o.Owner + "/" + o.BookingID
		if !p.d.claim(key) {
			continue
		}
		p.pendingNow = append(p.pendingNow, pendingNow{key: key, when: time.Now().Add(time.Duration(1000+p.d.pick(2000)) * time.Millisecond),
			req: matchmaking.BookRequest{Kind: matchmaking.KindNow, DurationMin: o.DurationMin, Activity: matchmaking.ActivityAnything,
				Quiet: o.Quiet, Goal: p.persona.goals[p.d.pick(len(p.persona.goals))]}})
	}
	rest := p.pendingNow[:0]
	for _, pn := range p.pendingNow {
		if time.Now().Before(pn.when) {
			rest = append(rest, pn)
			continue
		}
		if _, err := mm.Book(ctx, pn.req); err != nil {
			p.d.unclaim(pn.key) // busy: another partner may take it
		}
	}
	p.pendingNow = rest
}

// driveSessions plays the partner's part in each live session.
func (p *partner) driveSessions(ctx context.Context, now time.Time) {
	for _, s := range p.n.Sessions().Sessions() {
		st := s.State()
		sc := p.sessions[s.ID()]
		if sc == nil {
			sc = &sessionScript{}
			if p.d.chance(0.5) {
				// Step away for a minute somewhere in the middle.
				sc.awayFrom = st.Booking.Start.Add(time.Duration(st.Booking.DurationMin) * time.Minute / 3)
				sc.awayUntil = sc.awayFrom.Add(time.Minute)
			}
			p.sessions[s.ID()] = sc
		}
		if p.persona.late && !p.lateDecided[s.ID()] && st.Phase != session.PhaseUpcoming {
			p.lateDecided[s.ID()] = true
			if p.d.chance(0.5) && now.Before(st.Booking.Start.Add(time.Minute)) {
				p.goOffline(st.Booking.Start.Add(150 * time.Second))
				return
			}
		}
		if !sc.camTried && st.Phase != session.PhaseUpcoming && st.Phase != session.PhaseDone {
			sc.camTried = true
			clip, err := Clip(p.persona.name)
			if err == nil {
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				sc.cam, err = attachCamera(actx, s, clip)
				cancel()
			}
			if err != nil {
				p.d.log.Info("demo camera", "partner", p.persona.name, "err", err)
			}
		}
		if st.Connected && !sc.greeted {
			if s.Chat(p.persona.greeting) == nil {
				sc.greeted = true
			}
		}
		if !sc.awayFrom.IsZero() && st.Connected {
			switch {
			case !sc.away && !now.Before(sc.awayFrom) && now.Before(sc.awayUntil):
				if s.SetPresence(session.PresenceAway) == nil {
					sc.away = true
				}
			case sc.away && !now.Before(sc.awayUntil):
				if s.SetPresence(session.PresenceHere) == nil {
					sc.away = false
					sc.awayFrom = time.Time{}
				}
			}
		}
		if st.Phase == session.PhaseCheckin && !sc.checkedIn {
			outcome, note := session.OutcomeDone, "Got it done, thanks for the company!"
			if p.d.chance(0.3) {
				outcome, note = session.OutcomePartly, "Most of it. Next time!"
			}
			err := s.CheckIn(outcome, note)
			if err == nil || errors.Is(err, session.ErrEnded) {
				sc.checkedIn = true
			}
		}
	}
	for id, sc := range p.sessions {
		if _, ok := p.n.Sessions().Get(id); !ok {
			if sc.cam != nil {
				sc.cam.close()
			}
			delete(p.sessions, id)
		}
	}
}

// goOffline closes the partner's "laptop" until back (demo time).
func (p *partner) goOffline(back time.Time) {
	p.d.log.Info("demo partner is running late", "partner", p.persona.name)
	if err := p.stop(); err != nil {
		p.d.log.Debug("stopping late partner", "err", err)
	}
	p.backAt = back
}
