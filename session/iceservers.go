package session

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// Resolving STUN/TURN host names ourselves: pion resolves them while
// gathering, and a PeerConnection's Close then waits for that lookup. On a
// machine whose DNS does not answer (offline, a sandbox) every closed
// connection attempt stalled for the resolver's whole timeout (10 s and
// more), and two nodes on one machine took that long or longer to meet.
// PeerConnections get only servers whose names are resolved already, as
// IP addresses; a name that does not resolve is tried again later.
const (
	resolveTimeout = 5 * time.Second
	resolveRetry   = 30 * time.Second
	resolveRefresh = 10 * time.Minute
)

// iceResolver keeps the ICE servers with their host names resolved.
type iceResolver struct {
	servers []webrtc.ICEServer
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)

	mu       sync.Mutex
	resolved map[string]string // host -> IP (as it goes in a URL)
}

func newICEResolver(servers []webrtc.ICEServer, lookup func(context.Context, string) ([]netip.Addr, error)) *iceResolver {
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	return &iceResolver{servers: servers, lookup: lookup, resolved: map[string]string{}}
}

// splitICEURL splits "stun:HOST:PORT?x" into "stun:", HOST and ":PORT?x".
// Only stun: and turn: are rewritten: turns: needs the name for TLS.
func splitICEURL(u string) (scheme, host, rest string, ok bool) {
	for _, s := range []string{"stun:", "turn:"} {
		if strings.HasPrefix(strings.ToLower(u), s) {
			scheme, rest = u[:len(s)], u[len(s):]
			host = rest
			if i := strings.IndexAny(rest, ":?"); i >= 0 {
				host, rest = rest[:i], rest[i:]
			} else {
				rest = ""
			}
			return scheme, host, rest, host != "" && !strings.HasPrefix(host, "[")
		}
	}
	return "", "", "", false
}

// hosts lists the names that need a lookup.
func (r *iceResolver) hosts() []string {
	var out []string
	for _, s := range r.servers {
		for _, u := range s.URLs {
			if _, host, _, ok := splitICEURL(u); ok {
				if _, err := netip.ParseAddr(host); err != nil {
					out = append(out, host)
				}
			}
		}
	}
	return out
}

// run resolves every name, again and again, until ctx ends.
func (r *iceResolver) run(ctx context.Context) {
	hosts := r.hosts()
	if len(hosts) == 0 {
		return
	}
	for {
		all := true
		for _, h := range hosts {
			lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			ips, err := r.lookup(lctx, h)
			cancel()
			var ip netip.Addr
			for _, a := range ips {
				if a.Unmap().Is4() || !ip.IsValid() {
					ip = a.Unmap() // IPv4 first: it works behind more NATs
				}
				if ip.Is4() {
					break
				}
			}
			r.mu.Lock()
			if err == nil && ip.IsValid() {
				s := ip.String()
				if ip.Is6() {
					s = "[" + s + "]"
				}
				r.resolved[h] = s
			} else if _, had := r.resolved[h]; !had {
				all = false
			}
			r.mu.Unlock()
		}
		wait := resolveRefresh
		if !all {
			wait = resolveRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// current returns the servers to use now: names replaced by their
// addresses, URLs whose names are not resolved yet left out.
func (r *iceResolver) current() []webrtc.ICEServer {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []webrtc.ICEServer
	for _, s := range r.servers {
		var urls []string
		for _, u := range s.URLs {
			scheme, host, rest, ok := splitICEURL(u)
			if !ok {
				urls = append(urls, u)
				continue
			}
			if _, err := netip.ParseAddr(host); err == nil {
				urls = append(urls, u)
			} else if ip, ok := r.resolved[host]; ok {
				urls = append(urls, scheme+ip+rest)
			}
		}
		if len(urls) > 0 {
			c := s
			c.URLs = urls
			out = append(out, c)
		}
	}
	return out
}

// resolvedURL is u with its host name replaced by its address, or "".
func (r *iceResolver) resolvedURL(u string) string {
	scheme, host, rest, ok := splitICEURL(u)
	if !ok {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ip, ok := r.resolved[host]; ok {
		return scheme + ip + rest
	}
	return ""
}
