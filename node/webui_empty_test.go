package node_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestWebUIEmptyState: the first run of `tandem up` with nobody around
// (local only, no peers). The calendar explains why it is empty and what
// to do, with the node's own address to share; the Network screen says
// what discovery tried; the explanation goes away when a peer connects,
// and a demo node never shows it.
func TestWebUIEmptyState(t *testing.T) {
	path := skipWithoutChromium(t)
	cfg := nodetest.Config(t)
	cfg.Name = "Ada"
	a := nodetest.Start(t, cfg)
	br, err := startUIBrowser(t, path, "alone")
	if err != nil {
		t.Fatal(err)
	}
	br.login(a)
	shots := newScreenshots(t)

	br.waitJS("the empty state", 10*time.Second, `!document.getElementById('empty-state').hidden && !!document.getElementById('my-addr')`)
	text := uiEval[string](br, `document.getElementById('empty-state').innerText`)
	for _, want := range []string{
		"not connected to any other Tandem node", // why
		"local only",
		"Finding people on your network (LAN) is off", // mDNS is off in tests
		"tandem up --bootstrap MULTIADDR", `bootstrap = ["MULTIADDR"]`, "config.toml",
		"tandem up --peer MULTIADDR",
		"Try the demo: tandem demo",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the empty state does not say %q:\n%s", want, text)
		}
	}
	addr := uiEval[string](br, `document.getElementById('my-addr').textContent`)
	if !slices.Contains(a.Addrs(), addr) || !strings.HasSuffix(addr, "/p2p/"+a.ID().String()) {
		t.Errorf("address to share = %q, want one of %v", addr, a.Addrs())
	}
	shots.take(br, "empty-state")
	// Copy works, or says how to copy by hand (headless may refuse).
	br.click("#copy-addr")
	br.waitJS("the copy answer", 5*time.Second, `[...document.querySelectorAll('.toast')].some(t => /Address copied|Could not copy/.test(t.textContent))`)

	br.goTo("network", `!!document.getElementById('tried-dht') && /waiting/.test(document.getElementById('tried-dht').textContent)`)
	tried := uiEval[string](br, `document.getElementById('discovery').innerText`)
	for _, want := range []string{"local only", "Bootstrap peers: none configured", "Direct peers (--peer): none", "Your network (mDNS): off"} {
		if !strings.Contains(tried, want) {
			t.Errorf("the Network screen does not say %q:\n%s", want, tried)
		}
	}
	uiEval[bool](br, `(document.getElementById('toasts')?.replaceChildren(), true)`)
	shots.take(br, "network-alone")

	// A second node dials in: the explanation goes away by itself.
	br.goTo("calendar", `!!document.getElementById('empty-state') && !document.getElementById('empty-state').hidden`)
	cfgB := nodetest.Config(t)
	nodetest.Link(t, &cfgB, a)
	nodetest.Start(t, cfgB)
	connected := time.Now()
	br.waitJS("the empty state to go", 10*time.Second, `document.getElementById('empty-state').hidden && document.querySelectorAll('.slot').length === 7*96`)
	t.Logf("empty state gone %v after the second node started", time.Since(connected).Round(time.Millisecond))

	// A demo node alone never shows it (its own partners are on the way).
	cfgD := nodetest.Config(t)
	cfgD.Demo = true
	br.login(nodetest.Start(t, cfgD))
	br.waitJS("the calendar's data", 10*time.Second, `/Nothing booked yet/.test(document.getElementById('upcoming-list').textContent)`)
	if uiEval[bool](br, `!document.getElementById('empty-state').hidden`) {
		t.Error("a demo node shows the empty state")
	}
	br.checkConsole()
}
