package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
)

const joinHelp = `Type a line to chat. Commands:
  /goal TEXT      change your goal          /away, /here, /camera-off   presence
  /done [NOTE]    check in: done            /partly [NOTE], /not [NOTE]
  /leave [REASON] leave early               /rematch   find a new partner (partner late)
  /quit           stop watching (the session goes on in the node)`

func newJoinCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "join [BOOKING_ID]",
		Short: "Run a session in the terminal: countdown, partner, goals, chat, chimes, check-in",
		Long:  "Join the live or next matched session (or BOOKING_ID) in the terminal.\n\n" + joinHelp,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return runJoin(cmd.Context(), c, id, g.json, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

// pickSession finds the session to join: the one asked for, else the live
// one, else the next to start.
func pickSession(ctx context.Context, c *client.Client, id string) (apiv1.Session, error) {
	if id != "" {
		return c.Session(ctx, id)
	}
	ss, err := c.Sessions(ctx)
	if err != nil {
		return apiv1.Session{}, err
	}
	if len(ss) == 0 {
		return apiv1.Session{}, errors.New("no matched session yet: see `tandem bookings`, or `tandem now` to find a partner")
	}
	best := ss[0]
	for _, s := range ss[1:] {
		if s.Booking.Start.Before(best.Booking.Start) {
			best = s
		}
	}
	return best, nil
}

func runJoin(ctx context.Context, c *client.Client, id string, asJSON bool, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Events(ctx)
	if err != nil {
		return err
	}
	s, err := pickSession(ctx, c, id)
	if err != nil {
		return err
	}
	id = s.Booking.ID
	v := &joinView{out: out, json: asJSON, id: id, c: c}
	v.header(ctx, s)

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		close(lines)
	}()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				// The node ends the stream when it stops, and when the
				// token it was opened with is rotated.
				var ae *client.APIError
				if _, err := c.Status(ctx); errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
					return errors.New("the API token was rotated (`tandem token rotate`): run `tandem join` again")
				}
				return errors.New("lost the connection to the node")
			}
			if ev.Type != apiv1.EventSession {
				continue
			}
			var se apiv1.SessionEvent
			if json.Unmarshal(ev.Data, &se) != nil || se.Booking != id {
				continue
			}
			v.event(se)
			if se.Type == apiv1.SessionEnded {
				return nil
			}
		case <-tick.C:
			if s, err := c.Session(ctx, id); err == nil {
				v.countdown(ctx, s)
			}
		case line, ok := <-lines:
			if !ok {
				return nil // stdin closed: stop watching; the session goes on
			}
			quit, err := v.command(ctx, c, line)
			if err != nil {
				v.sayErr(err)
			}
			if quit {
				return nil
			}
		}
	}
}

// joinView prints a session for people (or JSON lines for scripts).
type joinView struct {
	out  io.Writer
	json bool
	id   string
	c    *client.Client
}

func (v *joinView) say(format string, args ...any) {
	if v.json {
		return
	}
	fmt.Fprintf(v.out, format+"\n", args...)
}

// sayErr prints an error, escaped (an error from the node may quote text a
// partner sent), and the help after an unknown command.
func (v *joinView) sayErr(err error) {
	v.say("! %s", esc(err.Error()))
	if errors.As(err, new(errUnknownCommand)) {
		v.say("%s", joinHelp)
	}
}

type errUnknownCommand struct{ cmd string }

func (e errUnknownCommand) Error() string { return "unknown command /" + e.cmd }

func (v *joinView) header(ctx context.Context, s apiv1.Session) {
	if v.json {
		json.NewEncoder(v.out).Encode(map[string]any{"type": "state", "booking": v.id, "state": s})
		return
	}
	partner := s.Booking.PartnerName
	if partner == "" {
		partner = shortID(s.Booking.Partner.String())
	}
	partner = esc(partner)
	v.say("Session with %s, %s, %d min. Phase: %s.", partner, s.Booking.Start.Local().Format("Mon 15:04 MST"), s.Booking.DurationMin, esc(string(s.Phase)))
	if s.Self.Goal != "" {
		v.say("Your goal: %s", esc(s.Self.Goal))
	}
	if s.Partner.Goal != "" {
		v.say("%s's goal: %s", partner, esc(s.Partner.Goal))
	}
	v.say("%s", joinHelp)
	for _, l := range s.Chat[max(0, len(s.Chat)-5):] {
		if l.From == apiv1.FromPartner {
			v.say("<partner> %s", esc(l.Text))
		}
	}
	if s.Connect.State == apiv1.ConnectCouldNotConnect {
		v.couldNotConnect(s.Connect.Message)
	}
	if n := pathNote(s.Connect.Path); n != "" {
		v.say("%s", strings.TrimSpace(n))
	}
	v.countdown(ctx, s)
}

// pathNote says how the session is connected (" Connected directly." or
// " Connected via relay (Tandem peer ...)."), "" when not known.
func pathNote(p *apiv1.ConnectPath) string {
	if p == nil {
		return ""
	}
	if p.Kind == apiv1.PathRelay {
		return " Connected via relay (" + esc(p.Relay) + ")."
	}
	return " Connected directly."
}

// couldNotConnect says plainly that the partner could not be reached and
// what was tried (the node goes on trying).
func (v *joinView) couldNotConnect(msg string) {
	v.say("!! %s", esc(msg))
	v.say("!! Type /rematch to find a new partner, or wait: the connection comes up by itself if it can.")
}

