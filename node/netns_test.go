package node_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// netnsEnv marks the copy of the test binary that runs inside a network
// namespace with only lo.
const netnsEnv = "TANDEM_TEST_IN_LOOPBACK_NETNS"

// inLoopbackOnlyNetns runs the calling test again in a new network
// namespace whose only interface is lo (unshare -n, which needs root), and
// reports whether this is that run. The outer run passes or fails with the
// inner one; it skips, saying why, where no namespace can be made.
func inLoopbackOnlyNetns(t *testing.T) bool {
	t.Helper()
	if !inNetns(t, "ip link set lo up") {
		return false
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			t.Fatalf("interface %s in the loopback-only namespace", i.Name)
		}
	}
	return true
}

// inNetns runs the calling test again in new network and mount
// namespaces set up by the shell commands setup, and reports whether this
// is that run. The outer run passes or fails with the inner one; it skips,
// saying why, where no namespace can be made (not root, no unshare or ip).
func inNetns(t *testing.T, setup string) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace (unshare -n)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare (util-linux) to make a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to set up a network namespace")
	}
	if out, err := exec.Command(unshare, "-n", "-m", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace here (unshare -n -m: %v %s)", err, out)
	}
	cmd := exec.Command(unshare, "-n", "-m", "--", "sh", "-c", setup+` && exec "$0" "$@"`,
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace (%s):\n%s", setup, out)
	if err != nil {
		t.Fatalf("the test failed in the namespace: %v", err)
	}
	return false
}

// loopbackPage attaches Chromium to a node's session WHIP-style, through
// the test server's /whip (which forwards to the node's API), and shows
// how it went in window.result.
const loopbackPage = `<!doctype html><meta charset="utf-8"><title>browser leg</title>
<script>
window.result = {};
(async () => {
  try {
    const pc = new RTCPeerConnection();
    const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
    stream.getTracks().forEach(t => pc.addTrack(t, stream));
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => {
      if (pc.iceGatheringState === 'complete') return r();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      setTimeout(r, 3000);
    });
    const resp = await fetch('/whip', {method: 'POST', body: pc.localDescription.sdp});
    if (!resp.ok) { window.result.error = resp.status + ' ' + await resp.text(); return; }
    await pc.setRemoteDescription({type: 'answer', sdp: await resp.text()});
    setInterval(() => { window.result.state = pc.connectionState; }, 50);
  } catch (e) { window.result.error = String(e); }
})();
</script>`

type loopbackPageResult struct {
	State string `json:"state"`
	Error string `json:"error"`
}

// openLoopbackPage starts Chromium (with extra flags) on a page whose
// /whip attaches it to node n's session id.
func openLoopbackPage(t *testing.T, chromium string, n *node.Node, id string, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, loopbackPage)
	})
	mux.HandleFunc("POST /whip", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, n.APIURL()+"/api/v1/sessions/"+id+"/media", r.Body)
		req.Header.Set("Authorization", "Bearer "+n.Token())
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
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
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, flags...)...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first call starts the browser: no timeout on it.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+ln.Addr().String()+"/")); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	return ctx
}

func waitPage(t *testing.T, ctx context.Context, what string, cond func(loopbackPageResult) bool) loopbackPageResult {
	t.Helper()
	var res loopbackPageResult
	nodetest.WaitFor(t, 40*time.Second, func() bool {
		var err error
		if res, err = chromedp.Run(ctx, chromedp.Evaluate[loopbackPageResult](`window.result`)); err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return cond(res)
	}, "%s (page: %+v)", what, res)
	return res
}

// On a machine whose only network is lo (offline): two nodes, one
// listening on every interface and one on 127.0.0.1, meet in a session;
// a browser that can use loopback (Chromium with
// --allow-loopback-in-peer-connection) connects its leg to its node, and
// the partner sees its camera; a stock Chromium, which gathers no address
// at all there, is told so plainly at once instead of failing silently.
func TestBrowserLegWithOnlyLoopback(t *testing.T) {
	chromium := skipWithoutChromium(t)
	if !inLoopbackOnlyNetns(t) {
		return
	}
	clock := &nodetest.Clock{}
	cfgA := nodetest.Config(t)
	cfgA.Now = clock.Now
	cfgA.Listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	a := nodetest.Start(t, cfgA)
	cfgB := nodetest.Config(t)
	cfgB.Now = clock.Now
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := apiClientFor(a), apiClientFor(b)
	ctx := context.Background()
	ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		sa, errA := ca.Session(ctx, ba.ID)
		sb, errB := cb.Session(ctx, bb.ID)
		return errA == nil && errB == nil && sa.Connected && sb.Connected
	}, "the nodes' session to connect over loopback")

	stock := openLoopbackPage(t, chromium, a, ba.ID)
	res := waitPage(t, stock, "stock Chromium to be told", func(r loopbackPageResult) bool { return r.Error != "" || r.State == "failed" })
	if !strings.HasPrefix(res.Error, "422 ") || !strings.Contains(res.Error, "--allow-loopback-in-peer-connection") {
		t.Errorf("stock Chromium got %+v, want a 422 that says what to do", res)
	}

	withLoopback := openLoopbackPage(t, chromium, a, ba.ID, chromedp.Flag("allow-loopback-in-peer-connection", true))
	waitPage(t, withLoopback, "the browser leg to connect", func(r loopbackPageResult) bool {
		if r.Error != "" || r.State == "failed" {
			t.Fatalf("browser leg: %+v", r)
		}
		return r.State == "connected"
	})
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		s, err := cb.Session(ctx, bb.ID)
		return err == nil && s.Partner.Media.Video
	}, "B to see A's camera")
}
