package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/session/usertext"
)

func newStatusCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the running node: peer ID, addresses, peers, API URL, data dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			// The login link carries the token, which the caller can read
			// from the API file anyway.
			out := struct {
				apiv1.Status
				LoginURL string `json:"login_url"`
			}{st, c.LoginURL()}
			return g.output(cmd.OutOrStdout(), out, func(w io.Writer) { printStatus(w, st, c.LoginURL()) })
		},
	}
}

func newPeersCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List connected peers with their addresses and latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ps, err := c.Peers(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), ps, func(w io.Writer) { printPeers(w, ps) })
		},
	}
}

// whenLayout is how client commands print a time: local, with its zone
// (a partner may live in another one, and the zone may change).
const whenLayout = "Mon 2 Jan 15:04 MST"

// parseWhen reads a time: RFC 3339 with a zone, or local time
// "2006-01-02T15:04" / "2006-01-02 15:04".
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: want 2026-11-27T14:00 (local) or RFC 3339 with a zone", s)
}

type bookFlags struct {
	duration  int
	activity  string
	quiet     bool
	goal      string
	scope     string
	circle    string
	openAfter int
}

// circleScope applies the circle flags to a request.
func (b *bookFlags) circleScope(req apiv1.BookRequest) apiv1.BookRequest {
	req.Scope, req.Circle, req.OpenAfterMin = apiv1.Scope(b.scope), b.circle, b.openAfter
	return req
}

func (b *bookFlags) add(cmd *cobra.Command, defDuration int) {
	f := cmd.Flags()
	f.IntVar(&b.duration, "duration", defDuration, "session length in minutes: 25, 50 or 75")
	f.StringVar(&b.activity, "activity", "anything", "desk, moving or anything")
	f.BoolVar(&b.quiet, "quiet", false, "quiet mode: no talking (matches quiet partners only)")
	f.StringVar(&b.goal, "goal", "", "what you want to get done")
	f.StringVar(&b.scope, "scope", "", "who may match: anyone, circle (your circle only) or circle-first (default: the node's setting, anyone)")
	f.StringVar(&b.circle, "circle", "", "with --scope circle or circle-first: which circle (ID or name; default: all yours)")
	f.IntVar(&b.openAfter, "open-after", 0, "with --scope circle-first: minutes before anyone may match (default 10)")
}

func newBookCmd(g *globalFlags) *cobra.Command {
	var bf bookFlags
	var at, with string
	cmd := &cobra.Command{
		Use:   "book --at TIME --duration 25|50|75",
		Short: "Book a session on the quarter-hour grid; a partner is matched in the background",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseWhen(at)
			if err != nil {
				return err
			}
			return g.book(cmd, bf.circleScope(apiv1.BookRequest{
				At: t, Kind: "scheduled", DurationMin: bf.duration, Activity: apiv1Activity(bf.activity),
				Quiet: bf.quiet, Goal: bf.goal, With: with,
			}))
		},
	}
	bf.add(cmd, 50)
	cmd.Flags().StringVar(&at, "at", "", "start time, e.g. 2026-11-27T14:00 (local unless a zone is given)")
	cmd.Flags().StringVar(&with, "with", "", "only match this peer ID")
	cmd.MarkFlagRequired("at")
	return cmd
}

func newNowCmd(g *globalFlags) *cobra.Command {
	var bf bookFlags
	cmd := &cobra.Command{
		Use:   "now",
		Short: "Focus now: a session that starts as soon as a partner is matched",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.book(cmd, bf.circleScope(apiv1.BookRequest{
				Kind: "now", DurationMin: bf.duration, Activity: apiv1Activity(bf.activity),
				Quiet: bf.quiet, Goal: bf.goal,
			}))
		},
	}
	bf.add(cmd, 25)
	return cmd
}

func apiv1Activity(s string) apiv1.Activity { return apiv1.Activity(s) }

