// Package browserleg is a user's browser tab without the browser: a pion
// PeerConnection that sends a camera and a microphone to a Tandem node's
// session the way the web UI does (WHIP-style: one SDP offer with every
// candidate in it, answered by the node; over the API that is
// POST /api/v1/sessions/{id}/media) and counts what the partner's side
// sends back. It runs the same WebRTC stack a browser leg does (ICE, DTLS,
// SRTP, NACK and RTCP interceptors); only the camera is canned.
//
// The demo partners' cameras (node/demo), the session benchmark's
// browsers (node/bench) and the NAT lab's media check (node/natlab_test.go)
// are all made of it.
package browserleg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/tandem-cowork/tandem/session/media"
)

// Synthetic media rates: a 1.5 Mbit/s VP8 camera (30 frames a second of
// five 1250-byte packets) and a 40 kbit/s Opus microphone (50 packets a
// second of 100 bytes), what a browser sends for a video call.
const (
	SyntheticFPS      = 30
	videoPktsPerFrame = 5
	videoPayload      = 1250
	audioPPS          = 50
	audioPayload      = 100
	// SyntheticPPS is the packets a second a synthetic leg with audio
	// sends; SyntheticVideoBitrate its video payload in bit/s.
	SyntheticPPS          = SyntheticFPS*videoPktsPerFrame + audioPPS
	SyntheticVideoBitrate = SyntheticFPS * videoPktsPerFrame * videoPayload * 8
)

// Options say what the leg sends and how closely it looks at what it
// receives.
type Options struct {
	// Clip is a VP8 IVF clip looped as the camera, at its own frame rate;
	// a viewer's keyframe request (PLI, FIR) starts it over at its first
	// frame, a keyframe.
	Clip []byte
	// Synthetic sends VP8-shaped packets at SyntheticFPS (1.5 Mbit/s)
	// instead of a clip: a realistic load, but no picture.
	Synthetic bool
	// Audio sends a microphone: Opus-shaped packets, 50 a second.
	Audio bool
	// Expect is the partner's IVF clip: received video is reassembled
	// into frames (costly; leave nil for load tests) and a frame counts
	// as Matched when it is byte for byte one of this clip's frames, so
	// it crossed both nodes intact.
	Expect []byte
}

// Stats is what the leg has received so far.
type Stats struct {
	State        string    `json:"state"` // the PeerConnection's state
	VideoPackets uint64    `json:"video_packets"`
	VideoBytes   uint64    `json:"video_bytes"` // RTP payload bytes
	AudioPackets uint64    `json:"audio_packets"`
	FirstVideo   time.Time `json:"first_video,omitzero"`
	FirstAudio   time.Time `json:"first_audio,omitzero"`
	// With Options.Expect: VP8 frames reassembled from the video, those
	// that are keyframes, and those that are exactly a frame of the
	// expected clip.
	Frames    uint64 `json:"frames"`
	Keyframes uint64 `json:"keyframes"`
	Matched   uint64 `json:"matched"`
}

