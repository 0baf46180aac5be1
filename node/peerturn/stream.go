package peerturn

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/node/peerturn/pb"
)

// Protocol is the libp2p stream protocol a helper serves.
const Protocol = "/tandem/turn/1"

// Wire limits.
const (
	wireVersion    = 1
	MaxMessage     = 4 << 10
	maxURLs        = 8
	maxField       = 256
	streamTimeout  = 10 * time.Second
	maxCredentials = 24 * time.Hour // a grant valid for longer is refused
)

// Per-peer request rate: a pair asks once per session attempt and caches
// the grant, so a burst of 3 and one every 10 s is plenty.
const (
	requestEvery = 10 * time.Second
	requestBurst = 3
	maxLimiters  = 4096
)

// Grant is a checked reply: TURN credentials and a helper's URLs.
type Grant struct {
	Helper     peer.ID
	URLs       []string
	Username   string
	Credential string
	Expires    time.Time
	// TLSURL is the helper's turns: URL ("" if it offers no TLS, or is
	// older than TLS); TLSFingerprint the SHA-256 of the only certificate
	// to accept there (FingerprintSize bytes, with TLSURL only).
	TLSURL         string
	TLSFingerprint []byte
}

// Handler serves Protocol for a Server.
type Handler struct {
	srv *Server
	mu  sync.Mutex
	lim map[peer.ID]*rate.Limiter
}

// NewHandler serves credentials of srv; register HandleStream on the host.
func NewHandler(srv *Server) *Handler {
	return &Handler{srv: srv, lim: map[peer.ID]*rate.Limiter{}}
}

func (h *Handler) allow(p peer.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lim[p]
	if l == nil {
		if len(h.lim) >= maxLimiters {
			// Forget full buckets: they are peers that have not asked lately.
			for id, old := range h.lim {
				if old.Tokens() >= requestBurst {
					delete(h.lim, id)
				}
			}
		}
		if len(h.lim) >= maxLimiters {
			return false
		}
		l = rate.NewLimiter(rate.Every(requestEvery), requestBurst)
		h.lim[p] = l
	}
	return l.Allow()
}

// HandleStream answers one Request with a Grant for the remote peer. The
// credentials name the peer that asked, so the per-peer allocation limit
// holds however often it asks.
func (h *Handler) HandleStream(st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
	st.SetDeadline(time.Now().Add(streamTimeout))
	req := &pb.Request{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxMessage}).UnmarshalFrom(bufio.NewReader(io.LimitReader(st, MaxMessage+8)), req); err != nil {
		st.Reset()
		return
	}
	g := &pb.Grant{Version: wireVersion}
	switch {
	case req.GetVersion() != wireVersion:
		g.Error = fmt.Sprintf("unsupported version %d", req.GetVersion())
	case !h.allow(remote):
		g.Error = "rate limited: ask again later"
	default:
		user, pass, exp := h.srv.Credentials(remote)
		g.Urls, g.Username, g.Credential, g.Expires = h.srv.URLs(), user, pass, exp.Unix()
		g.TlsUrl, g.TlsSha256 = h.srv.TLSURL(), h.srv.CertFingerprint()
	}
	if _, err := protodelim.MarshalTo(st, g); err != nil {
		st.Reset()
	}
}

