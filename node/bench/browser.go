package bench

import (
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/browserleg"
)

// newBrowser is a user's browser for the session benchmark: a browser leg
// sending synthetic VP8 and Opus at a video call's rates (1.5 Mbit/s and
// 40 kbit/s; see browserleg), counting what arrives but not reassembling
// it, so the benchmark measures the nodes' relaying and not the browsers.
func newBrowser(api *webrtc.API) (*browserleg.Leg, error) {
	return browserleg.New(api, browserleg.Options{Synthetic: true, Audio: true})
}
