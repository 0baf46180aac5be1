package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/browserleg"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/demo"
	"github.com/tandem-cowork/tandem/session/media"
)

// The NAT lab's media check: once a cell's session is connected, each
// user's "browser" attaches to its own node the way the web UI does
// (POST /api/v1/sessions/{id}/media, from inside the user's home), sends
// its demo clip (VP8) and a microphone (Opus), and must receive the
// partner's clip, frame by frame intact, relayed node to node across the
// cell's NAT path. The browser is a browserleg.Leg in a copy of this test
// binary started with `ip netns exec` (TestNATLabBrowserLeg): pion makes
// its sockets on whatever threads it likes, so only a process inside the
// namespace has all of them there.

// labLegEnv carries a leg's brief (labLegBrief as JSON) to the copy of
// the test binary that runs it.
const labLegEnv = "TANDEM_NATLAB_LEG"

// labLegBrief is what the leg in a home does: attach to the node whose
// data dir is DataDir, to booking Booking's session, send clip Send and
// expect clip Expect (demo clip names); or, with Synthetic, send
// browserleg's synthetic 1.5 Mbit/s video instead and expect nothing.
type labLegBrief struct {
	DataDir, Booking, Send, Expect string
	Synthetic                      bool
}

// labLegLine is one report of the leg, printed every 250 ms on a line of
// its own after labLegPrefix.
type labLegLine struct {
	At    time.Time        `json:"at"`
	Error string           `json:"error,omitempty"`
	Stats browserleg.Stats `json:"stats"`
}

const labLegPrefix = "NATLAB-LEG "

// TestNATLabBrowserLeg is not a test: it is the browser of a NAT lab home,
// run by startLeg inside the home's namespace, and skips anywhere else.
func TestNATLabBrowserLeg(t *testing.T) {
	raw := os.Getenv(labLegEnv)
	if raw == "" {
		t.Skip("the NAT lab's browser leg: runs only inside a lab home, started by TestNATLab")
	}
	report := func(l labLegLine) {
		l.At = time.Now()
		data, _ := json.Marshal(l)
		fmt.Printf("%s%s\n", labLegPrefix, data)
	}
	fail := func(err error) {
		report(labLegLine{Error: err.Error()})
		t.Fatal(err)
	}
	var b labLegBrief
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		fail(fmt.Errorf("reading %s: %w", labLegEnv, err))
	}
	c, err := client.FromDataDir(b.DataDir)
	if err != nil {
		fail(err)
	}
	opts := browserleg.Options{Audio: true, Synthetic: b.Synthetic}
	if !b.Synthetic {
		if opts.Clip, err = demo.Clip(b.Send); err != nil {
			fail(err)
		}
		if opts.Expect, err = demo.Clip(b.Expect); err != nil {
			fail(err)
		}
	}
	// A browser's ICE: every interface of the home, loopback included
	// (the node's API and browser leg are on 127.0.0.1).
	api, err := media.NewAPI(media.Options{IncludeLoopback: true})
	if err != nil {
		fail(err)
	}
	leg, err := browserleg.New(api, opts)
	if err != nil {
		fail(err)
	}
	defer leg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = leg.Attach(ctx, func(ctx context.Context, offer string) (string, error) {
		return c.AttachMedia(ctx, b.Booking, offer)
	})
	cancel()
	if err != nil {
		fail(fmt.Errorf("attaching the browser leg: %w", err))
	}
	// Until the lab closes stdin (or dies: then the pipe closes too).
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		report(labLegLine{Stats: leg.Stats()})
		select {
		case <-eof:
			return
		case <-tick.C:
		}
	}
}

// labLeg is a browser leg running in a lab home.
type labLeg struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	out   *lockedBuffer // everything it printed but its reports

	mu    sync.Mutex
	lines []labLegLine
}

