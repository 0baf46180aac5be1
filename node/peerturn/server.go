// Package peerturn lets Tandem nodes carry each other through NAT with no
// server of ours: a publicly reachable node runs a STUN server and a TURN
// relay (pion/turn) beside its libp2p relay, and hands short-lived TURN
// credentials to the peers that ask over the /tandem/turn/1 stream. The
// credentials have the TURN REST shape (username = EXPIRY:PEER_ID,
// password = base64(HMAC-SHA1(secret, username))), so the relay checks them
// without keeping any state, and the secret is random per run: there is no
// shared static password. Relaying is bounded per peer (allocations and
// bandwidth) and in total. Besides UDP and TCP the relay can listen for
// TURN over TLS, for networks that let only TCP out, with a self-signed
// certificate whose SHA-256 the grant carries so the asking node can pin
// it.
package peerturn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"golang.org/x/time/rate"
)

// Realm is the TURN realm of every Tandem helper.
const Realm = "tandem"

// Defaults of ServerConfig.
const (
	DefaultMaxAllocationsPerPeer = 4
	DefaultMaxAllocations        = 64
	DefaultPeerBandwidth         = 2_000_000 / 8  // bytes/s: 2 Mbit/s, a good video call
	DefaultTotalBandwidth        = 10_000_000 / 8 // bytes/s: 10 Mbit/s
	DefaultCredentialTTL         = 2 * time.Hour  // longer than any session
)

// ErrInvalid marks a bad configuration or bad input.
var ErrInvalid = errors.New("peerturn: invalid")

// ServerConfig says where a helper listens and how much it gives.
type ServerConfig struct {
	// ListenIP is the address the STUN/TURN sockets bind (0.0.0.0 for
	// all); RelayIP the address put in relay candidates: this node's
	// public address (or 127.0.0.1 in tests).
	ListenIP net.IP
	RelayIP  net.IP
	// Port is the UDP and TCP port of the STUN/TURN server; 0 picks a
	// free one (the same number for both when it can).
	Port int
	// TLS also serves TURN over TLS, on TLSPort (0 picks a free one),
	// with a self-signed certificate made at start.
	TLS     bool
	TLSPort int
	// MaxAllocationsPerPeer and MaxAllocations bound TURN allocations per
	// peer ID and in total.
	MaxAllocationsPerPeer int
	MaxAllocations        int
	// PeerBandwidth and TotalBandwidth bound relayed traffic, in bytes per
	// second, both directions together; packets beyond are dropped.
	PeerBandwidth  int
	TotalBandwidth int
	// CredentialTTL is how long handed-out credentials stay valid.
	CredentialTTL time.Duration
	// Now is the clock credentials expire by (default time.Now).
	Now func() time.Time
	Log *slog.Logger

	handshakeTimeout time.Duration // of TLS (tests shorten it)
}

