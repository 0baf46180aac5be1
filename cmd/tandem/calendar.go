package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
)

func newCalendarCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "calendar",
		Short: "Your sessions in your calendar app: the feed URL, export, rotate",
	}
	printFeed := func(w io.Writer, cal apiv1.Calendar) {
		fmt.Fprintln(w, "Subscribe to this URL in your calendar app (it is secret: it shows your sessions):")
		fmt.Fprintf(w, "  %s\n", cal.FeedURL)
		fmt.Fprintf(w, "  %s\n", cal.WebcalURL)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "url",
		Short: "Print the secret URL of the calendar feed of your bookings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cal, err := c.Calendar(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), cal, func(w io.Writer) { printFeed(w, cal) })
		},
	}, &cobra.Command{
		Use:   "export",
		Short: "Write your bookings as an iCalendar file to standard output (tandem calendar export > sessions.ics)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			data, err := c.CalendarICS(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}, &cobra.Command{
		Use:   "rotate",
		Short: "Give the calendar feed a new secret URL: the old one stops working (the login link is not touched)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			c, err := g.client()
			if errors.Is(err, client.ErrNotRunning) {
				return g.rotateOffline(out, node.RotateCalendarToken,
					"New calendar feed token saved. The node is not running; `tandem calendar url` prints the new URL once it is.")
			}
			if err != nil {
				return err
			}
			cal, err := c.RotateCalendar(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(out, cal, func(w io.Writer) {
				fmt.Fprintln(w, "The old feed URL no longer works.")
				printFeed(w, cal)
			})
		},
	})
	return cmd
}
