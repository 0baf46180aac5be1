package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
)

// jsonLines parses every line of out as a JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, l)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestLoggingRoutesLibp2p: with --log-format json, our logs, go-libp2p's
// (gologshim) and go-log's (the DHT's zap loggers) are JSON lines of one
// handler; libp2p's warnings stay out below debug, its errors come through.
func TestLoggingRoutesLibp2p(t *testing.T) {
	var buf bytes.Buffer
	log, err := setupLogging("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("ours", "k", 1)
	swarm := gologshim.Logger("swarm2")
	swarm.Warn("Failed to resolve addr", "addr", "/dnsaddr/bootstrap.libp2p.io")
	swarm.Error("swarm broke")
	dht := golog.Logger("dht")
	dht.Warnw("dht noise")
	dht.Errorw("dht broke", "peer", "12D3")
	lines := jsonLines(t, buf.String())
	got := map[string]map[string]any{}
	for _, l := range lines {
		got[l["msg"].(string)] = l
	}
	for _, quiet := range []string{"Failed to resolve addr", "dht noise"} {
		if got[quiet] != nil {
			t.Errorf("libp2p's warning %q printed at level info:\n%s", quiet, &buf)
		}
	}
	for msg, logger := range map[string]string{"swarm broke": "swarm2", "dht broke": "dht"} {
		l := got[msg]
		if l == nil {
			t.Errorf("libp2p's error %q missing:\n%s", msg, &buf)
			continue
		}
		if l["logger"] != logger || l["level"] != "ERROR" {
			t.Errorf("%q: logger %v level %v, want %s ERROR", msg, l["logger"], l["level"], logger)
		}
	}
	if got["dht broke"] != nil && got["dht broke"]["peer"] != "12D3" {
		t.Errorf("go-log's fields lost: %v", got["dht broke"])
	}
	if got["ours"] == nil {
		t.Errorf("our own line missing:\n%s", &buf)
	}
	if _, err := setupLogging("info", "xml", &buf); err == nil {
		t.Error("log format xml accepted")
	}
}

// TestUpLogFormatJSON: `tandem up --log-format json` writes only JSON
// lines on standard error, libp2p's debug lines included.
func TestUpLogFormatJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	d := startUp(t, dir, append(localOnlyUp(dir)[1:], "--log-format", "json", "--log-level", "debug")...)
	d.stop(t)
	lines := jsonLines(t, d.stderr.String())
	libp2p := 0
	for _, l := range lines {
		if _, ok := l["logger"]; ok {
			libp2p++
		}
	}
	if len(lines) == 0 || libp2p == 0 {
		t.Fatalf("%d JSON lines, %d from libp2p loggers; stderr:\n%s", len(lines), libp2p, d.stderr)
	}
	// And the config file's key does the same. The file replaces env's,
	// so it keeps env's cheap identity stamp (a 24-bit one keeps a core
	// busy for long on a loaded machine).
	conf := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(conf, []byte("log_format = \"json\"\nlog_level = \"debug\"\nnat_port_map = false\nmdns = false\n[matchmaking]\nstamp_bits = 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startUp(t, dir, append(localOnlyUp(dir)[1:], "--config", conf)...)
	d.stop(t)
	if n := len(jsonLines(t, d.stderr.String())); n == 0 {
		t.Fatalf("log_format = json in the file: no JSON lines")
	}
}
