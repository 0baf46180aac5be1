package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Side names one leg of a Relay.
type Side int

const (
	// Browser is the leg between the user's browser and its own node.
	Browser Side = iota
	// Partner is the leg between the two nodes.
	Partner
)

func (s Side) String() string {
	if s == Browser {
		return "browser"
	}
	return "partner"
}

func (s Side) other() Side { return 1 - s }

// KeyframeInterval is the shortest gap between two keyframe requests sent
// to one source. Requests within the gap are merged into one sent at its
// end, so the last request is never lost.
const KeyframeInterval = 500 * time.Millisecond

// ErrClosed is returned by Bind after Close.
var ErrClosed = errors.New("relay closed")

const (
	video = 0
	audio = 1
)

func kindIndex(k webrtc.RTPCodecType) (int, bool) {
	switch k {
	case webrtc.RTPCodecTypeVideo:
		return video, true
	case webrtc.RTPCodecTypeAudio:
		return audio, true
	}
	return 0, false
}

// Relay forwards RTP between the browser leg and the partner leg of one
// session. Create it with NewRelay, Bind each PeerConnection before its
// offer or answer is made, tell it when a leg connects, and Close it after
// closing the PeerConnections bound to it.
type Relay struct {
	log *slog.Logger
	// out[side][kind] is the track written towards side.
	out [2][2]*webrtc.TrackLocalStaticRTP
	// outMu[side][kind] serialises the writes to out[side][kind] and
	// guards rw[side][kind], which keeps its stream continuous.
	outMu [2][2]sync.Mutex
	rw    [2][2]*rewriter
	// sources numbers the received tracks: each is one source.
	sources atomic.Uint64
	// keyframe[side] asks the source on side for a keyframe.
	keyframe [2]chan struct{}
	// forwarded[side] counts packets received from side and forwarded.
	forwarded [2]atomic.Uint64
	// adapt caps the video towards the partner on a relayed path (adapt.go).
	adapt adapter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	legs   [2]*leg
}

// leg is the PeerConnection currently bound on one side.
type leg struct {
	pc        *webrtc.PeerConnection
	connected bool
	// videoSSRC is the SSRC of the video arriving on this leg, once known.
	videoSSRC webrtc.SSRC
	hasVideo  bool
}

// NewRelay creates a relay with its four outgoing tracks.
func NewRelay(log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Relay{log: log}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for _, side := range []Side{Browser, Partner} {
		// Tracks towards the browser carry the partner's media, and the
		// other way round; the stream IDs say whose media it is.
		stream := "tandem-partner"
		if side == Partner {
			stream = "tandem-self"
		}
		var err error
		if r.out[side][video], err = webrtc.NewTrackLocalStaticRTP(VideoCodec, "video", stream); err != nil {
			return nil, fmt.Errorf("creating video track: %w", err)
		}
		if r.out[side][audio], err = webrtc.NewTrackLocalStaticRTP(AudioCodec, "audio", stream); err != nil {
			return nil, fmt.Errorf("creating audio track: %w", err)
		}
		r.rw[side][video] = newRewriter(VideoCodec.ClockRate)
		r.rw[side][audio] = newRewriter(AudioCodec.ClockRate)
		r.keyframe[side] = make(chan struct{}, 1)
	}
	for _, side := range []Side{Browser, Partner} {
		r.wg.Add(1)
		go r.keyframeLoop(side)
	}
	r.wg.Add(1)
	go r.adaptLoop()
	return r, nil
}

// Bind makes pc the current PeerConnection of side: it adds the outgoing
// audio and video tracks (as sendrecv transceivers, or matched to the
// remote offer's when called after SetRemoteDescription) and forwards
// every track pc receives to the other side. It replaces pc's OnTrack
// handler. Call it before creating the offer or the answer.
func (r *Relay) Bind(side Side, pc *webrtc.PeerConnection) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.legs[side] = &leg{pc: pc}
	r.mu.Unlock()
	for k := range r.out[side] {
		sender, err := pc.AddTrack(r.out[side][k])
		if err != nil {
			return fmt.Errorf("adding %s track: %w", r.out[side][k].Kind(), err)
		}
		if !r.goRun(func() { r.drainRTCP(side, k == video, sender) }) {
			return ErrClosed
		}
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		r.goRun(func() { r.forward(side, pc, t) })
	})
	return nil
}

// Connected tells the relay that side's PeerConnection pc is connected: a
// new viewer, so the source on the other side is asked for a keyframe.
func (r *Relay) Connected(side Side, pc *webrtc.PeerConnection) {
	r.mu.Lock()
	l := r.legs[side]
	ok := l != nil && l.pc == pc
	if ok {
		l.connected = true
	}
	r.mu.Unlock()
	if ok {
		r.RequestKeyframe(side.other())
	}
}

