package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/client"
)

func newOpenCmd(g *globalFlags) *cobra.Command {
	var printOnly bool
	cmd := &cobra.Command{
		Use:   "open",
		Short: "Open the web UI in your browser (or print its login link when there is no desktop)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			// A stale API file (the node crashed) must not open a dead page.
			if _, err := c.Status(cmd.Context()); err != nil {
				return err
			}
			url := c.LoginURL()
			out := cmd.OutOrStdout()
			if g.json {
				return g.output(out, map[string]string{"login_url": url}, nil)
			}
			if !printOnly && openBrowser(url) {
				fmt.Fprintf(out, "Opening the web UI in your browser: %s\n", url)
				return nil
			}
			fmt.Fprintf(out, "Open this link in your browser: %s\n", url)
			return nil
		},
	}
	cmd.Flags().BoolVar(&printOnly, "print", false, "only print the login link")
	return cmd
}

func newTokenCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage the web UI and API token",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Replace the API token: every browser is logged out and needs the new login link",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			c, err := g.client()
			if errors.Is(err, client.ErrNotRunning) {
				return g.rotateOffline(out, func(dir string) error { _, err := node.RotateToken(dir); return err },
					"New token saved. The node is not running; `tandem status` prints the new login link once it is.")
			}
			if err != nil {
				return err
			}
			t, err := c.RotateToken(cmd.Context())
			if err != nil {
				return err
			}
			return g.output(out, t, func(w io.Writer) {
				fmt.Fprintln(w, "New token. Every browser is logged out; log in again with:")
				fmt.Fprintf(w, "  %s\n", t.LoginURL)
			})
		},
	})
	return cmd
}

// openBrowser opens url in the desktop's browser and reports whether it
// did: `open` on macOS; elsewhere xdg-open, only when there is a desktop
// (DISPLAY or WAYLAND_DISPLAY is set), so a server prints the link instead.
func openBrowser(url string) bool {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	} else if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return false
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return false
	}
	c := exec.Command(p, url)
	if c.Start() != nil {
		return false
	}
	go c.Wait() // reaps it in a long-running `tandem demo`
	return true
}

// rotateOffline rotates a token in the data dir when no node is running:
// the node reads the new file when it starts.
func (g *globalFlags) rotateOffline(out io.Writer, rotate func(dir string) error, saved string) error {
	dir, err := g.nodeDataDir()
	if err != nil {
		return err
	}
	if err := rotate(dir); err != nil {
		return err
	}
	return g.output(out, map[string]bool{"rotated": true}, func(w io.Writer) { fmt.Fprintln(w, saved) })
}
