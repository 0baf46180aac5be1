package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestWebUICalendarCatchesUpWithEventStream: an offer that reaches the
// node while the page's event stream is not connected yet still shows in
// the calendar once the stream opens. Here the browser holds the stream's
// request back until the offer is on the node's board (a loaded machine
// can delay it past the calendar's first load). Both node clocks stand
// still, so no re-announcement or board sync brings a later "board" event.
// Before, the calendar showed the offer only at the next such event (in
// TestWebUIDetails, up to a re-announcement later).
func TestWebUICalendarCatchesUpWithEventStream(t *testing.T) {
	path := skipWithoutChromium(t)
	stopped := time.Now()
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Name, cfgB.Name = "Ada", "Bo"
	cfgA.Now = func() time.Time { return stopped }
	cfgB.Now = cfgA.Now
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	br, err := startUIBrowser(t, path, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Hold back the page's event stream.
	paused := chromedp.Events(br.ctx, fetch.RequestPaused)
	held := make(chan fetch.RequestID, 1)
	go func() {
		for ev, err := range paused {
			if err == nil {
				held <- ev.RequestID
			}
			return
		}
	}()
	ctx, cancel := context.WithTimeout(br.ctx, 10*time.Second)
	_, err = chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/api/v1/events*"}}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool { return a.Status().ConnectedPeers > 0 }, "the nodes to connect")
	br.login(a)
	var stream fetch.RequestID
	select {
	case stream = <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the page opened no event stream")
	}
	br.waitJS("the calendar's first load", 15*time.Second, `/min ·/.test(document.getElementById('focus-now-info').textContent)`)

	slot := stopped.Truncate(time.Hour).Add(3 * time.Hour)
	bo, err := apiClientFor(b).Book(context.Background(), apiv1.BookRequest{Kind: "scheduled", At: slot, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		return slices.ContainsFunc(a.Matchmaking().Board(time.Time{}, time.Time{}), func(o matchmaking.BoardOffer) bool { return o.BookingID == bo.ID })
	}, "Bo's offer on Ada's board")
	shown := fmt.Sprintf(`document.querySelector('%s .offers')?.textContent === '1'`, slotCSS(slot))
	if uiEval[bool](br, shown) {
		t.Fatal("the calendar showed the offer with no event stream: the test holds nothing back")
	}
	ctx, cancel = context.WithTimeout(br.ctx, 10*time.Second)
	_, err = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: stream})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	br.waitJS("Bo's offer in the calendar", 15*time.Second, shown)
}