func (c *ServerConfig) defaults() {
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt(&c.MaxAllocationsPerPeer, DefaultMaxAllocationsPerPeer)
	setInt(&c.MaxAllocations, DefaultMaxAllocations)
	setInt(&c.PeerBandwidth, DefaultPeerBandwidth)
	setInt(&c.TotalBandwidth, DefaultTotalBandwidth)
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.handshakeTimeout <= 0 {
		c.handshakeTimeout = handshakeTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Server is a running STUN server and TURN relay.
type Server struct {
	cfg    ServerConfig
	secret []byte
	turn   *turn.Server
	udp    net.PacketConn
	tcp    net.Listener
	tls    *tlsListener // nil without ServerConfig.TLS
	certFP [FingerprintSize]byte
	total  *rate.Limiter

	mu    sync.Mutex
	peers map[string]*peerUse // by peer ID string
	count int                 // allocations in total
}

// peerUse is one peer's share of the relay.
type peerUse struct {
	allocs int
	limit  *rate.Limiter
}

// NewServer starts a STUN/TURN server on UDP and TCP, and TURN over TLS
// if cfg.TLS.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.defaults()
	if cfg.ListenIP == nil || cfg.RelayIP == nil || cfg.RelayIP.IsUnspecified() {
		return nil, fmt.Errorf("%w: a helper needs a listen address and a relay address", ErrInvalid)
	}
	s := &Server{cfg: cfg, secret: make([]byte, 32), peers: map[string]*peerUse{},
		total: rate.NewLimiter(rate.Limit(cfg.TotalBandwidth), burst(cfg.TotalBandwidth))}
	if _, err := rand.Read(s.secret); err != nil {
		return nil, fmt.Errorf("making the credential secret: %w", err)
	}
	var err error
	if s.udp, s.tcp, err = listenBoth(cfg.ListenIP, cfg.Port); err != nil {
		return nil, err
	}
	gen := &relayGen{s: s, inner: &turn.RelayAddressGeneratorStatic{
		RelayAddress: cfg.RelayIP, Address: cfg.ListenIP.String(),
	}}
	listeners := []turn.ListenerConfig{{
		Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: s.permit,
	}}
	if cfg.TLS {
		if err := s.listenTLS(); err != nil {
			s.udp.Close()
			s.tcp.Close()
			return nil, err
		}
		listeners = append(listeners, turn.ListenerConfig{
			Listener: s.tls, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	s.turn, err = turn.NewServer(turn.ServerConfig{
		Realm:         Realm,
		AuthHandler:   s.auth,
		QuotaHandler:  s.quota,
		LoggerFactory: quietLogs{},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: s.udp, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		}},
		ListenerConfigs: listeners,
	})
	if err != nil {
		s.udp.Close()
		s.tcp.Close()
		if s.tls != nil {
			s.tls.Close()
		}
		return nil, fmt.Errorf("starting TURN server: %w", err)
	}
	return s, nil
}

// listenTLS makes the certificate and opens the TURN-over-TLS listener.
func (s *Server) listenTLS() error {
	cert, fp, err := selfSigned(s.cfg.RelayIP, s.cfg.Now())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(s.cfg.ListenIP.String(), strconv.Itoa(s.cfg.TLSPort)))
	if err != nil {
		return fmt.Errorf("listening for TURN over TLS on TCP port %d: %w", s.cfg.TLSPort, err)
	}
	s.tls, s.certFP = newTLSListener(ln, cert, s.cfg.handshakeTimeout), fp
	return nil
}

// listenBoth opens UDP and TCP on the same port when it can.
func listenBoth(ip net.IP, port int) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 5 {
		udp, err := net.ListenPacket("udp4", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err != nil {
			return nil, nil, fmt.Errorf("listening for STUN/TURN on UDP port %d: %w", port, err)
		}
		p := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp4", net.JoinHostPort(ip.String(), strconv.Itoa(p)))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		lastErr = err
		if port != 0 {
			break // a fixed port: no other to try
		}
	}
	return nil, nil, fmt.Errorf("listening for TURN on TCP: %w", lastErr)
}

func burst(perSecond int) int { return max(perSecond/2, 16<<10) }

// Port is the UDP (and TCP) port of the server.
func (s *Server) Port() int { return s.udp.LocalAddr().(*net.UDPAddr).Port }

// TCPPort is the TCP port of the server (Port, unless it was taken).
func (s *Server) TCPPort() int { return s.tcp.Addr().(*net.TCPAddr).Port }

// URLs are the server's STUN and TURN URLs at its relay address (TLS
// apart: TLSURL).
func (s *Server) URLs() []string {
	host := s.cfg.RelayIP.String()
	udp := net.JoinHostPort(host, strconv.Itoa(s.Port()))
	tcp := net.JoinHostPort(host, strconv.Itoa(s.TCPPort()))
	return []string{"stun:" + udp, "turn:" + udp + "?transport=udp", "turn:" + tcp + "?transport=tcp"}
}

// TLSPort is the TURN-over-TLS port, 0 without TLS.
func (s *Server) TLSPort() int {
	if s.tls == nil {
		return 0
	}
	return s.tls.Addr().(*net.TCPAddr).Port
}

// TLSURL is the turns: URL of the server at its relay address, "" without
// TLS.
func (s *Server) TLSURL() string {
	if s.tls == nil {
		return ""
	}
	return "turns:" + net.JoinHostPort(s.cfg.RelayIP.String(), strconv.Itoa(s.TLSPort())) + "?transport=tcp"
}

// CertFingerprint is the SHA-256 of the TLS certificate's DER encoding,
// nil without TLS.
func (s *Server) CertFingerprint() []byte {
	if s.tls == nil {
		return nil
	}
	return s.certFP[:]
}

// Close stops the server and ends every allocation.
func (s *Server) Close() error { return s.turn.Close() }

// Allocations is how many TURN allocations p holds now.
func (s *Server) Allocations(p peer.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.peers[p.String()]; u != nil {
		return u.allocs
	}
	return 0
}

// Credentials makes TURN credentials for p, valid for CredentialTTL.
func (s *Server) Credentials(p peer.ID) (username, password string, expires time.Time) {
	expires = s.cfg.Now().Add(s.cfg.CredentialTTL).Truncate(time.Second)
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + p.String()
	return username, Password(s.secret, username), expires
}

// Password is the TURN REST password of username under secret.
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername splits a TURN REST username "EXPIRY:PEER_ID".
func ParseUsername(u string) (expires time.Time, p peer.ID, err error) {
	exp, id, ok := strings.Cut(u, ":")
	if !ok || len(u) > 200 {
		return time.Time{}, "", fmt.Errorf("%w: username %q is not EXPIRY:PEER_ID", ErrInvalid, u)
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: username %q: bad expiry", ErrInvalid, u)
	}
	if p, err = peer.Decode(id); err != nil {
		return time.Time{}, "", fmt.Errorf("%w: username %q: bad peer ID: %w", ErrInvalid, u, err)
	}
	return time.Unix(sec, 0), p, nil
}

// auth checks a TURN request's username: well formed, not expired, not
// valid for longer than this server gives. The key it returns is derived
// from the HMAC password, so a forged username (or a password made with
// another secret) fails pion's MESSAGE-INTEGRITY check.
func (s *Server) auth(ra *turn.RequestAttributes) (string, []byte, bool) {
	exp, p, err := ParseUsername(ra.Username)
	now := s.cfg.Now()
	if err != nil || !now.Before(exp) || exp.After(now.Add(s.cfg.CredentialTTL+time.Minute)) {
		s.cfg.Log.Debug("refusing TURN credentials", "username", ra.Username, "from", ra.SrcAddr, "err", err)
		return "", nil, false
	}
	return p.String(), turn.GenerateAuthKey(ra.Username, ra.Realm, Password(s.secret, ra.Username)), true
}

// quota refuses a new allocation beyond the per-peer and total limits
// (TURN error 486).
func (s *Server) quota(userID, _ string, _ net.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roomLocked(userID)
}

func (s *Server) roomLocked(userID string) bool {
	u := s.peers[userID]
	return s.count < s.cfg.MaxAllocations && (u == nil || u.allocs < s.cfg.MaxAllocationsPerPeer)
}

// permit says where a relay may send: never to loopback, link-local,
// unspecified or multicast addresses, and, when the relay's own address is
// public, never to private ones (RFC 1918, RFC 4193, the shared 100.64/10):
// a helper must not become a way into its own machine or its LAN (coturn's
// denied-peer-ip advice). A partner behind NAT is reached at its public
// (server-reflexive or relay) address anyway. A relay on loopback (tests)
// or on a LAN (turn.offer = "on" there) may send within it.
func (s *Server) permit(_ net.Addr, ip net.IP) bool {
	relay := s.cfg.RelayIP
	switch {
	case relay.IsLoopback():
		return true
	case ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return false
	case isPrivate(relay):
		return true
	}
	return !isPrivate(ip)
}

var sharedSpace = net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

func isPrivate(ip net.IP) bool { return ip.IsPrivate() || sharedSpace.Contains(ip) }

// take counts a new allocation of userID; release gives it back.
func (s *Server) take(userID string) (*rate.Limiter, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.roomLocked(userID) {
		return nil, false
	}
	u := s.peers[userID]
	if u == nil {
		u = &peerUse{limit: rate.NewLimiter(rate.Limit(s.cfg.PeerBandwidth), burst(s.cfg.PeerBandwidth))}
		s.peers[userID] = u
	}
	u.allocs++
	s.count++
	return u.limit, true
}

func (s *Server) release(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.peers[userID]; u != nil {
		u.allocs--
		s.count--
		if u.allocs <= 0 {
			delete(s.peers, userID)
		}
	}
}

// relayGen allocates relay sockets, counted per peer and rate limited.
type relayGen struct {
	s     *Server
	inner *turn.RelayAddressGeneratorStatic
}

func (g *relayGen) Validate() error { return g.inner.Validate() }

func (g *relayGen) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	peerLimit, ok := g.s.take(c.UserID)
	if !ok {
		return nil, nil, fmt.Errorf("%w: allocation quota of %s reached", ErrInvalid, c.UserID)
	}
	conn, addr, err := g.inner.AllocatePacketConn(c)
	if err != nil {
		g.s.release(c.UserID)
		return nil, nil, err
	}
	return &limitedConn{PacketConn: conn, s: g.s, user: c.UserID, peer: peerLimit}, addr, nil
}