// Unbind forgets pc if it is still side's current PeerConnection. Tracks
// already bound to a closed PeerConnection are unbound by pion itself.
func (r *Relay) Unbind(side Side, pc *webrtc.PeerConnection) {
	r.mu.Lock()
	if l := r.legs[side]; l != nil && l.pc == pc {
		r.legs[side] = nil
	}
	r.mu.Unlock()
}

// RequestKeyframe asks the video source on side for a keyframe, subject
// to KeyframeInterval.
func (r *Relay) RequestKeyframe(side Side) {
	select {
	case r.keyframe[side] <- struct{}{}:
	default: // one is already pending
	}
}

// Forwarded is the number of RTP packets received from side and written
// to the other side's track.
func (r *Relay) Forwarded(from Side) uint64 { return r.forwarded[from].Load() }

// Close stops the relay and waits for its goroutines. The forwarding
// goroutines end when their PeerConnection closes, so close every
// PeerConnection bound to the relay first.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	r.legs = [2]*leg{}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// goRun starts f as a relay goroutine unless the relay is closed.
func (r *Relay) goRun(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// forward copies packets from t, received on side, to the other side.
// Each received track is a new source for the outgoing track: the
// rewriter continues the outgoing stream across the change, and only the
// side's current PeerConnection is forwarded, so two sources never take
// turns.
func (r *Relay) forward(from Side, pc *webrtc.PeerConnection, t *webrtc.TrackRemote) {
	k, ok := kindIndex(t.Kind())
	if !ok {
		return
	}
	src := r.sources.Add(1)
	r.mu.Lock()
	viewer := r.legs[from.other()]
	if l := r.legs[from]; l != nil && l.pc == pc && k == video {
		l.videoSSRC, l.hasVideo = t.SSRC(), true
	}
	wantKeyframe := k == video && viewer != nil && viewer.connected
	r.mu.Unlock()
	if wantKeyframe {
		// A new source: the viewer's decoder needs a keyframe from it.
		r.RequestKeyframe(from)
	}
	r.log.Debug("forwarding track", "from", from, "kind", t.Kind(), "ssrc", t.SSRC())
	to := from.other()
	buf := make([]byte, 1500)
	var p rtp.Packet
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return // the PeerConnection closed
		}
		if err := p.Unmarshal(buf[:n]); err != nil {
			continue
		}
		if !r.isCurrent(from, pc) {
			continue // replaced: its successor's packets go out instead
		}
		if from == Browser && k == video && !r.adapt.allowVideo(n) {
			continue // over the relayed path's video cap (adapt.go)
		}
		// Header extension IDs are negotiated per leg; the next leg's
		// interceptors add their own.
		p.Header.Extension, p.Header.Extensions, p.Header.ExtensionProfile = false, nil, 0
		r.outMu[to][k].Lock()
		// The wall clock, not the session's (injectable) clock: RTP
		// timestamps count the media's real time.
		r.rw[to][k].rewrite(src, &p.Header, time.Now())
		// A write fails only for a closing PeerConnection; the others
		// bound to the track still get the packet.
		_ = r.out[to][k].WriteRTP(&p)
		r.outMu[to][k].Unlock()
		r.forwarded[from].Add(1)
	}
}

// isCurrent reports whether pc is side's current PeerConnection.
func (r *Relay) isCurrent(side Side, pc *webrtc.PeerConnection) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.legs[side]
	return l != nil && l.pc == pc
}

// drainRTCP reads the RTCP a viewer sends about one of our outgoing
// tracks (pion's interceptors need it read) and forwards keyframe
// requests for video to the source on the other side.
func (r *Relay) drainRTCP(viewer Side, isVideo bool, s *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			return // the sender stopped
		}
		if !isVideo {
			continue
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				r.RequestKeyframe(viewer.other())
			case *rtcp.ReceiverReport:
				if viewer == Partner {
					r.adapt.noteReport(p, senderSSRCs(s))
				}
			}
		}
	}
}

// senderSSRCs are the SSRCs s sends with.
func senderSSRCs(s *webrtc.RTPSender) map[uint32]bool {
	out := map[uint32]bool{}
	for _, e := range s.GetParameters().Encodings {
		out[uint32(e.SSRC)] = true
	}
	return out
}

// keyframeLoop sends the keyframe requests for the source on side, at
// most one per KeyframeInterval.
func (r *Relay) keyframeLoop(side Side) {
	defer r.wg.Done()
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.keyframe[side]:
		}
		r.sendPLI(side)
		t.Reset(KeyframeInterval)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Relay) sendPLI(side Side) {
	r.mu.Lock()
	l := r.legs[side]
	if l == nil || !l.hasVideo {
		r.mu.Unlock()
		return
	}
	pc, ssrc := l.pc, l.videoSSRC
	r.mu.Unlock()
	if err := pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}}); err != nil {
		r.log.Debug("sending keyframe request", "to", side, "err", err)
	}
}
