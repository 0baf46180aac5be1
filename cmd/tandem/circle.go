package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// newCircleCmd is `tandem circle create|join|leave|list`.
func newCircleCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "circle",
		Short: "Private circles: groups that match with each other first or only",
		Long: "A circle is a group of people who want to match with each other first or only.\n" +
			"Its offers travel encrypted on its own topic; only people with the invite can read them.\n" +
			"Book for a circle with `tandem book --scope circle` (or circle-first).",
	}
	var joinName string
	join := &cobra.Command{
		Use:   "join INVITE",
		Short: "Join a circle with an invite (the code or the tandem:// link)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cl, err := c.JoinCircle(cmd.Context(), args[0], joinName)
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), cl, func(w io.Writer) {
				fmt.Fprintf(w, "Joined circle %q (id %s). Members appear in `tandem circle list` as they come online.\n", esc(cl.Name), esc(cl.ID))
			})
		},
	}
	join.Flags().StringVar(&joinName, "name", "", "what to call the circle on this node (default: the name in the link)")
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Make a circle and print its invite",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cl, err := c.CreateCircle(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), cl, func(w io.Writer) {
				fmt.Fprintf(w, "Created circle %q (id %s).\n", esc(cl.Name), esc(cl.ID))
				printInvite(w, cl)
			})
		},
	}, join, &cobra.Command{
		Use:   "leave ID|NAME",
		Short: "Leave a circle and forget its secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.LeaveCircle(cmd.Context(), args[0]); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(cmd.OutOrStdout(), "Left circle %s.\n", esc(args[0]))
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List your circles, their invites and the members your node has seen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cls, err := c.Circles(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(cmd.OutOrStdout(), cls, func(w io.Writer) { printCircles(w, cls) })
		},
	})
	return cmd
}

func printInvite(w io.Writer, cl apiv1.Circle) {
	fmt.Fprintf(w, "Invite code: %s\nInvite link: %s\n", esc(cl.Code), esc(cl.Link))
	fmt.Fprintln(w, "Share either with the people you want in it: they run `tandem circle join INVITE`,")
	fmt.Fprintln(w, "or paste it on the People screen of the web UI. Anyone with it can join.")
}

func printCircles(w io.Writer, cls []apiv1.Circle) {
	if len(cls) == 0 {
		fmt.Fprintln(w, "You are in no circle. Make one with `tandem circle create NAME`, or join one with `tandem circle join INVITE`.")
		return
	}
	for _, cl := range cls {
		fmt.Fprintf(w, "%s (id %s), %d member(s) seen besides you\n", esc(cl.Name), esc(cl.ID), len(cl.Members))
		for _, m := range cl.Members {
			name := m.Name
			if name == "" {
				name = "(no name yet)"
			}
			fmt.Fprintf(w, "  %s  %s  last seen %s\n", esc(name), esc(m.ID), m.LastSeen.Local().Format(whenLayout))
		}
		fmt.Fprintf(w, "  invite: %s\n", esc(cl.Code))
	}
}
