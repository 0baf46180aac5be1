package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/client"
)

type globalFlags struct {
	root       *cobra.Command
	dataDir    string
	configPath string
	json       bool
	logLevel   string
	logFormat  string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "tandem",
		Short:         "Peer-to-peer co-working: book a focus session, get a partner, work side by side",
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what `tandem version` prints.
		Version: node.Version,
	}
	root.SetVersionTemplate("tandem {{.Version}}\n")
	g.root = root
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", node.DefaultDataDir(os.Getenv), "directory for identity, store and API file")
	pf.StringVar(&g.configPath, "config", node.DefaultConfigPath(os.Getenv), "config file (TOML)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", logFormatUsage)
	root.AddCommand(
		newUpCmd(g), newStatusCmd(g), newOpenCmd(g), newTokenCmd(g), newPeersCmd(g), newVersionCmd(g),
		newBookCmd(g), newNowCmd(g), newSlotsCmd(g), newBookingsCmd(g), newCancelCmd(g),
		newProfileCmd(g), newJoinCmd(g), newHistoryCmd(g), newStatsCmd(g),
		newCalendarCmd(g), newServiceCmd(g), newCircleCmd(g),
		newBenchCmd(g),
		newDemoCmd(g),
	)
	for _, a := range []struct{ use, action, short string }{
		{"favorite", "favorite", "Mark a peer as a favourite: tried first when matching"},
		{"unfavorite", "unfavorite", "Remove a peer from favourites"},
		{"block", "block", "Never match a peer again and hide their offers"},
		{"unblock", "unblock", "Unblock (and unsnooze) a peer"},
	} {
		root.AddCommand(newPersonCmd(g, a.use, a.action, a.short))
	}
	root.AddCommand(newSnoozeCmd(g))
	return root
}

// loadConfig overlays the config file onto cfg. The default file may be
// missing (most users never write one); a file named with --config must
// exist, or a typo in its path would silently run with the defaults.
func (g *globalFlags) loadConfig(cfg *node.Config) error {
	if g.root.PersistentFlags().Changed("config") {
		return node.ReadConfigFile(g.configPath, cfg)
	}
	return node.LoadConfigFile(g.configPath, cfg)
}

// client finds the running node through the API file in its data dir:
// --data-dir, else data_dir from the config file, else the default, the
// same order `tandem up` uses.
func (g *globalFlags) client() (*client.Client, error) {
	dir, err := g.nodeDataDir()
	if err != nil {
		return nil, err
	}
	return client.FromDataDir(dir)
}

// nodeDataDir is the data dir of the node the client commands talk to. A
// --config FILE is read (and must exist) even with --data-dir, so that a
// mistyped path is reported rather than ignored.
func (g *globalFlags) nodeDataDir() (string, error) {
	pf := g.root.PersistentFlags()
	if pf.Changed("data-dir") && !pf.Changed("config") {
		return g.dataDir, nil
	}
	cfg := node.Config{}
	if err := g.loadConfig(&cfg); err != nil {
		return "", err
	}
	if cfg.DataDir != "" && !pf.Changed("data-dir") {
		return cfg.DataDir, nil
	}
	return g.dataDir, nil
}

// output prints v as JSON with --json, else calls human.
func (g *globalFlags) output(w io.Writer, v any, human func(io.Writer)) error {
	if g.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(w)
	return nil
}

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.output(cmd.OutOrStdout(), map[string]string{"version": node.Version}, func(w io.Writer) {
				fmt.Fprintln(w, "tandem", node.Version)
			})
		},
	}
}
