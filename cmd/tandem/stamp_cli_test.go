package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpPreparesIdentityInBackground: the first `tandem up` of a new
// identity does not wait for its identity stamp (32 bits here: hours) to
// print its banner and serve its API. It says it is preparing the
// identity, `tandem status` says so too, and Ctrl-C (SIGTERM) stops it at
// once, mint and all.
func TestUpPreparesIdentityInBackground(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	conf := filepath.Join(root, "config.toml")
	if err := os.WriteFile(conf, []byte("nat_port_map = false\nmdns = false\n[matchmaking]\nstamp_bits = 32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startUp(t, dir, append(localOnlyUp(dir)[1:], "--config", conf)...)
	if !strings.Contains(d.stdout.String(), "Identity:  preparing (one-time, a few seconds)") {
		t.Errorf("tandem up does not say it is preparing the identity:\n%s", d.stdout)
	}
	out, errOut, code := run(t, "status", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "Identity:  preparing identity (one-time, a few seconds)") {
		t.Errorf("tandem status: exit %d, want it to say the identity is being prepared:\n%s%s", code, out, errOut)
	}
	d.stop(t)
	if d.err != nil {
		t.Errorf("tandem up after SIGTERM: %v\nstderr:\n%s", d.err, d.stderr)
	}
}
