package session

import (
	"context"
	"encoding/binary"
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
	remote atomic.Uint32 // SSRC of the received video

	mu    sync.Mutex
	first time.Time                        // when the first packet arrived
	got   map[webrtc.RTPCodecType][]uint16 // received sequence numbers
	bad   int                              // packets whose payload did not match
	more  chan struct{}

	wg   sync.WaitGroup
	stop chan struct{}
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
	tb := &testBrowser{t: t, pc: pc, got: map[webrtc.RTPCodecType][]uint16{}, more: make(chan struct{}), stop: make(chan struct{})}
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
				if len(p.Payload) < 3 || binary.BigEndian.Uint16(p.Payload[1:]) != p.SequenceNumber {
					tb.bad++
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
			tb.t.Fatalf("%d packets with a payload that does not match their sequence number", bad)
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
