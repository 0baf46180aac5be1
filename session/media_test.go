package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
)

// testBrowser is a pion PeerConnection playing a user's browser: it sends
// synthetic VP8 and Opus, receives the partner's media and counts the
// keyframe requests that reach its camera.
type testBrowser struct {
	t      testing.TB
	pc     *webrtc.PeerConnection
	video  *webrtc.TrackLocalStaticRTP
	audio  *webrtc.TrackLocalStaticRTP
	plis   atomic.Int64
	remb   atomic.Uint64 // the last REMB bitrate its camera was told, bit/s
	remote atomic.Uint32 // SSRC of the received video

	mu    sync.Mutex
	first time.Time                        // when the first packet arrived
	got   map[webrtc.RTPCodecType][]uint16 // received sequence numbers
	rx    map[webrtc.RTPCodecType][]rxPacket
	bad   int // packets too short to carry their sender's sequence number
	more  chan struct{}

	wg   sync.WaitGroup
	stop chan struct{}
}

// rxPacket is one received packet: its header, and the sequence number
// its sender wrote into the payload.
type rxPacket struct {
	seq, sent uint16
	ts        uint32
}

// shifts counts the places where the received sequence numbers stop
// following the ones the sender wrote into the payloads: each is a packet
// renumbered differently from the one before, as at a change of source.
func shifts(rx []rxPacket) int {
	n := 0
	for i := 1; i < len(rx); i++ {
		if rx[i].seq-rx[i-1].seq != rx[i].sent-rx[i-1].sent {
			n++
		}
	}
	return n
}

func newTestBrowser(t testing.TB) *testBrowser {
	t.Helper()
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBrowser{t: t, pc: pc, got: map[webrtc.RTPCodecType][]uint16{}, rx: map[webrtc.RTPCodecType][]rxPacket{}, more: make(chan struct{}), stop: make(chan struct{})}
	if tb.video, err = webrtc.NewTrackLocalStaticRTP(media.VideoCodec, "camera", "browser"); err != nil {
		t.Fatal(err)
	}
	if tb.audio, err = webrtc.NewTrackLocalStaticRTP(media.AudioCodec, "mic", "browser"); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []*webrtc.TrackLocalStaticRTP{tb.video, tb.audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		isVideo := tr == tb.video
		tb.wg.Add(1)
		go func() {
			defer tb.wg.Done()
			buf := make([]byte, 1500)
			for {
				n, _, err := sender.Read(buf) // always drained, as pion needs
				if err != nil {
					return
				}
				pkts, err := rtcp.Unmarshal(buf[:n])
				if err != nil {
					continue
				}
				for _, p := range pkts {
					if _, ok := p.(*rtcp.PictureLossIndication); ok && isVideo {
						tb.plis.Add(1)
					}
					if r, ok := p.(*rtcp.ReceiverEstimatedMaximumBitrate); ok && isVideo {
						tb.remb.Store(uint64(r.Bitrate))
					}
				}
			}
		}()
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			tb.remote.Store(uint32(tr.SSRC()))
		}
		tb.wg.Add(1) // runs before Close: pion fires OnTrack on a live connection
		go func() {
			defer tb.wg.Done()
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				tb.mu.Lock()
				if len(p.Payload) < 3 {
					tb.bad++
				} else {
					tb.rx[tr.Kind()] = append(tb.rx[tr.Kind()], rxPacket{p.SequenceNumber, binary.BigEndian.Uint16(p.Payload[1:]), p.Timestamp})
				}
				if tb.first.IsZero() {
					tb.first = time.Now()
				}
				tb.got[tr.Kind()] = append(tb.got[tr.Kind()], p.SequenceNumber)
				close(tb.more)
				tb.more = make(chan struct{})
				tb.mu.Unlock()
			}
		}()
	})
	t.Cleanup(tb.close)
	return tb
}

func (tb *testBrowser) close() {
	select {
	case <-tb.stop:
		return
	default:
	}
	close(tb.stop)
	tb.pc.Close()
	tb.wg.Wait()
}