// countdown prints the time to the next phase on the node's clock (which
// runs faster in `tandem demo --short`).
func (v *joinView) countdown(ctx context.Context, s apiv1.Session) {
	if s.NextPhaseAt.IsZero() {
		return
	}
	st, err := v.c.Status(ctx)
	if err != nil {
		return
	}
	left := s.NextPhaseAt.Sub(st.Now).Round(time.Second)
	if left > 0 {
		v.say("[%s] %s until %s", esc(string(s.Phase)), left, nextPhaseName(s.Phase))
	}
}

func nextPhaseName(p apiv1.Phase) string {
	switch p {
	case apiv1.PhaseUpcoming:
		return "the lobby opens"
	case apiv1.PhaseLobby:
		return "the start"
	case apiv1.PhaseFocus:
		return "the 1-minute warning"
	case apiv1.PhaseWarning:
		return "the end"
	}
	return "the check-in closes"
}

const bell = "\a"

func (v *joinView) event(e apiv1.SessionEvent) {
	if v.json {
		json.NewEncoder(v.out).Encode(e)
		return
	}
	who := "You"
	if e.From == apiv1.FromPartner {
		who = "Partner"
	}
	switch e.Type {
	case apiv1.SessionPhase:
		switch e.Phase {
		case apiv1.PhaseFocus:
			v.say(bell + "** Focus time: go! **")
		case apiv1.PhaseWarning:
			v.say(bell + "** One minute left. **")
		case apiv1.PhaseCheckin:
			v.say(bell + "** Time! Check in: /done, /partly or /not (with a note). **")
		default:
			v.say("[%s]", esc(string(e.Phase)))
		}
	case apiv1.SessionPartnerJoined:
		v.say("Your partner joined.%s", pathNote(e.Path))
	case apiv1.SessionPartnerDisconnected:
		v.say("Partner disconnected; reconnecting...")
	case apiv1.SessionPartnerReconnected:
		v.say("Partner is back.%s", pathNote(e.Path))
	case apiv1.SessionCapacity:
		v.say("%s", esc(e.Text))
	case apiv1.SessionPathChanged:
		if n := pathNote(e.Path); n != "" {
			v.say("%s", strings.TrimSpace(n))
		}
	case apiv1.SessionCouldNotConnect:
		v.couldNotConnect(e.Text)
	case apiv1.SessionRematchOffered:
		v.say("Your partner is 2 minutes late. Type /rematch to find a new partner.")
	case apiv1.SessionNoShow:
		v.say("Your partner did not come (no-show).")
	case apiv1.SessionGoal:
		v.say("%s goal: %s", who, esc(e.Text))
	case apiv1.SessionChat:
		if e.From == apiv1.FromPartner {
			v.say("<partner> %s", esc(e.Text))
		}
	case apiv1.SessionPresence:
		if e.From == apiv1.FromPartner {
			v.say("Partner is %s.", esc(string(e.Presence)))
		}
	case apiv1.SessionMedia:
		if e.From == apiv1.FromPartner && e.Media != nil && !e.Media.Video {
			v.say("Partner has no camera.")
		}
	case apiv1.SessionCheckIn:
		if e.CheckIn != nil {
			v.say("%s checked in: %s %s", who, esc(string(e.CheckIn.Outcome)), esc(e.CheckIn.Note))
		}
	case apiv1.SessionPartnerLeft:
		v.say("Your partner left: %s", esc(e.Text))
	case apiv1.SessionEnded:
		v.say("Session over. See `tandem history`.")
	}
}

// command runs one input line; it reports whether to stop watching.
func (v *joinView) command(ctx context.Context, c *client.Client, line string) (bool, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return false, nil
	}
	if !strings.HasPrefix(line, "/") {
		_, err := c.SessionAction(ctx, v.id, "chat", apiv1.SessionAction{Text: line})
		return false, err
	}
	cmd, arg, _ := strings.Cut(line[1:], " ")
	arg = strings.TrimSpace(arg)
	var err error
	switch cmd {
	case "goal":
		_, err = c.SessionAction(ctx, v.id, "goal", apiv1.SessionAction{Text: arg})
	case "away", "here", "camera-off":
		_, err = c.SessionAction(ctx, v.id, "presence", apiv1.SessionAction{Presence: cmd})
	case "done", "partly", "not":
		_, err = c.SessionAction(ctx, v.id, "checkin", apiv1.SessionAction{Outcome: cmd, Note: arg})
	case "leave":
		_, err = c.SessionAction(ctx, v.id, "leave", apiv1.SessionAction{Reason: arg})
	case "rematch":
		var b apiv1.Booking
		if b, err = c.Rematch(ctx, v.id); err == nil {
			v.say("Looking for a new partner now (booking %s). Run `tandem join` again once matched.", esc(b.ID))
			return true, nil
		}
	case "quit":
		return true, nil
	default:
		err = errUnknownCommand{cmd}
	}
	return false, err
}

func newHistoryCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "List past sessions: partner, goals, check-ins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			recs, err := c.History(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), recs, func(w io.Writer) { printHistory(w, recs) })
		},
	}
}

func newStatsCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Sessions per week, minutes focused, done ratio, weekly streak",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Stats(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), st, func(w io.Writer) {
				fmt.Fprintf(w, "Sessions:        %d (%d this week, %.1f per week)\n", st.Sessions, st.ThisWeek, st.PerWeek)
				fmt.Fprintf(w, "Minutes focused: %d\n", st.MinutesFocused)
				fmt.Fprintf(w, "Done ratio:      %.0f%% of %d check-ins\n", 100*st.DoneRatio, st.CheckIns)
				fmt.Fprintf(w, "Weekly streak:   %d\n", st.Streak)
				fmt.Fprintf(w, "No-shows:        %d\n", st.NoShows)
			})
		},
	}
}
