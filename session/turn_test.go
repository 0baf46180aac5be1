package session

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/peerturn"
	"github.com/tandem-cowork/tandem/session/media"
)

// turnHelper is a third host that runs a peerturn STUN/TURN server on
// 127.0.0.1 and hands out credentials over /tandem/turn/1.
func turnHelper(t *testing.T) (host.Host, *peerturn.Server) {
	return turnHelperWith(t, peerturn.ServerConfig{})
}

func turnHelperWith(t *testing.T, cfg peerturn.ServerConfig) (host.Host, *peerturn.Server) {
	t.Helper()
	cfg.ListenIP, cfg.RelayIP, cfg.Log = net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 1), testLogger()
	srv, err := peerturn.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	h := newHost(t)
	h.SetStreamHandler(peerturn.Protocol, peerturn.NewHandler(srv).HandleStream)
	return h, srv
}

// askHelper is a Config.PeerICE that asks helper for credentials.
func askHelper(t *testing.T, self func() host.Host, helper host.Host) func(context.Context) []PeerICEServer {
	return askHelperTLS(t, self, helper, false)
}

// askHelperTLS is askHelper; with tlsOnly it offers ICE only the
// helper's turns: URL, pinned to the certificate the grant names.
func askHelperTLS(t *testing.T, self func() host.Host, helper host.Host, tlsOnly bool) func(context.Context) []PeerICEServer {
	return func(ctx context.Context) []PeerICEServer {
		h := self()
		h.Peerstore().AddAddrs(helper.ID(), helper.Addrs(), peerstore.PermanentAddrTTL)
		g, err := peerturn.Request(ctx, h, helper.ID(), time.Now())
		if err != nil {
			t.Logf("asking the helper: %v", err)
			return nil
		}
		g = g.KnownAddrs(h)
		if tlsOnly {
			if g.TLSURL == "" {
				t.Errorf("the helper's grant has no TLS URL: %+v", g)
				return nil
			}
			g.URLs = []string{g.TLSURL}
		}
		return []PeerICEServer{{Helper: g.Helper, TLSFingerprint: g.TLSFingerprint, ICEServer: webrtc.ICEServer{
			URLs: g.URLs, Username: g.Username, Credential: g.Credential, CredentialType: webrtc.ICECredentialTypePassword,
		}}}
	}
}

// relayPair is two nodes whose ICE may only use relay candidates, with
// credentials for helper's TURN relay from /tandem/turn/1.
func relayPair(t *testing.T, clk *clock, helper host.Host) (a, b *node) {
	return relayPairTLS(t, clk, helper, false)
}

// relayPairTLS is relayPair; with tlsOnly the nodes reach the relay over
// TLS only (turns:).
func relayPairTLS(t *testing.T, clk *clock, helper host.Host, tlsOnly bool) (a, b *node) {
	var hosts [2]host.Host
	mk := func(i int, name string) *node {
		return newNodeWith(t, name, clk, func(c *Config) {
			c.RelayOnly = true
			hosts[i] = c.Host
			c.PeerICE = askHelperTLS(t, func() host.Host { return hosts[i] }, helper, tlsOnly)
		})
	}
	a, b = mk(0, "a"), mk(1, "b")
	if b.h.ID() < a.h.ID() {
		a, b = b, a
		a.name, b.name = "a", "b"
	}
	introduce(a, b)
	return a, b
}

