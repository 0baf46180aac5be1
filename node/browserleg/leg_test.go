package browserleg_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/browserleg"
	"github.com/tandem-cowork/tandem/node/demo"
	"github.com/tandem-cowork/tandem/node/nodetest"
	"github.com/tandem-cowork/tandem/session/media"
)

// Two legs connected to each other on loopback: each sends its clip and
// microphone, and each receives the other's clip frame for frame intact
// (keyframes among them) and its audio; a frame of a clip it does not
// expect is counted but never matched.
func TestLegsExchangeClips(t *testing.T) {
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	clip := func(name string) []byte {
		c, err := demo.Clip(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, err := browserleg.New(api, browserleg.Options{Clip: clip("ada"), Audio: true, Expect: clip("bo")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// B expects a clip A does not send.
	b, err := browserleg.New(api, browserleg.Options{Clip: clip("bo"), Audio: true, Expect: clip("chen")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Attach(ctx, b.Answer); err != nil {
		t.Fatal(err)
	}
	b.Send()
	var sa, sb browserleg.Stats
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		sa, sb = a.Stats(), b.Stats()
		return sa.Matched >= 20 && sa.Keyframes >= 1 && sa.AudioPackets >= 20 && sb.Frames >= 20 && sb.AudioPackets >= 20
	}, "both legs to receive frames and audio (A: %+v; B: %+v)", &sa, &sb)
	if sb.Matched != 0 {
		t.Errorf("B matched %d of A's frames against another clip", sb.Matched)
	}
	if sa.State != "connected" || sa.FirstVideo.IsZero() || a.FirstAt().IsZero() || a.Received() == 0 {
		t.Errorf("A's stats: %+v, first packet at %v, %d packets", sa, a.FirstAt(), a.Received())
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	api, err := media.NewAPI(media.Options{LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := browserleg.New(api, browserleg.Options{Clip: []byte("not a clip")}); err == nil {
		t.Error("a clip that is not IVF was accepted")
	}
	if _, err := browserleg.New(api, browserleg.Options{Clip: []byte("x"), Synthetic: true}); err == nil {
		t.Error("a clip and synthetic video at once were accepted")
	}
}