// Leg is one browser leg.
type Leg struct {
	pc       *webrtc.PeerConnection
	opts     Options
	sample   *webrtc.TrackLocalStaticSample // the clip camera
	rtpVideo *webrtc.TrackLocalStaticRTP    // the synthetic camera
	audio    *webrtc.TrackLocalStaticRTP
	expect   map[[32]byte]bool
	// keyframe asks the clip player to start over.
	keyframe chan struct{}

	first     atomic.Int64 // unix nanos of the first packet of any kind, 0 before
	received  atomic.Int64 // packets of any kind
	mu        sync.Mutex
	stats     Stats
	sending   atomic.Bool
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New makes a leg on api (a media.NewAPI: VP8 and Opus only). Video and
// audio are offered send-and-receive when the leg sends them, else
// receive-only.
func New(api *webrtc.API, o Options) (*Leg, error) {
	if o.Clip != nil && o.Synthetic {
		return nil, errors.New("browserleg: a clip or synthetic video, not both")
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("creating browser peer connection: %w", err)
	}
	l := &Leg{pc: pc, opts: o, stop: make(chan struct{}), keyframe: make(chan struct{}, 1)}
	fail := func(err error) (*Leg, error) {
		pc.Close()
		return nil, err
	}
	if o.Clip != nil {
		if _, _, err := ivfreader.NewWith(bytes.NewReader(o.Clip)); err != nil {
			return fail(fmt.Errorf("browserleg: reading the clip: %w", err))
		}
	}
	if o.Expect != nil {
		if l.expect, err = clipFrames(o.Expect); err != nil {
			return fail(fmt.Errorf("browserleg: reading the expected clip: %w", err))
		}
	}
	var video webrtc.TrackLocal
	switch {
	case o.Clip != nil:
		l.sample, err = webrtc.NewTrackLocalStaticSample(media.VideoCodec, "camera", "browser")
		video = l.sample
	case o.Synthetic:
		l.rtpVideo, err = webrtc.NewTrackLocalStaticRTP(media.VideoCodec, "camera", "browser")
		video = l.rtpVideo
	}
	if err != nil {
		return fail(err)
	}
	if err := l.addKind(webrtc.RTPCodecTypeVideo, video); err != nil {
		return fail(err)
	}
	var audio webrtc.TrackLocal
	if o.Audio {
		if l.audio, err = webrtc.NewTrackLocalStaticRTP(media.AudioCodec, "mic", "browser"); err != nil {
			return fail(err)
		}
		audio = l.audio
	}
	if err := l.addKind(webrtc.RTPCodecTypeAudio, audio); err != nil {
		return fail(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		l.wg.Go(func() { l.receive(tr) })
	})
	return l, nil
}

// addKind adds a send-and-receive transceiver for track, or a
// receive-only one without a track. The sender's RTCP is read (pion needs
// it drained) and a keyframe request restarts the clip.
func (l *Leg) addKind(kind webrtc.RTPCodecType, track webrtc.TrackLocal) error {
	if track == nil {
		_, err := l.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
		return err
	}
	sender, err := l.pc.AddTrack(track)
	if err != nil {
		return err
	}
	l.wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := sender.Read(buf)
			if err != nil {
				return
			}
			if l.sample == nil || kind != webrtc.RTPCodecTypeVideo {
				continue
			}
			pkts, err := rtcp.Unmarshal(buf[:n])
			if err != nil {
				continue
			}
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
					select {
					case l.keyframe <- struct{}{}:
					default:
					}
				}
			}
		}
	})
	return nil
}

// receive counts one remote track's packets (and reassembles video frames
// when the leg expects a clip).
func (l *Leg) receive(tr *webrtc.TrackRemote) {
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	var sb *samplebuilder.SampleBuilder
	if video && l.expect != nil {
		// Up to 256 packets late: a keyframe of the clips is a few dozen.
		sb = samplebuilder.New(256, &codecs.VP8Packet{}, 90000)
	}
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		now := time.Now()
		if l.received.Add(1) == 1 {
			l.first.Store(now.UnixNano())
		}
		l.mu.Lock()
		if video {
			l.stats.VideoPackets++
			l.stats.VideoBytes += uint64(len(p.Payload))
			if l.stats.FirstVideo.IsZero() {
				l.stats.FirstVideo = now
			}
		} else {
			l.stats.AudioPackets++
			if l.stats.FirstAudio.IsZero() {
				l.stats.FirstAudio = now
			}
		}
		l.mu.Unlock()
		if sb == nil {
			continue
		}
		sb.Push(p)
		for s := sb.Pop(); s != nil; s = sb.Pop() {
			l.mu.Lock()
			l.stats.Frames++
			// A VP8 keyframe: bit 0 of the frame tag clear and the start
			// code 9d 01 2a (RFC 6386 section 9.1).
			if len(s.Data) >= 6 && s.Data[0]&1 == 0 && s.Data[3] == 0x9d && s.Data[4] == 0x01 && s.Data[5] == 0x2a {
				l.stats.Keyframes++
			}
			if l.expect[sha256.Sum256(s.Data)] {
				l.stats.Matched++
			}
			l.mu.Unlock()
		}
	}
}

// clipFrames hashes every frame of an IVF clip.
func clipFrames(clip []byte) (map[[32]byte]bool, error) {
	r, _, err := ivfreader.NewWith(bytes.NewReader(clip))
	if err != nil {
		return nil, err
	}
	out := map[[32]byte]bool{}
	for {
		f, _, err := r.ParseNextFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		out[sha256.Sum256(f)] = true
	}
	if len(out) == 0 {
		return nil, errors.New("no frames")
	}
	return out, nil
}

// Offer makes the leg's complete SDP offer (all candidates in it, as the
// node wants: it does not trickle).
func (l *Leg) Offer(ctx context.Context) (string, error) {
	o, err := l.pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	return l.setLocal(ctx, o)
}