// attach sends the browser's offer to the session, WHIP-style.
func (tb *testBrowser) attach(s *Session) {
	tb.t.Helper()
	offer, err := tb.pc.CreateOffer(nil)
	if err != nil {
		tb.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(tb.pc)
	if err := tb.pc.SetLocalDescription(offer); err != nil {
		tb.t.Fatal(err)
	}
	<-gathered
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	answer, err := s.AttachBrowser(ctx, tb.pc.LocalDescription().SDP)
	if err != nil {
		tb.t.Fatalf("attaching browser: %v", err)
	}
	if err := tb.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		tb.t.Fatal(err)
	}
}

// send writes synthetic frames every interval until the browser closes:
// video with VP8 payload descriptors, audio with a byte of Opus TOC; each
// payload carries its own sequence number so the receiver can check it.
func (tb *testBrowser) send(firstSeq uint16, interval time.Duration) {
	tb.wg.Add(1)
	go func() {
		defer tb.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		seq := firstSeq
		for {
			select {
			case <-tb.stop:
				return
			case <-t.C:
			}
			ts := uint32(seq) * 3000
			vp8 := []byte{0x10, 0, 0, 0x9d, 0x01, 0x2a} // S bit, then a keyframe-ish header
			binary.BigEndian.PutUint16(vp8[1:], seq)
			tb.video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: ts}, Payload: vp8})
			opus := []byte{0xfc, 0, 0, 0xff}
			binary.BigEndian.PutUint16(opus[1:], seq)
			tb.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts / 2}, Payload: opus})
			seq++
		}
	}()
}

// received waits for at least n packets of kind and returns their
// sequence numbers.
func (tb *testBrowser) received(kind webrtc.RTPCodecType, n int) []uint16 {
	tb.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		tb.mu.Lock()
		got, ch, bad := append([]uint16(nil), tb.got[kind]...), tb.more, tb.bad
		tb.mu.Unlock()
		if bad > 0 {
			tb.t.Fatalf("%d packets with a payload too short for the test's", bad)
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.t.Fatalf("received %d %s packets, want %d", len(got), kind, n)
		}
	}
}

func checkInOrder(t *testing.T, what string, seqs []uint16, from uint16) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if d := seqs[i] - seqs[i-1]; d == 0 || d > 0x8000 {
			t.Fatalf("%s out of order at %d: %v", what, i, seqs)
		}
	}
	if d := seqs[0] - from; d > 0x8000 {
		t.Fatalf("%s: first sequence number %d precedes the first sent %d", what, seqs[0], from)
	}
}

// TestMediaRelay sends synthetic RTP from A's browser leg through both
// nodes to B's browser leg and back, in order and untouched, and checks
// that a keyframe request from B's browser reaches A's camera.
func TestMediaRelay(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "media")
	if sb.State().Partner.Media.Video {
		t.Fatal("partner shows a camera before any browser attached")
	}
	browserA, browserB := newTestBrowser(t), newTestBrowser(t)
	browserA.attach(sa)
	browserB.attach(sb)
	b.rec.wait(t, "a's camera on", isFrom(EventMedia, sb.ID(), FromPartner, func(e Event) bool { return e.Media.Video && e.Media.Audio }))
	a.rec.wait(t, "b's camera on", isFrom(EventMedia, sa.ID(), FromPartner, func(e Event) bool { return e.Media.Video }))

	browserA.send(1000, 5*time.Millisecond)
	browserB.send(50000, 5*time.Millisecond)
	checkInOrder(t, "a->b video", browserB.received(webrtc.RTPCodecTypeVideo, 30), 1000)
	checkInOrder(t, "a->b audio", browserB.received(webrtc.RTPCodecTypeAudio, 30), 1000)
	checkInOrder(t, "b->a video", browserA.received(webrtc.RTPCodecTypeVideo, 30), 50000)
	// One source each way: forwarded untouched.
	for _, c := range []struct {
		name string
		tb   *testBrowser
		kind webrtc.RTPCodecType
	}{{"a->b video", browserB, webrtc.RTPCodecTypeVideo}, {"a->b audio", browserB, webrtc.RTPCodecTypeAudio}, {"b->a video", browserA, webrtc.RTPCodecTypeVideo}} {
		c.tb.mu.Lock()
		rx := c.tb.rx[c.kind]
		c.tb.mu.Unlock()
		if n := shifts(rx); n != 0 || rx[0].seq != rx[0].sent {
			t.Errorf("%s: renumbered (%d shifts, first %+v)", c.name, n, rx[0])
		}
	}

	// A viewer attaching asked for a keyframe already; this one is B's own.
	waitFor(t, "keyframe request for a new viewer", func() bool { return browserA.plis.Load() > 0 })
	before := browserA.plis.Load()
	if err := browserB.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: browserB.remote.Load()}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's keyframe request at a's camera", func() bool { return browserA.plis.Load() > before })

	// B's browser goes away: A sees "no camera".
	sb.DetachBrowser()
	a.rec.wait(t, "b's camera off", isFrom(EventMedia, sa.ID(), FromPartner, func(e Event) bool { return !e.Media.Video }))
	if st := sa.State(); st.Partner.Media.Video || !st.Browser {
		t.Fatalf("a's state after b's browser left: %+v", st)
	}
}

