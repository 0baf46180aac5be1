package demo

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/tandem-cowork/tandem/session"
	"github.com/tandem-cowork/tandem/session/media"
)

// The clips are 3-second VP8 test patterns with each demo partner's name,
// a keyframe every second, made once with:
//
//	ffmpeg -f lavfi -i testsrc2=size=320x240:rate=15:duration=3 \
//	  -vf "drawbox=...,drawtext=text='Ada':...,drawtext=text='demo partner':..." \
//	  -c:v libvpx -b:v 100k -g 15 -auto-alt-ref 0 -f ivf ada.ivf
//
//go:embed clips/*.ivf
var clips embed.FS

func clipFor(name string) ([]byte, error) {
	return clips.ReadFile("clips/" + strings.ToLower(name) + ".ivf")
}

// camera is a demo partner's "browser": a WebRTC leg attached to its node's
// session that loops the partner's clip as its video.
type camera struct {
	pc   *webrtc.PeerConnection
	stop chan struct{}
	// keyframe asks the player to start the clip over: its first frame is
	// a keyframe, which is what a viewer's PLI asks for.
	keyframe chan struct{}
	wg       sync.WaitGroup
}

func attachCamera(ctx context.Context, s *session.Session, clip []byte) (*camera, error) {
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("creating camera peer connection: %w", err)
	}
	c := &camera{pc: pc, stop: make(chan struct{}), keyframe: make(chan struct{}, 1)}
	track, err := webrtc.NewTrackLocalStaticSample(media.VideoCodec, "video", "demo")
	if err != nil {
		pc.Close()
		return nil, err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		pc.Close()
		return nil, err
	}
	// The partner's video comes back on a receive-only transceiver; its
	// packets are read and dropped.
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		pc.Close()
		return nil, err
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
			}
		}()
	})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := sender.Read(buf)
			if err != nil {
				return
			}
			pkts, err := rtcp.Unmarshal(buf[:n])
			if err != nil {
				continue
			}
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
					select {
					case c.keyframe <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		pc.Close()
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		pc.Close()
		return nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		pc.Close()
		return nil, ctx.Err()
	}
	answer, err := s.AttachBrowser(ctx, pc.LocalDescription().SDP)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("attaching demo camera: %w", err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		pc.Close()
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.play(track, clip)
	}()
	return c, nil
}

// play loops the clip at its frame rate until the camera closes, starting
// over (at a keyframe) when a viewer asks for one.
func (c *camera) play(track *webrtc.TrackLocalStaticSample, clip []byte) {
	_, hdr, err := ivfreader.NewWith(bytes.NewReader(clip))
	if err != nil {
		return
	}
	frame := time.Second * time.Duration(hdr.TimebaseNumerator) / time.Duration(hdr.TimebaseDenominator)
	t := time.NewTicker(frame)
	defer t.Stop()
	var r *ivfreader.IVFReader
	for {
		select {
		case <-c.stop:
			return
		case <-c.keyframe:
			r = nil
		case <-t.C:
		}
		if r == nil {
			r, _, _ = ivfreader.NewWith(bytes.NewReader(clip))
		}
		data, _, err := r.ParseNextFrame()
		if err == io.EOF {
			r, _, _ = ivfreader.NewWith(bytes.NewReader(clip))
			data, _, err = r.ParseNextFrame()
		}
		if err != nil {
			return
		}
		track.WriteSample(pmedia.Sample{Data: data, Duration: frame})
	}
}

func (c *camera) close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	c.pc.Close()
	c.wg.Wait()
}