// startLeg starts n's browser leg on booking id's session as brief says
// (DataDir and Booking are filled in).
func (l *natLab) startLeg(n *labNode, id string, brief labLegBrief) *labLeg {
	l.t.Helper()
	self, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	brief.DataDir, brief.Booking = n.dir, id
	raw, _ := json.Marshal(brief)
	g := &labLeg{name: n.name, done: make(chan struct{}), out: &lockedBuffer{}}
	g.cmd = exec.Command("ip", "netns", "exec", n.ns, self, "-test.run=^TestNATLabBrowserLeg$", "-test.count=1", "-test.v", "-test.timeout=0")
	g.cmd.Env = append(os.Environ(), labLegEnv+"="+string(raw))
	g.cmd.Stderr = g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if g.stdin, err = g.cmd.StdinPipe(); err != nil {
		l.t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		l.t.Fatalf("starting %s's browser leg: %v", n.name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), labLegPrefix)
			if !ok {
				fmt.Fprintln(g.out, sc.Text())
				continue
			}
			var r labLegLine
			if json.Unmarshal([]byte(line), &r) == nil {
				g.mu.Lock()
				g.lines = append(g.lines, r)
				g.mu.Unlock()
			}
		}
	}()
	go func() {
		<-read
		g.cmd.Wait()
		close(g.done)
	}()
	l.t.Cleanup(func() {
		g.stop()
		if l.t.Failed() || os.Getenv("TANDEM_NATLAB_LOGS") != "" {
			l.t.Logf("--- output of %s's browser leg:\n%s", g.name, g.out.String())
		}
	})
	return g
}

// last is the leg's latest report (zero before its first).
func (g *labLeg) last() labLegLine {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.lines) == 0 {
		return labLegLine{}
	}
	return g.lines[len(g.lines)-1]
}

// exited says whether the leg process ended (it fails the run: a leg
// that could not attach reports why and exits).
func (g *labLeg) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// videoKbps is the video payload bitrate the leg received between from
// and its latest report.
func (g *labLeg) videoKbps(from labLegLine) float64 {
	to := g.last()
	d := to.At.Sub(from.At).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(to.Stats.VideoBytes-from.Stats.VideoBytes) * 8 / d / 1000
}

