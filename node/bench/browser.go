package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
)

// Synthetic media rates: a 1.5 Mbit/s VP8 camera (30 frames a second of
// five 1250-byte packets) and a 40 kbit/s Opus microphone (50 packets a
// second of 100 bytes), what a browser sends for a video call.
const (
	videoFPS          = 30
	videoPktsPerFrame = 5
	videoPayload      = 1250
	audioPPS          = 50
	audioPayload      = 100
)

// fakeBrowser is a pion PeerConnection standing in for a user's browser:
// it sends synthetic VP8 and Opus at the rates above and counts what
// arrives. Nothing about it is mocked: it runs the same WebRTC stack
// (ICE, DTLS, SRTP, RTCP interceptors) a browser leg does, on loopback.
type fakeBrowser struct {
	pc           *webrtc.PeerConnection
	video, audio *webrtc.TrackLocalStaticRTP

	first    atomic.Int64 // unix nanos of the first packet received, 0 before
	received atomic.Int64 // packets received
	sending  atomic.Bool

	stop chan struct{}
	wg   sync.WaitGroup
}

func newFakeBrowser(api *webrtc.API) (*fakeBrowser, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("creating browser peer connection: %w", err)
	}
	b := &fakeBrowser{pc: pc, stop: make(chan struct{})}
	if b.video, err = webrtc.NewTrackLocalStaticRTP(media.VideoCodec, "camera", "browser"); err != nil {
		pc.Close()
		return nil, err
	}
	if b.audio, err = webrtc.NewTrackLocalStaticRTP(media.AudioCodec, "mic", "browser"); err != nil {
		pc.Close()
		return nil, err
	}
	for _, tr := range []*webrtc.TrackLocalStaticRTP{b.video, b.audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			pc.Close()
			return nil, err
		}
		b.wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil { // drained, as pion needs
					return
				}
			}
		})
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		b.wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
				if b.received.Add(1) == 1 {
					b.first.Store(time.Now().UnixNano())
				}
			}
		})
	})
	return b, nil
}

// offer makes the browser's complete SDP offer (all candidates in it).
func (b *fakeBrowser) offer(ctx context.Context) (string, error) {
	o, err := b.pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(o); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return b.pc.LocalDescription().SDP, nil
}

// answered applies the answer to the browser's offer.
func (b *fakeBrowser) answered(sdp string) error {
	return b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
}

// answer answers another browser's offer (for the direct calibration
// pairs).
func (b *fakeBrowser) answer(ctx context.Context, offer string) (string, error) {
	if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	a, err := b.pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(a); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return b.pc.LocalDescription().SDP, nil
}

// send starts the camera and microphone; they run until close.
func (b *fakeBrowser) send() {
	if b.sending.Swap(true) {
		return
	}
	b.wg.Go(func() {
		t := time.NewTicker(time.Second / videoFPS)
		defer t.Stop()
		payload := make([]byte, videoPayload)
		var seq uint16
		var ts uint32
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
			ts += 90000 / videoFPS
			for i := range videoPktsPerFrame {
				payload[0] = 0 // VP8 payload descriptor: S bit on a frame's first packet
				if i == 0 {
					payload[0] = 0x10
				}
				seq++
				b.video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: i == videoPktsPerFrame-1}, Payload: payload})
			}
		}
	})
	b.wg.Go(func() {
		t := time.NewTicker(time.Second / audioPPS)
		defer t.Stop()
		payload := make([]byte, audioPayload)
		payload[0] = 0xfc // Opus TOC byte
		var seq uint16
		var ts uint32
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
			seq++
			ts += 48000 / audioPPS
			b.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts}, Payload: payload})
		}
	})
}

// firstAt is when the first packet arrived (zero before).
func (b *fakeBrowser) firstAt() time.Time {
	if n := b.first.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (b *fakeBrowser) close() {
	select {
	case <-b.stop:
		return
	default:
	}
	close(b.stop)
	b.pc.Close()
	b.wg.Wait()
}