// Answered applies the answer to the leg's offer.
func (l *Leg) Answered(sdp string) error {
	return l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
}

// Answer answers another leg's offer (two legs connected to each other
// directly: the benchmark's calibration pairs).
func (l *Leg) Answer(ctx context.Context, offer string) (string, error) {
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	a, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	return l.setLocal(ctx, a)
}

func (l *Leg) setLocal(ctx context.Context, d webrtc.SessionDescription) (string, error) {
	gathered := webrtc.GatheringCompletePromise(l.pc)
	if err := l.pc.SetLocalDescription(d); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return l.pc.LocalDescription().SDP, nil
}

// AttachFunc hands the leg's offer to a node and returns its answer:
// session.Session.AttachBrowser in process, or client.Client.AttachMedia
// over the API.
type AttachFunc func(ctx context.Context, offerSDP string) (answerSDP string, err error)

// Attach offers, has attach answer, and starts sending.
func (l *Leg) Attach(ctx context.Context, attach AttachFunc) error {
	offer, err := l.Offer(ctx)
	if err != nil {
		return err
	}
	answer, err := attach(ctx, offer)
	if err != nil {
		return err
	}
	if err := l.Answered(answer); err != nil {
		return err
	}
	l.Send()
	return nil
}

// Send starts the camera and microphone; they run until Close.
func (l *Leg) Send() {
	if l.sending.Swap(true) {
		return
	}
	switch {
	case l.sample != nil:
		l.wg.Go(l.playClip)
	case l.rtpVideo != nil:
		l.wg.Go(l.syntheticVideo)
	}
	if l.audio != nil {
		l.wg.Go(l.syntheticAudio)
	}
}

// playClip loops the clip at its frame rate, starting over (at a
// keyframe) when a viewer asks for one.
func (l *Leg) playClip() {
	_, hdr, err := ivfreader.NewWith(bytes.NewReader(l.opts.Clip))
	if err != nil || hdr.TimebaseDenominator == 0 {
		return
	}
	frame := time.Second * time.Duration(hdr.TimebaseNumerator) / time.Duration(hdr.TimebaseDenominator)
	t := time.NewTicker(frame)
	defer t.Stop()
	var r *ivfreader.IVFReader
	for {
		select {
		case <-l.stop:
			return
		case <-l.keyframe:
			r = nil
		case <-t.C:
		}
		if r == nil {
			r, _, _ = ivfreader.NewWith(bytes.NewReader(l.opts.Clip))
		}
		data, _, err := r.ParseNextFrame()
		if err == io.EOF {
			r, _, _ = ivfreader.NewWith(bytes.NewReader(l.opts.Clip))
			data, _, err = r.ParseNextFrame()
		}
		if err != nil {
			return
		}
		l.sample.WriteSample(pmedia.Sample{Data: data, Duration: frame})
	}
}

func (l *Leg) syntheticVideo() {
	t := time.NewTicker(time.Second / SyntheticFPS)
	defer t.Stop()
	payload := make([]byte, videoPayload)
	var seq uint16
	var ts uint32
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ts += 90000 / SyntheticFPS
		for i := range videoPktsPerFrame {
			payload[0] = 0 // VP8 payload descriptor: S bit on a frame's first packet
			if i == 0 {
				payload[0] = 0x10
			}
			seq++
			l.rtpVideo.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: i == videoPktsPerFrame-1}, Payload: payload})
		}
	}
}

func (l *Leg) syntheticAudio() {
	t := time.NewTicker(time.Second / audioPPS)
	defer t.Stop()
	payload := make([]byte, audioPayload)
	payload[0] = 0xfc // Opus TOC byte
	var seq uint16
	var ts uint32
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		seq++
		ts += 48000 / audioPPS
		l.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts}, Payload: payload})
	}
}

// Received counts the packets of any kind received so far (cheap: the
// benchmark reads it for every leg).
func (l *Leg) Received() int64 { return l.received.Load() }

// FirstAt is when the first packet of any kind arrived (zero before).
func (l *Leg) FirstAt() time.Time {
	if n := l.first.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Stats reports what the leg has received.
func (l *Leg) Stats() Stats {
	l.mu.Lock()
	s := l.stats
	l.mu.Unlock()
	s.State = l.pc.ConnectionState().String()
	return s
}

// Close stops the camera and microphone and closes the PeerConnection.
func (l *Leg) Close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		l.pc.Close()
		l.wg.Wait()
	})
}
