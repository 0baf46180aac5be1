package node_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestWebUICircles: Ada makes a circle on the People screen and gets its
// invite; Bo opens the invite as a link into his UI (#/people/INVITE),
// which fills the join form, and joins. Each page then lists the other as
// a member; Bo books a slot for "My circle only" in the booking dialog.
func TestWebUICircles(t *testing.T) {
	p := newUIPair(t)
	p.ba.goTo("people", `!!document.querySelector('#circle-create')`)
	p.ba.typeInto("#circle-name", "Thesis writers")
	p.ba.click(`#circle-create button[type=submit]`)
	p.ba.waitJS("the new circle with its invite", 10*time.Second, `!!document.querySelector('#circles .circle .invite-code')`)
	code := uiEval[string](p.ba, `document.querySelector('#circles .circle .invite-code').textContent`)
	link := uiEval[string](p.ba, `document.querySelector('#circles .circle').dataset.link`)
	if len(code) < 20 || !strings.HasPrefix(link, "tandem://circle/join?") || !strings.Contains(link, url.QueryEscape(code)) {
		t.Fatalf("invite code %q, link %q", code, link)
	}

	p.bb.do("opening the invite link", 15*time.Second,
		chromedp.Navigate(p.b.APIURL()+"/#/people/"+url.PathEscape(link)))
	p.bb.waitJS("the join form filled in", 10*time.Second, fmt.Sprintf(`document.querySelector('#circle-invite')?.value === %q`, link))
	p.bb.click(`#circle-join button[type=submit]`)
	p.bb.waitJS("Bo's circle", 10*time.Second, `document.querySelector('#circles .circle h3')?.textContent.startsWith('Thesis writers')`)

	seen := func(name string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#circles .circle .person strong')].some((e) => e.textContent === %q)`, name)
	}
	p.ba.waitJS("Bo listed in Ada's circle", 20*time.Second, seen("Bo"))
	p.bb.waitJS("Ada listed in Bo's circle", 20*time.Second, seen("Ada"))
	newScreenshots(t).take(p.ba, "circles")

	// The booking dialog offers the circle scope now.
	p.bb.goTo("calendar", `!!document.querySelector('#focus-now')`)
	at := time.Now().Add(3 * time.Hour).Truncate(15 * time.Minute).UTC().Format("2006-01-02T15:04:05.000Z")
	p.bb.waitJS("the slot", 10*time.Second, fmt.Sprintf(`!!document.querySelector('.slot[data-start=%q]')`, at))
	p.bb.click(fmt.Sprintf(`.slot[data-start=%q]`, at))
	p.bb.waitJS("the Who choice", 10*time.Second, `!!document.querySelector('#book-scope input[value=circle]')`)
	p.bb.click(`#book-scope input[value=circle]`)
	p.bb.click(`#book-submit`)
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		for _, b := range p.b.Matchmaking().Bookings() {
			if b.Scope == "circle" {
				return true
			}
		}
		return false
	}, "Bo's circle-only booking")
}
