package session

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/tandem-cowork/tandem/session/pb"
)

// mutePartner is a partner node that answers the session over libp2p
// (Join for Join) and then never answers the WebRTC offer: the media path
// cannot be made.
func mutePartner(t *testing.T, above *node) host.Host {
	t.Helper()
	for {
		h := newHost(t)
		if h.ID() <= above.h.ID() {
			h.Close()
			continue // the test wants `above` to offer
		}
		h.SetStreamHandler(SignalProtocol, func(st network.Stream) {
			r := bufio.NewReader(st)
			sig, err := readSignal(r)
			if err != nil || sig.GetJoin() == nil {
				st.Reset()
				return
			}
			j := sig.GetJoin()
			writeSignal(st, &pb.Signal{Body: &pb.Signal_Join{Join: &pb.Join{FromBooking: j.GetToBooking(), ToBooking: j.GetFromBooking()}}})
			io.Copy(io.Discard, st) // the offer and candidates, unanswered
		})
		above.h.Peerstore().AddAddrs(h.ID(), h.Addrs(), peerstore.PermanentAddrTTL)
		return h
	}
}

// A partner whose node answers but whose WebRTC never does: after 15 s of
// the node's clock the session says it could not connect, with what it
// tried (its candidates, no ICE servers, the partner reachable over
// libp2p), and the snapshot shows the same. It keeps trying.
func TestCouldNotConnectReportsWhatWasTried(t *testing.T) {
	clk := newClock()
	a := newNode(t, "a", clk)
	mute := mutePartner(t, a)
	b := Booking{ID: "a-mute", PartnerBooking: "m-mute", Partner: mute.ID(), Name: "Ada",
		Start: clk.Now(), DurationMin: 25, Kind: KindNow}
	s := open(t, a, b)

	waitFor(t, "a WebRTC attempt with candidates", func() bool {
		c := s.State().Connect
		return c.State == ConnectConnecting && !c.Since.IsZero() && c.Attempts >= 1 && len(c.LocalCandidates) > 0
	})
	if _, ok := a.rec.find(is(EventCouldNotConnect, b.ID)); ok {
		t.Fatal("could-not-connect before 15 s of the node's clock")
	}
	clk.Set(s.State().Connect.Since.Add(CouldNotConnectAfter))
	e := a.rec.wait(t, "could-not-connect", is(EventCouldNotConnect, b.ID))
	t.Logf("message: %s", e.Text)
	c := s.State().Connect
	if c.State != ConnectCouldNotConnect || !c.PartnerReachable || c.Attempts < 1 || len(c.ICEServers) != 0 {
		t.Errorf("connect report = %+v", c)
	}
	if !strings.HasPrefix(c.LocalCandidates[0], "host udp 127.0.0.1") || len(c.RemoteCandidates) != 0 {
		t.Errorf("candidates: local %q remote %q", c.LocalCandidates, c.RemoteCandidates)
	}
	for _, want := range []string{"answered over libp2p", "host udp 127.0.0.1", "from your partner: none", "ICE servers: none", "Still trying"} {
		if !strings.Contains(e.Text, want) || c.Message != e.Text {
			t.Errorf("message %q lacks %q (snapshot: %q)", e.Text, want, c.Message)
		}
	}
	if s.State().Connected {
		t.Error("connected to a partner that never answered")
	}
}

// A partner whose node is gone: the report says it did not answer over
// libp2p and that no media connection was attempted.
func TestCouldNotConnectToAbsentNode(t *testing.T) {
	clk := newClock()
	a := newNode(t, "a", clk)
	gone := mutePartner(t, a)
	gone.Close()
	b := Booking{ID: "a-gone", PartnerBooking: "g-gone", Partner: gone.ID(), Name: "Ada",
		Start: clk.Now(), DurationMin: 25, Kind: KindNow}
	s := open(t, a, b)
	waitFor(t, "trying", func() bool { c := s.State().Connect; return c.State == ConnectConnecting && !c.Since.IsZero() })
	clk.Set(s.State().Connect.Since.Add(CouldNotConnectAfter + time.Second))
	e := a.rec.wait(t, "could-not-connect", is(EventCouldNotConnect, b.ID))
	t.Logf("message: %s", e.Text)
	c := s.State().Connect
	if c.State != ConnectCouldNotConnect || c.PartnerReachable || c.Attempts != 0 {
		t.Errorf("connect report = %+v", c)
	}
	for _, want := range []string{"not connected over libp2p", "No media connection was attempted"} {
		if !strings.Contains(e.Text, want) {
			t.Errorf("message %q lacks %q", e.Text, want)
		}
	}
}