// TestSessionOverPeerTURN: two nodes forced to relay-only ICE connect a
// session through a third node's TURN relay: the data channel (chat) and
// media flow, and the snapshot says "via relay" and names the helper.
func TestSessionOverPeerTURN(t *testing.T) {
	helper, srv := turnHelper(t)
	clk := newClock()
	a, b := relayPair(t, clk, helper)
	sa, sb := meet(t, a, b, "turn")

	for _, x := range []struct {
		name string
		s    *Session
	}{{"a", sa}, {"b", sb}} {
		c := x.s.State().Connect
		if c.State != ConnectConnected || c.Path == nil || c.Path.Kind != PathRelay ||
			!strings.Contains(c.Path.Relay, "Tandem peer "+helper.ID().String()) || !strings.HasPrefix(c.Path.Text, "via relay") {
			t.Fatalf("%s's connect report: %+v path %+v, want connected via the helper's relay", x.name, c, c.Path)
		}
		if !strings.HasPrefix(c.Path.Local, "relay udp 127.0.0.1:") {
			t.Errorf("%s's local candidate %q is not a relay one", x.name, c.Path.Local)
		}
		t.Logf("%s: %s (local %s, remote %s)", x.name, c.Path.Text, c.Path.Local, c.Path.Remote)
	}
	for _, p := range []peer.ID{a.h.ID(), b.h.ID()} {
		if srv.Allocations(p) == 0 {
			t.Errorf("%s holds no allocation on the helper's relay", p)
		}
	}

	if err := sa.Chat("through the relay"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "a's chat at b", isFrom(EventChat, sb.ID(), FromPartner, func(e Event) bool { return e.Text == "through the relay" }))

	browserA, browserB := newTestBrowser(t), newTestBrowser(t)
	browserA.attach(sa)
	browserB.attach(sb)
	b.rec.wait(t, "a's camera on", isFrom(EventMedia, sb.ID(), FromPartner, func(e Event) bool { return e.Media.Video }))
	browserA.send(1000, 5*time.Millisecond)
	checkInOrder(t, "a->b video over the relay", browserB.received(webrtc.RTPCodecTypeVideo, 30), 1000)
	checkInOrder(t, "a->b audio over the relay", browserB.received(webrtc.RTPCodecTypeAudio, 30), 1000)
}

// TestSessionOverPeerTURNS: two nodes forced to relay-only ICE, given
// nothing but the helper's turns: URL and its certificate's fingerprint
// from /tandem/turn/1, connect through the relay over TLS: pion's own TLS
// would refuse the self-signed certificate. The data channel carries chat
// both ways.
func TestSessionOverPeerTURNS(t *testing.T) {
	helper, srv := turnHelperWith(t, peerturn.ServerConfig{TLS: true})
	clk := newClock()
	a, b := relayPairTLS(t, clk, helper, true)
	sa, sb := meet(t, a, b, "turns")
	for _, x := range []struct {
		name string
		s    *Session
	}{{"a", sa}, {"b", sb}} {
		c := x.s.State().Connect
		if c.State != ConnectConnected || c.Path == nil || c.Path.Kind != PathRelay || !strings.HasPrefix(c.Path.Local, "relay udp 127.0.0.1:") ||
			c.Path.Relay != "Tandem peer "+helper.ID().String() {
			t.Fatalf("%s's connect report: %+v path %+v, want connected via the helper's relay", x.name, c, c.Path)
		}
		if !slices.ContainsFunc(c.ICEServers, func(u string) bool { return strings.HasPrefix(u, "turns:127.0.0.1:") }) {
			t.Errorf("%s's ICE servers %q do not name the turns: URL", x.name, c.ICEServers)
		}
		t.Logf("%s: %s (local %s, remote %s)", x.name, c.Path.Text, c.Path.Local, c.Path.Remote)
	}
	for _, p := range []peer.ID{a.h.ID(), b.h.ID()} {
		if srv.Allocations(p) == 0 {
			t.Errorf("%s holds no allocation on the helper's relay", p)
		}
	}
	if err := sa.Chat("through the relay, over TLS"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "a's chat at b", isFrom(EventChat, sb.ID(), FromPartner, func(e Event) bool { return e.Text == "through the relay, over TLS" }))
	if err := sb.Chat("and back"); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "b's chat at a", isFrom(EventChat, sa.ID(), FromPartner, func(e Event) bool { return e.Text == "and back" }))
}

