package session

import (
	"testing"

	"github.com/pion/webrtc/v4"
)

func iceUfrag(d *webrtc.SessionDescription) string {
	if d == nil {
		return ""
	}
	return sdpUfrag(d.SDP)
}

func currentLink(s *Session) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.link
}

// TestICERestartKeepsPeerConnection: an ICE restart (what a network change
// triggers) negotiates fresh ICE credentials on the same PeerConnection,
// on both sides; the session stays connected on it and the data channel
// works after.
func TestICERestartKeepsPeerConnection(t *testing.T) {
	clk := newClock()
	a, b := newPair(t, clk)
	sa, sb := meet(t, a, b, "restart")
	la, lb := currentLink(sa), currentLink(sb)
	// The partner's hello can arrive before pion reports the connection as
	// connected (its callbacks run on their own goroutines), and a restart
	// is only offered on a connected link.
	waitFor(t, "both links connected", func() bool { return la.isConnected() && lb.isConnected() })
	ufragA, ufragB := iceUfrag(la.pc.CurrentLocalDescription()), iceUfrag(lb.pc.CurrentLocalDescription())
	if ufragA == "" || ufragB == "" {
		t.Fatalf("no ICE ufrag in the descriptions (%q, %q)", ufragA, ufragB)
	}

	if err := sa.RestartICE(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new ICE credentials on both sides, connected", func() bool {
		return iceUfrag(la.pc.CurrentLocalDescription()) != ufragA && iceUfrag(lb.pc.CurrentLocalDescription()) != ufragB &&
			iceUfrag(la.pc.CurrentRemoteDescription()) == iceUfrag(lb.pc.CurrentLocalDescription()) &&
			la.pc.ConnectionState() == webrtc.PeerConnectionStateConnected &&
			lb.pc.ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	if currentLink(sa) != la || currentLink(sb) != lb {
		t.Fatal("the ICE restart replaced the connection")
	}
	if c := sa.State().Connect; c.ICERestarts != 1 || c.State != ConnectConnected {
		t.Errorf("a's connect report after the restart: %+v", c)
	}
	if err := sa.Chat("still here"); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "chat after the restart", isFrom(EventChat, sb.ID(), FromPartner, func(e Event) bool { return e.Text == "still here" }))
	if n := a.rec.count(is(EventPartnerDisconnected, sa.ID())); n != 0 {
		t.Errorf("a saw the partner disconnect %d times during the restart", n)
	}
}
