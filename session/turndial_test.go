package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/node/peerturn"
)

// TestTURNDialerPins: the dialer pion/ice gets for TCP TURN servers does
// TLS to a helper's turns: address accepting only the certificate the
// grant named, and a TURN allocation works over what it returns; another
// fingerprint, or the system's CAs, refuse the helper's self-signed
// certificate; a turns: URL with no fingerprint is left out; a plain TCP
// TURN server gets plain TCP.
func TestTURNDialerPins(t *testing.T) {
	_, srv := turnHelperWith(t, peerturn.ServerConfig{TLS: true})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.TLSPort()))
	user, pass, _ := srv.Credentials(newHost(t).ID())
	helper := func(fp []byte, urls ...string) PeerICEServer {
		return PeerICEServer{TLSFingerprint: fp, ICEServer: webrtc.ICEServer{URLs: urls, Username: user, Credential: pass}}
	}
	udpURL := srv.URLs()[1]

	wrong := bytes.Clone(srv.CertFingerprint())
	wrong[31] ^= 1
	d := newTURNDialer()
	if h, ok := d.admit(helper(wrong, srv.TLSURL(), udpURL)); !ok || len(h.URLs) != 2 {
		t.Fatalf("admitted %v, %v", h.URLs, ok)
	}
	if c, err := d.Dial("tcp4", addr); !errors.Is(err, errNotPinned) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial with a wrong pin: %v, want %v", err, errNotPinned)
	}

	d = newTURNDialer()
	d.trustCA([]string{srv.TLSURL()})
	if c, err := d.Dial("tcp4", addr); err == nil {
		c.Close()
		t.Fatal("the system's CAs accepted the helper's self-signed certificate")
	}

	d = newTURNDialer()
	if h, ok := d.admit(helper(nil, srv.TLSURL(), udpURL)); !ok || len(h.URLs) != 1 || h.URLs[0] != udpURL {
		t.Fatalf("a turns: URL without a fingerprint: admitted %v, %v", h.URLs, ok)
	}
	if _, ok := d.admit(helper(nil, srv.TLSURL())); ok {
		t.Fatal("a server with only an unpinned turns: URL was admitted")
	}
	plain, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.TCPPort())))
	if err != nil {
		t.Fatal(err)
	}
	if _, isTLS := plain.(*tls.Conn); isTLS {
		t.Fatal("a plain TCP TURN server got TLS")
	}
	plain.Close()

	if _, ok := d.admit(helper(srv.CertFingerprint(), srv.TLSURL())); !ok {
		t.Fatal("the pinned turns: URL was not admitted")
	}
	conn, err := d.Dial("tcp4", addr)
	if err != nil {
		t.Fatalf("dial with the right pin: %v", err)
	}
	stunConn := turn.NewSTUNConn(conn)
	defer stunConn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{Username: user, Password: pass, Realm: peerturn.Realm, Conn: stunConn})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := c.AllocateWithContext(ctx)
	if err != nil {
		t.Fatalf("allocating over the pinned TLS connection: %v", err)
	}
	relay.Close()
}
