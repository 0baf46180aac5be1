package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Dependency rules of the design card, checked against `go list`:
// cmd -> node -> {matchmaking, session}; matchmaking and session never import
// node; the API client never pulls in the daemon.

const module = "github.com/tandem-cowork/tandem"

type goPackage struct {
	ImportPath string
	Name       string
	Doc        string
	Imports    []string
	Deps       []string
}

// listPackages runs `go list -json` on every package of the module.
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, &stderr)
	}
	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("reading go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	for _, must := range []string{"/cmd/tandem", "/node", "/node/client", "/matchmaking"} {
		if _, ok := pkgs[module+must]; !ok {
			t.Fatalf("go list did not report %s%s", module, must)
		}
	}
	return pkgs
}

// within reports whether path is pkg or one of its sub-packages.
func within(path, pkg string) bool { return path == pkg || strings.HasPrefix(path, pkg+"/") }

func TestDeps(t *testing.T) {
	pkgs := listPackages(t)
	for _, rule := range []struct {
		from      string // this package and its sub-packages...
		forbidden string // ...must not depend on this one (or its sub-packages, if tree)
		tree      bool
		why       string
	}{
		{"/node/client", "/node", false, "the CLI's API client must not pull in the daemon"},
		{"/node/client", "/node/store", true, "the CLI never opens the store itself"},
		{"/node/apiv1", "/node", false, "API types are shared with the client"},
		{"/node/apiv1", "/node/store", true, "API types are shared with the client"},
		{"/matchmaking", "/node", true, "dependencies point one way: node -> matchmaking"},
		{"/session", "/node", true, "dependencies point one way: node -> session"},
	} {
		from, forbidden := module+rule.from, module+rule.forbidden
		for path, p := range pkgs {
			if !within(path, from) {
				continue
			}
			for _, dep := range p.Deps {
				if dep == forbidden || (rule.tree && within(dep, forbidden)) {
					t.Errorf("%s depends on %s: %s", path, dep, rule.why)
				}
			}
		}
	}
	// The CLI runs the daemon through node's New/Start/Stop only; it never
	// reaches into the daemon's parts.
	for _, imp := range pkgs[module+"/cmd/tandem"].Imports {
		if within(imp, module+"/node/store") || within(imp, module+"/matchmaking") || within(imp, module+"/session") {
			t.Errorf("cmd/tandem imports daemon internals %s", imp)
		}
	}
}

func TestPackageDocs(t *testing.T) {
	for path, p := range listPackages(t) {
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			want = "Command "
		}
		switch {
		case p.Doc == "":
			t.Errorf("%s has no package doc comment", path)
		case !strings.HasPrefix(p.Doc, want):
			t.Errorf("%s: package doc %q should start with %q", path, p.Doc, want)
		}
	}
}
