package session

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/peerturn"
)

// turnHelper is a third host that runs a peerturn STUN/TURN server on
// 127.0.0.1 and hands out credentials over /tandem/turn/1.
func turnHelper(t *testing.T) (host.Host, *peerturn.Server) {
	t.Helper()
	srv, err := peerturn.NewServer(peerturn.ServerConfig{
		ListenIP: net.IPv4(127, 0, 0, 1), RelayIP: net.IPv4(127, 0, 0, 1), Log: testLogger(),
	})
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
	return func(ctx context.Context) []PeerICEServer {
		h := self()
		h.Peerstore().AddAddrs(helper.ID(), helper.Addrs(), peerstore.PermanentAddrTTL)
		g, err := peerturn.Request(ctx, h, helper.ID(), time.Now())
		if err != nil {
			t.Logf("asking the helper: %v", err)
			return nil
		}
		g = g.KnownAddrs(h)
		return []PeerICEServer{{Helper: g.Helper, ICEServer: webrtc.ICEServer{
			URLs: g.URLs, Username: g.Username, Credential: g.Credential, CredentialType: webrtc.ICECredentialTypePassword,
		}}}
	}
}

// relayPair is two nodes whose ICE may only use relay candidates, with
// credentials for helper's TURN relay from /tandem/turn/1.
func relayPair(t *testing.T, clk *clock, helper host.Host) (a, b *node) {
	var hosts [2]host.Host
	mk := func(i int, name string) *node {
		return newNodeWith(t, name, clk, func(c *Config) {
			c.RelayOnly = true
			hosts[i] = c.Host
			c.PeerICE = askHelper(t, func() host.Host { return hosts[i] }, helper)
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