// stop closes the leg's stdin (it closes its PeerConnection and exits),
// and kills it if it has not exited in 10 s.
func (g *labLeg) stop() {
	g.stdin.Close()
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

// labMediaFrames is how many intact frames of the partner's clip (15 a
// second) and labMediaAudio how many audio packets (50 a second) each
// side must receive; labMediaWindow is how long the received video
// bitrate is measured over once they have.
// labMediaWait bounds the wait for them once the session is connected
// (generous: the legs start, gather, attach and get a keyframe on a loaded
// machine).
const (
	labMediaWait   = 60 * time.Second
	labMediaFrames = 30
	labMediaAudio  = 100
	labMediaWindow = 5 * time.Second
)

// checkMedia attaches a browser leg to each side of the connected session
// (A's booking ida, B's idb), waits until each receives the partner's
// clip intact and its audio, and measures the video bitrate each
// receives. It notes in res how far it got and fails t if media does not
// flow both ways within a generous deadline.
func (l *natLab) checkMedia(a, b *labNode, ida, idb string, res *natResult) {
	l.t.Helper()
	t0 := time.Now()
	la := l.startLeg(a, ida, labLegBrief{Send: "ada", Expect: "bo"})
	lb := l.startLeg(b, idb, labLegBrief{Send: "bo", Expect: "ada"})
	var sa, sb labLegLine
	nodetestWait(l.t, labMediaWait, func() bool {
		sa, sb = la.last(), lb.last()
		for _, g := range []*labLeg{la, lb} {
			if r := g.last(); r.Error != "" || g.exited() {
				l.t.Fatalf("%s's browser leg ended: %s", g.name, r.Error)
			}
		}
		return sa.Stats.Matched >= labMediaFrames && sb.Stats.Matched >= labMediaFrames &&
			sa.Stats.AudioPackets >= labMediaAudio && sb.Stats.AudioPackets >= labMediaAudio
	}, "both browser legs to receive %d intact frames of the partner's clip and %d audio packets (A: %+v; B: %+v)",
		labMediaFrames, labMediaAudio, &sa.Stats, &sb.Stats)
	res.media, res.toMedia = true, time.Since(t0)
	from := [2]labLegLine{la.last(), lb.last()}
	nodetestWait(l.t, labMediaWindow+30*time.Second, func() bool {
		return la.last().At.Sub(from[0].At) >= labMediaWindow && lb.last().At.Sub(from[1].At) >= labMediaWindow
	}, "the legs to report over a %v window", labMediaWindow)
	res.kbpsA, res.kbpsB = la.videoKbps(from[0]), lb.videoKbps(from[1])
	sa, sb = la.last(), lb.last()
	defer func() {
		la.stop()
		lb.stop()
	}()
	l.t.Logf("media: A received %d frames (%d intact from B's clip, %d keyframes), %d audio packets, %.0f kbit/s video; B received %d frames (%d intact from A's clip, %d keyframes), %d audio packets, %.0f kbit/s video; both within %v of attaching",
		sa.Stats.Frames, sa.Stats.Matched, sa.Stats.Keyframes, sa.Stats.AudioPackets, res.kbpsA,
		sb.Stats.Frames, sb.Stats.Matched, sb.Stats.Keyframes, sb.Stats.AudioPackets, res.kbpsB, res.toMedia.Round(time.Millisecond))
}

// sessionPath says how the session between a and b flows: the libp2p
// connection between the nodes (direct or relayed, as used for matching
// and signalling) and the WebRTC path of the media and data channel as
// A's session reports it ("direct", or "TURN" through a Tandem peer's
// relay or another TURN server); and the cap A's node puts on the video
// it sends over TURN (media/adapt.go; 0 on a direct path).
func (l *natLab) sessionPath(a, b *labNode, ida string) (path string, capKbps int) {
	p2p := l.path(a, b)
	s, err := a.client.Session(context.Background(), ida)
	if err != nil {
		return fmt.Sprintf("libp2p %s, media ? (%v)", p2p, err), 0
	}
	webrtcPath := "?"
	if p := s.Connect.Path; p != nil {
		switch p.Kind {
		case apiv1.PathRelay:
			webrtcPath = "TURN"
		default:
			webrtcPath = p.Kind
		}
	}
	if s.Connect.AudioOnly {
		webrtcPath += " (audio only)"
	}
	return fmt.Sprintf("libp2p %s, media %s", p2p, webrtcPath), s.Connect.VideoLimitKbps
}

// labMediaLoadWindow is how long checkMediaLoad measures.
const labMediaLoadWindow = 10 * time.Second

// checkMediaLoad (TANDEM_NATLAB_MEDIA_LOAD=1, after checkMedia) replaces
// both users' browser legs with synthetic ones that send 1.5 Mbit/s of
// video, a camera that ignores the node's REMB cap, and measures the
// video bitrate each side receives over labMediaLoadWindow: the full rate
// on a direct path, at most about the node's cap over TURN (media/adapt.go
// drops video beyond it). It only reports: it asserts that video arrives,
// not how fast.
func (l *natLab) checkMediaLoad(a, b *labNode, ida, idb string, res *natResult) {
	l.t.Helper()
	la := l.startLeg(a, ida, labLegBrief{Synthetic: true})
	lb := l.startLeg(b, idb, labLegBrief{Synthetic: true})
	defer func() {
		la.stop()
		lb.stop()
	}()
	var sa, sb labLegLine
	nodetestWait(l.t, labMediaWait, func() bool {
		sa, sb = la.last(), lb.last()
		for _, g := range []*labLeg{la, lb} {
			if r := g.last(); r.Error != "" || g.exited() {
				l.t.Fatalf("%s's synthetic browser leg ended: %s", g.name, r.Error)
			}
		}
		return sa.Stats.VideoPackets > 0 && sb.Stats.VideoPackets > 0
	}, "both synthetic legs to receive video (A: %+v; B: %+v)", &sa.Stats, &sb.Stats)
	from := [2]labLegLine{la.last(), lb.last()}
	nodetestWait(l.t, labMediaLoadWindow+30*time.Second, func() bool {
		return la.last().At.Sub(from[0].At) >= labMediaLoadWindow && lb.last().At.Sub(from[1].At) >= labMediaLoadWindow
	}, "the synthetic legs to report over a %v window", labMediaLoadWindow)
	res.loadKbpsA, res.loadKbpsB = la.videoKbps(from[0]), lb.videoKbps(from[1])
	l.t.Logf("media load: sending %d kbit/s of video each way, A received %.0f kbit/s and B %.0f kbit/s over %v",
		browserleg.SyntheticVideoBitrate/1000, res.loadKbpsA, res.loadKbpsB, labMediaLoadWindow)
}