// TestCouldNotConnectSaysNoRelay: a relay-only node with no helper to ask
// and a partner whose WebRTC never answers says plainly that no relay
// address could be gathered.
func TestCouldNotConnectSaysNoRelay(t *testing.T) {
	clk := newClock()
	a := newNodeWith(t, "a", clk, func(c *Config) {
		c.RelayOnly = true
		c.PeerICE = func(context.Context) []PeerICEServer { return nil }
	})
	mute := mutePartner(t, a)
	b := Booking{ID: "a-norelay", PartnerBooking: "m-norelay", Partner: mute.ID(), Name: "Ada",
		Start: clk.Now(), DurationMin: 25, Kind: KindNow}
	s := open(t, a, b)
	waitFor(t, "a WebRTC attempt", func() bool {
		c := s.State().Connect
		return c.State == ConnectConnecting && !c.Since.IsZero() && c.Attempts >= 1
	})
	clk.Set(s.State().Connect.Since.Add(CouldNotConnectAfter))
	e := a.rec.wait(t, "could-not-connect", is(EventCouldNotConnect, b.ID))
	t.Logf("message: %s", e.Text)
	if !strings.Contains(e.Text, "No relay (TURN) address was gathered here: no Tandem peer offering a relay was found") {
		t.Errorf("message %q does not say that no relay was found", e.Text)
	}
}

// flood sends video frames of size bytes every interval (far more than
// a relay share) and small audio packets every 20 ms, until the browser
// closes; like a camera that ignores the cap it is told.
func (tb *testBrowser) flood(size int, interval time.Duration) {
	tb.wg.Add(1)
	go func() {
		defer tb.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		var seq uint16
		last := time.Now()
		for {
			select {
			case <-tb.stop:
				return
			case <-t.C:
			}
			seq++
			payload := make([]byte, size)
			payload[0] = 0x10
			binary.BigEndian.PutUint16(payload[1:], seq)
			tb.video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: uint32(seq) * 90}, Payload: payload})
			if time.Since(last) >= 20*time.Millisecond {
				last = time.Now()
				opus := []byte{0xfc, 0, 0, 0xff}
				binary.BigEndian.PutUint16(opus[1:], seq)
				tb.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: opus})
			}
		}
	}()
}

// TestMediaAdaptsToSlowRelay: through a peer relay that allows 400 kbit/s
// per peer, a camera sending several Mbit/s is capped: the node tells it a
// lower bitrate (REMB) as the partner reports loss, drops the video beyond
// the cap itself, and the partner keeps getting audio and chat.
func TestMediaAdaptsToSlowRelay(t *testing.T) {
	helper, _ := turnHelperWith(t, peerturn.ServerConfig{PeerBandwidth: 400_000 / 8})
	clk := newClock()
	a, b := relayPair(t, clk, helper)
	sa, sb := meet(t, a, b, "slow")
	waitFor(t, "adaptation on the relayed path", func() bool {
		return sa.State().Connect.VideoLimitKbps == media.RelayStartBitrate/1000
	})
	browserA, browserB := newTestBrowser(t), newTestBrowser(t)
	browserA.attach(sa)
	browserB.attach(sb)
	browserA.flood(1000, 2*time.Millisecond) // 4 Mbit/s of video
	waitFor(t, "a lower cap told to A's camera", func() bool {
		r := browserA.remb.Load()
		return r > 0 && r < media.RelayStartBitrate
	})
	c := sa.State().Connect
	t.Logf("A's video cap: %d kbit/s (audio only: %v); REMB to the camera: %d bit/s", c.VideoLimitKbps, c.AudioOnly, browserA.remb.Load())
	if c.VideoLimitKbps >= media.RelayStartBitrate/1000 && !c.AudioOnly {
		t.Errorf("cap still %d kbit/s", c.VideoLimitKbps)
	}
	// Audio and the data channel still get through.
	before := len(browserB.received(webrtc.RTPCodecTypeAudio, 1))
	browserB.received(webrtc.RTPCodecTypeAudio, before+20)
	if err := sa.Chat("still talking"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "chat across the capped relay", isFrom(EventChat, sb.ID(), FromPartner, func(e Event) bool { return e.Text == "still talking" }))
}
