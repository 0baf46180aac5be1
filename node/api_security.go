package node

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// The local API is protected in three layers, outermost first:
//  1. Host allow-list: a page on evil.example that rebinds its DNS name to
//     127.0.0.1 still sends Host: evil.example, and gets 403.
//  2. CSRF: a state-changing request from a foreign Origin, or one the
//     browser marks Sec-Fetch-Site: cross-site, gets 403.
//  3. Token: every /api request carries the token as a Bearer header (CLI)
//     or as the cookie set by the login URL (web UI), else 401.

// cookieName carries the API port: browsers share cookies across ports of
// one host, and two nodes on one machine must not log each other out.
func (n *Node) cookieName() string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(n.apiURL, "http://"))
	return "tandem_token_" + port
}

func isLoopbackHostPort(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	return isLoopbackHost(h)
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// hostCheck rejects requests whose Host header is not a loopback name.
func hostCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if !isLoopbackHost(h) {
			http.Error(w, "forbidden: unexpected Host header", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// csrfCheck rejects state-changing requests that come from another site.
func csrfCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !safeMethod(r.Method) {
			if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
				http.Error(w, "forbidden: cross-site request", http.StatusForbidden)
				return
			}
			if o := r.Header.Get("Origin"); o != "" {
				u, err := url.Parse(o)
				if err != nil || u.Host != r.Host {
					http.Error(w, "forbidden: foreign Origin", http.StatusForbidden)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// tokenCheck requires the API token on every request it wraps.
func (n *Node) tokenCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if got == "" {
			if c, err := r.Cookie(n.cookieName()); err == nil {
				got = c.Value
			}
		}
		tok, rotated := n.tokenNow()
		if subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			writeError(w, http.StatusUnauthorized, "unauthorized: open the link printed by `tandem up` or `tandem status`, or pass the token")
			return
		}
		// What the request was let in with lasts until the token is
		// rotated: a long-lived answer (the event stream) ends then.
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), rotationKey{}, rotated)))
	})
}

// rotationKey keys, in a request's context, the channel closed when the
// token the request was let in with is rotated (tokenCheck).
type rotationKey struct{}

// tokenRotated is the channel tokenCheck put in r's context (nil, which
// never fires, for a request it did not check).
func tokenRotated(r *http.Request) <-chan struct{} {
	ch, _ := r.Context().Value(rotationKey{}).(<-chan struct{})
	return ch
}

// login trades the token in the URL for an HttpOnly cookie, then sends the
// browser to the UI without the token in its address bar or history.
func (n *Node) login(w http.ResponseWriter, r *http.Request) {
	tok := n.currentToken()
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(tok)) != 1 {
		http.Error(w, "wrong or missing token: open the link printed by `tandem status` (or run `tandem open`)", http.StatusUnauthorized)
		return
	}
	// No Expires: a session cookie lasts until the browser quits. The
	// token outlives node restarts, so the cookie does too.
	http.SetCookie(w, &http.Cookie{
		Name: n.cookieName(), Value: tok, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