func (g *globalFlags) book(cmd *cobra.Command, req apiv1.BookRequest) error {
	// The node checks it too; checking here first names the limit even
	// for a goal too long to send.
	if err := usertext.Goal.Check(req.Goal); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	b, err := c.Book(cmd.Context(), req)
	if err != nil {
		return err
	}
	return g.output(cmd.OutOrStdout(), b, func(w io.Writer) {
		scope := ""
		switch b.Scope {
		case "circle":
			scope = ", your circle only"
		case "circle-first":
			scope = fmt.Sprintf(", your circle first (anyone after %d min)", b.OpenAfterMin)
		}
		fmt.Fprintf(w, "Booked %s: %s, %d min%s. Finding a partner...\n", esc(b.ID), describeStart(b), b.DurationMin, scope)
	})
}

func describeStart(b apiv1.Booking) string {
	if b.Kind == "now" && b.State == "searching" {
		return "now"
	}
	return b.Start.Local().Format(whenLayout)
}

func newBookingsCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "bookings",
		Short: "List your bookings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			bs, err := c.Bookings(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), bs, func(w io.Writer) { printBookings(w, bs) })
		},
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-8:]
	}
	return id
}

func newCancelCmd(g *globalFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel BOOKING_ID",
		Short: "Cancel a booking; the partner is told at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := usertext.Reason.Check(reason); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.Cancel(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), b, func(w io.Writer) { fmt.Fprintf(w, "Cancelled %s.\n", esc(b.ID)) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to the partner")
	return cmd
}

func newSlotsCmd(g *globalFlags) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "slots",
		Short: "List open offers from other peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var f, t time.Time
			var err error
			if from != "" {
				if f, err = parseWhen(from); err != nil {
					return err
				}
			}
			if to != "" {
				if t, err = parseWhen(to); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			os, err := c.Slots(cmd.Context(), f, t)
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), os, func(w io.Writer) { printSlots(w, os) })
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "earliest start")
	cmd.Flags().StringVar(&to, "to", "", "latest start")
	return cmd
}

func newPersonCmd(g *globalFlags, use, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " PEER_ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.setPerson(cmd, args[0], apiv1.PersonRequest{Action: action})
		},
	}
}

func newSnoozeCmd(g *globalFlags) *cobra.Command {
	var dur string
	cmd := &cobra.Command{
		Use:   "snooze PEER_ID --for 7d",
		Short: "Do not match a peer for a while",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.setPerson(cmd, args[0], apiv1.PersonRequest{Action: "snooze", SnoozeFor: dur})
		},
	}
	cmd.Flags().StringVar(&dur, "for", "7d", "how long, e.g. 7d or 36h")
	return cmd
}

func (g *globalFlags) setPerson(cmd *cobra.Command, id string, req apiv1.PersonRequest) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	p, err := c.SetPerson(cmd.Context(), id, req)
	if err != nil {
		return err
	}
	return g.output(cmd.OutOrStdout(), p, func(w io.Writer) {
		fmt.Fprintf(w, "%s: favourite=%v blocked=%v", esc(p.ID), p.Favourite, p.Blocked)
		if !p.SnoozedUntil.IsZero() {
			fmt.Fprintf(w, " snoozed until %s", p.SnoozedUntil.Local().Format(whenLayout))
		}
		fmt.Fprintln(w)
	})
}

func newProfileCmd(g *globalFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "profile [--name NAME]",
		Short: "Show or set your display name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("name") {
				if _, err := usertext.CheckName(name); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var p apiv1.Profile
			if cmd.Flags().Changed("name") {
				p, err = c.SetProfile(cmd.Context(), apiv1.Profile{Name: name})
			} else {
				p, err = c.Profile(cmd.Context())
			}
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), p, func(w io.Writer) { fmt.Fprintf(w, "Name: %s\n", esc(p.Name)) })
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "display name shown to partners")
	return cmd
}