// TestMediaRelaySourceChange: A's browser reloads mid-session (a new
// PeerConnection: new SSRC, sequence numbers and timestamps far from the
// old ones). B's browser keeps getting one continuous stream: sequence
// numbers go on from the last one, timestamps move forward, and A's new
// camera is asked for a keyframe. A's new browser gets B's video.
func TestMediaRelaySourceChange(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "reload")
	browserA, browserB := newTestBrowser(t), newTestBrowser(t)
	browserA.attach(sa)
	browserB.attach(sb)
	browserA.send(1000, 5*time.Millisecond)
	browserB.send(20000, 5*time.Millisecond)
	before := len(browserB.received(webrtc.RTPCodecTypeVideo, 30))
	browserA.received(webrtc.RTPCodecTypeVideo, 30)

	// The reload: the old page's connection closes, the new page's
	// camera starts over at sequence number 40000 (behind 1000 + n in
	// RTP's modular order) with timestamps far away.
	browserA.close()
	plisB := browserB.plis.Load()
	reloaded := newTestBrowser(t)
	reloaded.attach(sa)
	reloaded.send(40000, 5*time.Millisecond)
	waitFor(t, "a keyframe request to a's new camera", func() bool { return reloaded.plis.Load() > 0 })
	// A's new page is a new viewer of B's camera: B is asked for a keyframe.
	waitFor(t, "a keyframe request to b's camera for a's new page", func() bool { return browserB.plis.Load() > plisB })
	reloaded.received(webrtc.RTPCodecTypeVideo, 30)

	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		// Enough of the new source's packets to be past the switch.
		var rx []rxPacket
		waitFor(t, "a's new "+kind.String()+" at b", func() bool {
			browserB.mu.Lock()
			defer browserB.mu.Unlock()
			rx = append([]rxPacket(nil), browserB.rx[kind]...)
			n := 0
			for _, p := range rx {
				if p.sent >= 40000 {
					n++
				}
			}
			return n >= 30
		})
		seqs := make([]uint16, len(rx))
		for i, p := range rx {
			seqs[i] = p.seq
		}
		checkInOrder(t, "a->b "+kind.String()+" across the reload", seqs, 1000)
		if n := shifts(rx); n != 1 {
			t.Errorf("a->b %s: %d renumberings, want the one at the reload", kind, n)
		}
		for i := 1; i < len(rx); i++ {
			if rx[i].sent >= 40000 && rx[i-1].sent < 40000 {
				if d := rx[i].seq - rx[i-1].seq; d != 1 {
					t.Errorf("a->b %s: sequence number jumps by %d at the reload", kind, d)
				}
				if d := rx[i].ts - rx[i-1].ts; d == 0 || d >= 1<<31 {
					t.Errorf("a->b %s: timestamp goes from %d to %d at the reload", kind, rx[i-1].ts, rx[i].ts)
				}
			}
		}
	}
	browserB.mu.Lock() // its reader goroutine may still append
	after := len(browserB.got[webrtc.RTPCodecTypeVideo])
	browserB.mu.Unlock()
	if after <= before {
		t.Fatal("no video at b after the reload")
	}
}