// Request asks helper for TURN credentials over Protocol. The connection
// may be a limited (relayed) one: the exchange is a few hundred bytes.
func Request(ctx context.Context, h host.Host, helper peer.ID, now time.Time) (Grant, error) {
	ctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "tandem turn credentials"), streamTimeout)
	defer cancel()
	st, err := h.NewStream(ctx, helper, Protocol)
	if err != nil {
		return Grant{}, fmt.Errorf("opening turn stream: %w", err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	if _, err := protodelim.MarshalTo(st, &pb.Request{Version: wireVersion}); err != nil {
		st.Reset()
		return Grant{}, fmt.Errorf("sending turn request: %w", err)
	}
	st.CloseWrite()
	g, err := ReadGrant(bufio.NewReader(io.LimitReader(st, MaxMessage+8)), h.ID(), now)
	if err != nil {
		st.Reset()
		return Grant{}, err
	}
	g.Helper = helper
	return g, nil
}

// ReadGrant reads and checks one Grant frame for self: TURN credentials
// made out to self, not expired and not valid for more than a day, at
// most 8 stun:/turn: URLs whose hosts are IP addresses, and optionally a
// turns: URL (TCP, IP address) with a SHA-256 certificate fingerprint:
// both or neither.
func ReadGrant(r *bufio.Reader, self peer.ID, now time.Time) (Grant, error) {
	m := &pb.Grant{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxMessage}).UnmarshalFrom(r, m); err != nil {
		return Grant{}, fmt.Errorf("reading turn grant: %w", err)
	}
	if m.GetVersion() != wireVersion {
		return Grant{}, fmt.Errorf("%w: turn grant version %d", ErrInvalid, m.GetVersion())
	}
	if m.GetError() != "" {
		return Grant{}, fmt.Errorf("helper refused: %s", clip(m.GetError()))
	}
	exp, p, err := ParseUsername(m.GetUsername())
	switch {
	case err != nil:
		return Grant{}, err
	case p != self:
		return Grant{}, fmt.Errorf("%w: credentials made out to %s, not us", ErrInvalid, p)
	case exp.Unix() != m.GetExpires() || !now.Before(exp) || exp.After(now.Add(maxCredentials)):
		return Grant{}, fmt.Errorf("%w: credentials expire at %v (now %v)", ErrInvalid, exp, now)
	case m.GetCredential() == "" || len(m.GetCredential()) > maxField:
		return Grant{}, fmt.Errorf("%w: bad credential", ErrInvalid)
	case len(m.GetUrls()) == 0 || len(m.GetUrls()) > maxURLs:
		return Grant{}, fmt.Errorf("%w: %d URLs (want 1 to %d)", ErrInvalid, len(m.GetUrls()), maxURLs)
	}
	for _, u := range m.GetUrls() {
		if _, err := URLAddr(u); err != nil {
			return Grant{}, err
		}
	}
	tlsURL, fp := m.GetTlsUrl(), m.GetTlsSha256()
	switch {
	case tlsURL == "" && len(fp) == 0:
	case tlsURL == "" || len(fp) != FingerprintSize:
		return Grant{}, fmt.Errorf("%w: a TLS URL comes with a %d-byte certificate fingerprint (got %q and %d bytes)",
			ErrInvalid, FingerprintSize, clip(tlsURL), len(fp))
	default:
		if _, err := TLSURLAddr(tlsURL); err != nil {
			return Grant{}, err
		}
	}
	return Grant{URLs: m.GetUrls(), Username: m.GetUsername(), Credential: m.GetCredential(), Expires: exp,
		TLSURL: tlsURL, TLSFingerprint: fp}, nil
}

// URLAddr checks a helper's stun: or turn: URL and returns its IP address.
func URLAddr(u string) (netip.Addr, error) {
	uri, err := parseURL(u)
	if err != nil {
		return netip.Addr{}, err
	}
	if uri.Scheme != stun.SchemeTypeSTUN && uri.Scheme != stun.SchemeTypeTURN {
		return netip.Addr{}, fmt.Errorf("%w: %q: want stun: or turn:", ErrInvalid, clip(u))
	}
	return urlIP(u, uri)
}

// TLSURLAddr checks a helper's turns: URL (TURN over TLS over TCP; not
// DTLS) and returns its IP address.
func TLSURLAddr(u string) (netip.Addr, error) {
	uri, err := parseURL(u)
	if err != nil {
		return netip.Addr{}, err
	}
	if uri.Scheme != stun.SchemeTypeTURNS || uri.Proto != stun.ProtoTypeTCP {
		return netip.Addr{}, fmt.Errorf("%w: %q: want turns: over TCP", ErrInvalid, clip(u))
	}
	return urlIP(u, uri)
}

func parseURL(u string) (*stun.URI, error) {
	if len(u) > maxField {
		return nil, fmt.Errorf("%w: URL too long", ErrInvalid)
	}
	uri, err := stun.ParseURI(u)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalid, clip(u), err)
	}
	return uri, nil
}

func urlIP(u string, uri *stun.URI) (netip.Addr, error) {
	ip, err := netip.ParseAddr(strings.Trim(uri.Host, "[]"))
	if err != nil || uri.Port <= 0 {
		return netip.Addr{}, fmt.Errorf("%w: %q: want an IP address and a port", ErrInvalid, clip(u))
	}
	return ip.Unmap(), nil
}

// KnownAddrs keeps only the URLs at an address libp2p knows helper by (its
// peerstore addresses and the connections to it): a helper cannot send us
// to relay through somebody else's machine.
func (g Grant) KnownAddrs(h host.Host) Grant {
	known := map[netip.Addr]bool{}
	add := func(a net.Addr) {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			known[ap.Addr().Unmap()] = true
		}
	}
	for _, a := range h.Peerstore().Addrs(g.Helper) {
		if na, err := manet.ToNetAddr(a); err == nil {
			add(na)
		}
	}
	for _, c := range h.Network().ConnsToPeer(g.Helper) {
		if na, err := manet.ToNetAddr(c.RemoteMultiaddr()); err == nil {
			add(na)
		}
	}
	out := g
	out.URLs = nil
	for _, u := range g.URLs {
		if ip, err := URLAddr(u); err == nil && known[ip] {
			out.URLs = append(out.URLs, u)
		}
	}
	if ip, err := TLSURLAddr(g.TLSURL); err != nil || !known[ip] {
		out.TLSURL, out.TLSFingerprint = "", nil
	}
	return out
}

func clip(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
