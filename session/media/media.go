// Package media is Tandem's media plane: a pion API with the codecs pinned
// to VP8 and Opus, and a Relay that forwards RTP between a user's browser
// and the partner's node without transcoding.
//
// The path of one video frame:
//
//	browser A --(loopback WebRTC)--> node A --(WebRTC)--> node B --(loopback WebRTC)--> browser B
//
// Each node holds one Relay per session. Its two sides are the browser leg
// (the browser's PeerConnection to its own node) and the partner leg (the
// node-to-node PeerConnection). Whatever arrives on one side is written,
// packet by packet, to the other side's outgoing track of the same kind.
// Keyframe requests (RTCP PLI/FIR) travel the other way: a viewer's request
// is forwarded to the source side, at most one per KeyframeInterval, and a
// viewer that connects gets a keyframe requested for it.
//
// Both sides may come and go (a browser reloads, the partner reconnects):
// the outgoing tracks live as long as the Relay and are bound to every new
// PeerConnection, so nothing has to be renegotiated on the other side. A
// new source starts with its own SSRC, sequence numbers and timestamps;
// the relay renumbers its packets to continue the outgoing stream (see
// rewriter) and asks it for a keyframe, so the viewer's decoder carries on.
package media

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// Pinned codecs. Every Tandem node and browser leg negotiates exactly these,
// so RTP can be forwarded as is.
const (
	VideoPayloadType = 96
	AudioPayloadType = 111
)

// VideoCodec and AudioCodec describe the pinned codecs.
var (
	VideoCodec = webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: []webrtc.RTCPFeedback{
			{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"},
			{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "transport-cc"},
		},
	}
	AudioCodec = webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
		SDPFmtpLine:  "minptime=10;useinbandfec=1",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "transport-cc"}},
	}
)

// Options tune the ICE agent of every PeerConnection made by an API.
type Options struct {
	// IncludeLoopback gathers 127.0.0.1 candidates (pion leaves them out by
	// default, so a machine with only lo would never connect).
	IncludeLoopback bool
	// LoopbackOnly gathers and pairs loopback candidates only, over UDP4,
	// with multicast DNS off: nothing leaves the machine. For tests and for
	// the browser leg's tests; implies IncludeLoopback.
	LoopbackOnly bool
	// ICE liveness timeouts; zero keeps pion's defaults (5 s disconnected,
	// 25 s failed, 2 s keepalive).
	DisconnectedTimeout time.Duration
	FailedTimeout       time.Duration
	KeepAliveInterval   time.Duration
	// TURNDialer, if set, opens the connection to every TURN server
	// reached over TCP (turn:...?transport=tcp and turns:): pion/ice uses
	// the connection it returns as is, so the dialer does the TLS of a
	// turns: server itself (pion's own TLS checks only against the
	// system's CAs, see docs/reach.md). The transport to a TURN server
	// does not depend on the candidate network types (UDP only here):
	// pion/ice tries UDP and TCP unless WithTURNTransportProtocols says
	// otherwise, and pion/webrtc never sets it.
	TURNDialer interface {
		Dial(network, addr string) (net.Conn, error)
	}
}

// NewAPI returns a pion API whose MediaEngine knows only VP8 and Opus, with
// NACK, RTCP reports and transport-wide congestion control feedback (which
// browsers use to find their sending rate).
func NewAPI(o Options) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: VideoCodec, PayloadType: VideoPayloadType}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("registering VP8: %w", err)
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: AudioCodec, PayloadType: AudioPayloadType}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("registering Opus: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(me, ir); err != nil {
		return nil, fmt.Errorf("configuring NACK: %w", err)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("configuring RTCP reports: %w", err)
	}
	if err := webrtc.ConfigureTWCCSender(me, ir); err != nil {
		return nil, fmt.Errorf("configuring TWCC: %w", err)
	}
	se := webrtc.SettingEngine{}
	if o.IncludeLoopback || o.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
	}
	if o.LoopbackOnly {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	if o.TURNDialer != nil {
		se.SetICEProxyDialer(o.TURNDialer)
	}
	if o.DisconnectedTimeout > 0 || o.FailedTimeout > 0 || o.KeepAliveInterval > 0 {
		d, f, k := 5*time.Second, 25*time.Second, 2*time.Second
		if o.DisconnectedTimeout > 0 {
			d = o.DisconnectedTimeout
		}
		if o.FailedTimeout > 0 {
			f = o.FailedTimeout
		}
		if o.KeepAliveInterval > 0 {
			k = o.KeepAliveInterval
		}
		se.SetICETimeouts(d, f, k)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}
