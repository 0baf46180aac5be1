package session

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"
)

// chromiumPage attaches a real browser to its node WHIP-style: fake camera
// and microphone in, the partner's media out; it reports the RTP it gets.
const chromiumPage = `<!doctype html><meta charset="utf-8"><title>tandem media test</title>
<script>
window.result = {};
(async () => {
  try {
    const pc = new RTCPeerConnection();
    const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
    stream.getTracks().forEach(t => pc.addTrack(t, stream));
    pc.ontrack = e => { window.result.tracks = (window.result.tracks || 0) + 1; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => {
      if (pc.iceGatheringState === 'complete') return r();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      setTimeout(r, 2000);
    });
    const resp = await fetch('/whip', {method: 'POST', body: pc.localDescription.sdp,
      headers: {'Content-Type': 'application/sdp'}});
    if (!resp.ok) throw new Error('whip: ' + resp.status + ' ' + await resp.text());
    await pc.setRemoteDescription({type: 'answer', sdp: await resp.text()});
    setInterval(async () => {
      window.result.state = pc.connectionState;
      let videoIn = 0;
      (await pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') videoIn += s.packetsReceived;
      });
      window.result.videoIn = videoIn;
    }, 50);
  } catch (e) { window.result.error = String(e); }
})();
</script>`

// TestChromiumBrowserLeg runs the media path with a real browser on one
// side: headless Chromium's fake camera goes through node A and node B to
// B's (pion) browser leg, and B's synthetic video reaches Chromium.
// Skipped when chromium is not installed, and with -short.
func TestChromiumBrowserLeg(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed")
	}
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "chromium")
	browserB := newTestBrowser(t)
	browserB.attach(sb)
	browserB.send(7000, 5*time.Millisecond)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, chromiumPage)
	})
	mux.HandleFunc("POST /whip", func(w http.ResponseWriter, r *http.Request) {
		offer, err := io.ReadAll(io.LimitReader(r.Body, maxBrowserSDP+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		answer, err := sa.AttachBrowser(r.Context(), string(offer))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answer)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-gpu", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first call starts the browser: no timeout on it (it would stop
	// the browser); the page's own steps are bounded by waitFor below.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+ln.Addr().String()+"/")); err != nil {
		t.Fatalf("opening the page: %v", err)
	}

	// Chromium's camera reaches B's browser leg through both nodes.
	b.rec.wait(t, "a's camera on", isFrom(EventMedia, sb.ID(), FromPartner, func(e Event) bool { return e.Media.Video }))
	waitFor(t, "chromium's video at b's browser leg", func() bool {
		browserB.mu.Lock()
		defer browserB.mu.Unlock()
		return len(browserB.got[webrtc.RTPCodecTypeVideo]) >= 20
	})
	// B's video reaches Chromium.
	type pageResult struct {
		State   string `json:"state"`
		VideoIn int    `json:"videoIn"`
		Tracks  int    `json:"tracks"`
		Error   string `json:"error"`
	}
	var res pageResult
	waitFor(t, "b's video in chromium", func() bool {
		var err error
		if res, err = chromedp.Run(ctx, chromedp.Evaluate[pageResult](`window.result`)); err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		if res.Error != "" {
			t.Fatalf("page: %s", res.Error)
		}
		return res.VideoIn >= 20
	})
	t.Logf("chromium: %+v", res)
}