// TestMediaRelayPartnerReconnect: the link between the nodes dies and a
// new PeerConnection replaces it, a new source for both browsers' partner
// tracks. Each browser's stream goes on in order, timestamps forward,
// renumbered at most once (the packets lost while the link was down leave
// no hole).
func TestMediaRelayPartnerReconnect(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "relink")
	browserA, browserB := newTestBrowser(t), newTestBrowser(t)
	browserA.attach(sa)
	browserB.attach(sb)
	browserA.send(1000, 5*time.Millisecond)
	browserB.send(30000, 5*time.Millisecond)
	browserA.received(webrtc.RTPCodecTypeVideo, 30)
	browserB.received(webrtc.RTPCodecTypeVideo, 30)

	sb.mu.Lock()
	l := sb.link
	sb.mu.Unlock()
	if err := l.pc.SCTP().Transport().ICETransport().Stop(); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "partner disconnected", is(EventPartnerDisconnected, sa.ID()))
	a.rec.wait(t, "partner back", is(EventPartnerReconnected, sa.ID()))
	for _, c := range []struct {
		name string
		tb   *testBrowser
		from uint16
	}{{"b->a", browserA, 30000}, {"a->b", browserB, 1000}} {
		c.tb.mu.Lock()
		n := len(c.tb.rx[webrtc.RTPCodecTypeVideo])
		c.tb.mu.Unlock()
		c.tb.received(webrtc.RTPCodecTypeVideo, n+30)
		c.tb.mu.Lock()
		rx := append([]rxPacket(nil), c.tb.rx[webrtc.RTPCodecTypeVideo]...)
		c.tb.mu.Unlock()
		seqs := make([]uint16, len(rx))
		for i, p := range rx {
			seqs[i] = p.seq
			if i > 0 {
				if d := p.seq - rx[i-1].seq; d > 10 {
					t.Errorf("%s: sequence number jumps by %d at packet %d", c.name, d, i)
				}
				if d := p.ts - rx[i-1].ts; d >= 1<<31 {
					t.Errorf("%s: timestamp goes back from %d to %d", c.name, rx[i-1].ts, p.ts)
				}
			}
		}
		checkInOrder(t, c.name+" video across the reconnect", seqs, c.from)
		if n := shifts(rx); n > 1 {
			t.Errorf("%s: renumbered %d times, want at most once", c.name, n)
		}
	}
}

// TestMediaRelayConcurrentAttach: two tabs attach to one session at the
// same moment. The node keeps one of them (the other's connection is
// closed); whichever it keeps, its camera reaches the partner.
func TestMediaRelayConcurrentAttach(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "two-tabs")
	browserB := newTestBrowser(t)
	browserB.attach(sb)
	for i := range 4 {
		tabs := [2]*testBrowser{newTestBrowser(t), newTestBrowser(t)}
		var wg sync.WaitGroup
		for _, tb := range tabs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tb.attach(sa)
			}()
		}
		wg.Wait()
		first := uint16(10000 * (i + 1))
		tabs[0].send(first, 5*time.Millisecond)
		tabs[1].send(first+5000, 5*time.Millisecond)
		// The kept tab is the node's browser: its offer is the node's
		// remote description.
		var kept *testBrowser
		sa.mu.Lock()
		if sa.browser != nil {
			for _, tb := range tabs {
				if sa.browser.RemoteDescription().SDP == tb.pc.LocalDescription().SDP {
					kept = tb
				}
			}
		}
		sa.mu.Unlock()
		if kept == nil {
			t.Fatal("the node kept neither tab")
		}
		from := first
		if kept == tabs[1] {
			from = first + 5000
		}
		waitFor(t, fmt.Sprintf("round %d: the kept tab's video at b", i), func() bool {
			browserB.mu.Lock()
			defer browserB.mu.Unlock()
			n := 0
			for _, p := range browserB.rx[webrtc.RTPCodecTypeVideo] {
				if p.sent-from < 5000 {
					n++
				}
			}
			return n >= 20
		})
		tabs[0].close()
		tabs[1].close()
	}
}
