package main

import (
	"errors"
	"fmt"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Dependency rules of the design card, checked against the source tree:
// cmd -> node -> {matchmaking, session}; matchmaking and session never import
// node; the API client never pulls in the daemon.

const module = "github.com/tandem-cowork/tandem"

type goPackage struct {
	ImportPath string
	Name       string
	Doc        string
	Imports    []string
	Deps       []string // the module's own packages it imports, directly or not
}

// listPackages reads every package of the module from the source tree
// with go/build, under this platform's build constraints and without test
// files, as a build sees them. Not `go list`: that loads the whole module
// graph and so needs modules the build never downloaded (it failed
// offline after a successful build).
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]goPackage{}
	err = filepath.WalkDir(root, func(dir string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		// As the go command does: these are never packages of ./...
		if name := d.Name(); dir != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		if dir != root {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		bp, err := build.ImportDir(dir, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading package in %s: %w", dir, err)
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return err
		}
		path := module
		if rel != "." {
			path += "/" + filepath.ToSlash(rel)
		}
		pkgs[path] = goPackage{ImportPath: path, Name: bp.Name, Doc: bp.Doc, Imports: bp.Imports}
		return nil
	})
	if err != nil {
		t.Fatalf("listing the module's packages: %v", err)
	}
	for path, p := range pkgs {
		p.Deps = moduleDeps(pkgs, path)
		pkgs[path] = p
	}
	for _, must := range []string{"/cmd/tandem", "/node", "/node/client", "/matchmaking"} {
		if _, ok := pkgs[module+must]; !ok {
			t.Fatalf("no package %s%s found under %s", module, must, root)
		}
	}
	return pkgs
}

// moduleRoot is the directory of this module's go.mod, above the test's
// working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(mod), "module "+module+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", module)
		}
		dir = parent
	}
}

// moduleDeps is every package of the module that path imports, directly
// or through others, sorted.
func moduleDeps(pkgs map[string]goPackage, path string) []string {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(p string) {
		for _, imp := range pkgs[p].Imports {
			if _, ours := pkgs[imp]; ours && !seen[imp] {
				seen[imp] = true
				visit(imp)
			}
		}
	}
	visit(path)
	deps := make([]string, 0, len(seen))
	for d := range seen {
		deps = append(deps, d)
	}
	slices.Sort(deps)
	return deps
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
		{"/node/peerturn", "/node", false, "dependencies point one way: node -> peerturn"},
		{"/node/peerturn", "/session", true, "the helper knows nothing of sessions"},
		{"/node/peerturn", "/matchmaking", true, "the helper knows nothing of matches"},
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
	// reaches into the daemon's parts. The one exception is usertext, the
	// rules for text people type: the CLI checks and escapes text with the
	// same rules, and the package is a leaf that holds no daemon state.
	const usertext = module + "/session/usertext"
	if deps := pkgs[usertext].Deps; len(deps) != 0 {
		t.Errorf("%s must stay a leaf the CLI can share, but depends on %v", usertext, deps)
	}
	for _, imp := range pkgs[module+"/cmd/tandem"].Imports {
		if imp == usertext {
			continue
		}
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
