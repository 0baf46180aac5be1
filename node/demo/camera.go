package demo

import (
	"context"
	"embed"
	"fmt"
	"strings"

	"github.com/tandem-cowork/tandem/node/browserleg"
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

// Clip is the named demo partner's clip (ada, bo, chen or dee) as a VP8
// IVF file: a camera for tests that want a real picture (the NAT lab).
func Clip(name string) ([]byte, error) {
	return clips.ReadFile("clips/" + strings.ToLower(name) + ".ivf")
}

// camera is a demo partner's "browser": a browser leg attached to its
// node's session that loops the partner's clip as its video. What the
// user sends back is received and counted, nothing more.
type camera struct{ leg *browserleg.Leg }

func attachCamera(ctx context.Context, s *session.Session, clip []byte) (*camera, error) {
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		return nil, err
	}
	leg, err := browserleg.New(api, browserleg.Options{Clip: clip})
	if err != nil {
		return nil, err
	}
	if err := leg.Attach(ctx, s.AttachBrowser); err != nil {
		leg.Close()
		return nil, fmt.Errorf("attaching demo camera: %w", err)
	}
	return &camera{leg: leg}, nil
}

func (c *camera) close() { c.leg.Close() }
