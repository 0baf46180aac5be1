package node

import (
	"os"
	"path/filepath"
)

// Default locations follow the XDG base directory spec. They are pure
// functions of the environment so tests can call them with a fake one.

// DefaultDataDir returns $XDG_DATA_HOME/tandem, else ~/.local/share/tandem.
func DefaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "tandem")
	}
	return filepath.Join(homeDir(getenv), ".local", "share", "tandem")
}

// DefaultConfigPath returns $XDG_CONFIG_HOME/tandem/config.toml, else
// ~/.config/tandem/config.toml.
func DefaultConfigPath(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "tandem", "config.toml")
	}
	return filepath.Join(homeDir(getenv), ".config", "tandem", "config.toml")
}

func homeDir(getenv func(string) string) string {
	if h := getenv("HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "."
}

// Files inside the data dir.
const (
	identityFile = "identity.key"
	storeDir     = "store"
	// APIFile holds the running node's API address and token (mode 0600);
	// client commands read it to find the node.
	APIFile = "api.json"
	// TokenFile holds the API token (mode 0600). It outlives the node, so
	// a restart keeps every browser logged in; `tandem token rotate`
	// replaces it.
	TokenFile = "token"
)