// TCP relaying (RFC 6062) is not offered: WebRTC relays over UDP.
func (g *relayGen) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, fmt.Errorf("%w: TCP relay allocations are not offered", ErrInvalid)
}

func (g *relayGen) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, fmt.Errorf("%w: TCP relay allocations are not offered", ErrInvalid)
}

// limitedConn is a relay socket that drops packets beyond the peer's and
// the server's bandwidth (a policer: WebRTC's congestion control sees the
// loss and slows down) and gives its allocation back when closed.
type limitedConn struct {
	net.PacketConn
	s      *Server
	user   string
	peer   *rate.Limiter
	closed sync.Once
}

func (c *limitedConn) allow(n int) bool {
	now := time.Now()
	return c.peer.AllowN(now, n) && c.s.total.AllowN(now, n)
}

func (c *limitedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || c.allow(n) {
			return n, addr, err
		}
	}
}

func (c *limitedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !c.allow(len(b)) {
		return len(b), nil // dropped, as a full link would
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *limitedConn) Close() error {
	c.closed.Do(func() { c.s.release(c.user) })
	return c.PacketConn.Close()
}

// quietLogs keeps pion/turn's own logging off: it logs every refused
// request at error level, and a helper refuses strangers all day.
type quietLogs struct{}

func (quietLogs) NewLogger(string) logging.LeveledLogger {
	return logging.NewDefaultLeveledLoggerForScope("turn", logging.LogLevelDisabled, discard{})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
