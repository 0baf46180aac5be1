package peerturn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// TURN over TLS. A helper has no CA-signed certificate (it is somebody's
// desktop), so it makes a self-signed one at start and the /tandem/turn/1
// grant, which libp2p authenticates as coming from the helper's peer ID,
// carries the certificate's SHA-256: the asking node accepts that
// certificate and no other (see session's TURN dialer and docs/reach.md).

// DefaultTLSPort is the standard TURN-over-TLS port (RFC 5766 section 18).
const DefaultTLSPort = 5349

// Limits of the TLS listener: a client that connects and stalls is
// dropped after handshakeTimeout (ServerConfig.handshakeTimeout in tests), and at most maxHandshakes handshakes run
// at once (further connections wait in the kernel's backlog).
const (
	handshakeTimeout = 10 * time.Second
	maxHandshakes    = 32
)

// FingerprintSize is the length of a certificate fingerprint (SHA-256).
const FingerprintSize = sha256.Size

// Fingerprint is the SHA-256 of a certificate's DER encoding, the pin a
// grant carries.
func Fingerprint(der []byte) [FingerprintSize]byte { return sha256.Sum256(der) }

// selfSigned makes a fresh ECDSA P-256 certificate for ip, valid from an
// hour ago for a year (clients pin it and do not look at the dates; they
// are only there to be well formed).
func selfSigned(ip net.IP, now time.Time) (tls.Certificate, [FingerprintSize]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, [FingerprintSize]byte{}, fmt.Errorf("making the TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, [FingerprintSize]byte{}, fmt.Errorf("making the certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tandem TURN helper"},
		IPAddresses:  []net.IP{ip},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, [FingerprintSize]byte{}, fmt.Errorf("making the TLS certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Fingerprint(der), nil
}

// tlsListener accepts TCP connections and hands out TLS ones whose
// handshake is done. pion/turn would do the handshake itself (with its own
// 10 s limit) but does not close a connection whose handshake failed; here
// every failed or stalled one is closed, and handshakes are bounded.
type tlsListener struct {
	inner net.Listener
	cfg   *tls.Config
	conns chan *tls.Conn
	slots chan struct{}
	done  chan struct{}
	once  sync.Once

	timeout time.Duration // of a handshake
}

func newTLSListener(inner net.Listener, cert tls.Certificate, timeout time.Duration) *tlsListener {
	l := &tlsListener{
		inner: inner, timeout: timeout,
		// Only Tandem nodes (Go, crypto/tls) use a helper: TLS 1.3 only.
		cfg:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		conns: make(chan *tls.Conn),
		slots: make(chan struct{}, maxHandshakes),
		done:  make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	defer l.Close()
	pause := 5 * time.Millisecond
	for {
		c, err := l.inner.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, say: back off as net/http does.
			select {
			case <-l.done:
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 5 * time.Millisecond
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			c.Close()
			return
		}
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.cfg)
	c.SetDeadline(time.Now().Add(l.timeout))
	err := tc.Handshake()
	<-l.slots
	if err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	}
}

// Accept returns the next connection whose TLS handshake is done.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }
