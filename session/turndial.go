package session

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v4"
)

// TURN over TLS with a pinned certificate. pion/ice v4.4.8 (under
// pion/webrtc v4.2.26) checks a turns: server's certificate against the
// system's CAs for the URL's host, with no hook but its InsecureSkipVerify
// (which pion/webrtc does not even expose), so a peer helper's self-signed
// certificate would be refused. It does take a proxy dialer for every TURN
// server reached over TCP and uses the connection that dialer returns as
// is, without TLS of its own: turnDialer is that dialer, and does the TLS
// itself, accepting at a helper's address only the certificate whose
// SHA-256 the helper's grant named. docs/reach.md has the reasoning.

// turnDialTimeout bounds the TCP connect and the TLS handshake together:
// pion cannot cancel the dial, and closing a PeerConnection waits for its
// gathering, so a TURN server whose port is blackholed delays a close by
// up to this much.
const turnDialTimeout = 5 * time.Second

// pinLifetime is how long a pinned fingerprint is kept after it was last
// given: longer than any TURN credential it came with.
const pinLifetime = 25 * time.Hour

// turnDialer is media.Options.TURNDialer for the node-to-node API. Its
// registry is shared by every PeerConnection of the Manager: an address
// is a helper's turns: address with the fingerprints its grants named, a
// configured turns: server (checked against the system's CAs, as pion
// does itself without a dialer), or else a plain TCP TURN server.
type turnDialer struct {
	mu   sync.Mutex
	pins map[string]map[[sha256.Size]byte]time.Time // "IP:PORT" -> fingerprint -> when last given
	ca   map[string]bool                            // "HOST:PORT" of configured turns: servers
	now  func() time.Time                           // the real clock: pins outlive credentials, not sessions
}

func newTURNDialer() *turnDialer {
	return &turnDialer{pins: map[string]map[[sha256.Size]byte]time.Time{}, ca: map[string]bool{}, now: time.Now}
}

// turnsAddr is the "HOST:PORT" of a turns: URL over TCP, as pion/ice
// passes it to the dialer.
func turnsAddr(u string) (string, bool) {
	uri, err := stun.ParseURI(u)
	if err != nil || uri.Scheme != stun.SchemeTypeTURNS || uri.Proto != stun.ProtoTypeTCP {
		return "", false
	}
	return net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)), true
}

// trustCA notes the configured turns: servers among servers.
func (d *turnDialer) trustCA(urls []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range urls {
		if a, ok := turnsAddr(u); ok {
			d.ca[a] = true
		}
	}
}

// admit readies a helper's server for a PeerConnection: its turns: URLs
// are pinned to its certificate fingerprint, or left out when it gave
// none (pion would then check the self-signed certificate against the
// system's CAs and fail). ok is false when no URL is left.
func (d *turnDialer) admit(h PeerICEServer) (PeerICEServer, bool) {
	var fp [sha256.Size]byte
	pinned := len(h.TLSFingerprint) == sha256.Size
	copy(fp[:], h.TLSFingerprint)
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for a, fps := range d.pins {
		for f, at := range fps {
			if now.Sub(at) > pinLifetime {
				delete(fps, f)
			}
		}
		if len(fps) == 0 {
			delete(d.pins, a)
		}
	}
	out := h
	out.URLs = nil
	for _, u := range h.URLs {
		a, isTLS := turnsAddr(u)
		if !isTLS {
			if !strings.HasPrefix(strings.ToLower(u), "turns:") {
				out.URLs = append(out.URLs, u)
			}
			continue // turns: over DTLS is not pinned: left out
		}
		if !pinned {
			continue
		}
		if d.pins[a] == nil {
			d.pins[a] = map[[sha256.Size]byte]time.Time{}
		}
		d.pins[a][fp] = now
		out.URLs = append(out.URLs, u)
	}
	return out, len(out.URLs) > 0
}

// Dial opens a TCP connection to a TURN server for pion/ice, with TLS
// when addr is a turns: server: pinned for a helper, CA-checked for a
// configured one.
func (d *turnDialer) Dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	var pins [][sha256.Size]byte
	for f := range d.pins[addr] {
		pins = append(pins, f)
	}
	ca := d.ca[addr]
	d.mu.Unlock()

	deadline := time.Now().Add(turnDialTimeout)
	c, err := (&net.Dialer{Deadline: deadline}).Dial(network, addr)
	if err != nil {
		return nil, err
	}
	var cfg *tls.Config
	switch {
	case len(pins) > 0:
		cfg = &tls.Config{
			// Not skipped: replaced by the pin. The helper's grant came
			// over libp2p from the helper's own peer ID.
			InsecureSkipVerify: true, //nolint:gosec
			VerifyConnection:   func(cs tls.ConnectionState) error { return checkPin(cs, pins) },
			MinVersion:         tls.VersionTLS13,
		}
	case ca:
		host, _, _ := net.SplitHostPort(addr)
		cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	default:
		return c, nil // turn:...?transport=tcp: no TLS
	}
	tc := tls.Client(c, cfg)
	c.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS to TURN server %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return tc, nil
}

// errNotPinned: the server's certificate is not one a grant named.
var errNotPinned = errors.New("certificate is not the one the helper named")

func checkPin(cs tls.ConnectionState, pins [][sha256.Size]byte) error {
	if len(cs.PeerCertificates) == 0 {
		return errNotPinned
	}
	got := sha256.Sum256(cs.PeerCertificates[0].Raw)
	for _, p := range pins {
		if got == p {
			return nil
		}
	}
	return fmt.Errorf("%w (SHA-256 %x)", errNotPinned, got[:8])
}
