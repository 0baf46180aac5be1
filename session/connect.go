package session

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"
)

// CouldNotConnectAfter is how long, on the node's clock, a session tries
// to reach its partner before it says plainly that it could not (and
// what it tried). It goes on trying.
const CouldNotConnectAfter = 15 * time.Second

// Connect states (ConnectReport.State).
const (
	ConnectWaiting         = "waiting"           // the lobby is not open: not trying yet
	ConnectConnecting      = "connecting"        // trying, for less than CouldNotConnectAfter
	ConnectConnected       = "connected"         // the partner is connected
	ConnectCouldNotConnect = "could-not-connect" // trying for CouldNotConnectAfter without success
	ConnectOver            = "over"              // someone left or the session ended
)

// maxCandidatesShown bounds each candidate list of a ConnectReport.
const maxCandidatesShown = 16

// ConnectReport says how connecting to the partner goes and, when it has
// not worked, what was tried. Times are the node's clock.
type ConnectReport struct {
	State string `json:"state"`
	// Since: when the current try began (connecting, could-not-connect) or
	// when the partner connected.
	Since time.Time `json:"since,omitzero"`
	// Message says in plain words what went wrong and what was tried (set
	// in could-not-connect).
	Message string `json:"message,omitempty"`
	// PartnerReachable: the partner's node answered this session over
	// libp2p during the try (so the failure is the media path, WebRTC).
	// Libp2pConnected: a libp2p connection to the partner exists now.
	PartnerReachable bool `json:"partner_reachable"`
	Libp2pConnected  bool `json:"libp2p_connected"`
	// Attempts is how many WebRTC connections were tried.
	Attempts int `json:"attempts"`
	// ICEServers are the STUN/TURN servers used (none on one machine or
	// in local-only mode).
	ICEServers []string `json:"ice_servers"`
	// LocalCandidates and RemoteCandidates are the ICE candidates gathered
	// here and received from the partner, as "TYPE PROTOCOL ADDRESS"
	// ("host udp 127.0.0.1").
	LocalCandidates  []string `json:"local_candidates"`
	RemoteCandidates []string `json:"remote_candidates"`
	// ICEState is the last WebRTC connection state seen ("checking",
	// "failed", ...); LastError the last thing that went wrong.
	ICEState  string `json:"ice_state,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Path is how the session is connected (set while connected);
	// ICERestarts counts the ICE restarts this side offered on the
	// current connection (restart.go).
	Path        *ConnectPath `json:"path,omitempty"`
	ICERestarts int          `json:"ice_restarts"`
	// VideoLimitKbps is the cap on the video this node sends to the
	// partner over a relayed path (0: none; see media/adapt.go), and
	// AudioOnly says video is paused for want of capacity.
	VideoLimitKbps int  `json:"video_limit_kbps"`
	AudioOnly      bool `json:"audio_only"`
}

// connTry is what the session has tried since it last lost (or never had)
// its partner. Guarded by Session.mu.
type connTry struct {
	since     time.Time // node clock; zero until the session starts trying
	reported  bool      // could-not-connect was announced
	attempts  int
	reachable bool
	local     []string
	remote    []string
	iceState  string
	lastErr   string
}

func addCandidate(list []string, c string) []string {
	if c == "" || len(list) >= maxCandidatesShown || slices.Contains(list, c) {
		return list
	}
	return append(list, c)
}

// describeCandidate shortens an ICE candidate line to "TYPE PROTOCOL
// ADDRESS"; "" when it is not one.
func describeCandidate(line string) string {
	f := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(line, "a="), "candidate:"))
	// foundation component protocol priority address port "typ" type ...
	if len(f) < 8 || f[6] != "typ" {
		return ""
	}
	return f[7] + " " + strings.ToLower(f[2]) + " " + f[4]
}

// noteLocalCandidate, noteRemoteCandidate, noteAttempt, noteICEState and
// noteError record what a link tries.
func (s *Session) noteLocalCandidate(c webrtc.ICECandidateInit) {
	s.mu.Lock()
	s.try.local = addCandidate(s.try.local, describeCandidate(c.Candidate))
	s.mu.Unlock()
}

func (s *Session) noteRemoteCandidate(line string) {
	s.mu.Lock()
	s.try.remote = addCandidate(s.try.remote, describeCandidate(line))
	s.mu.Unlock()
}

// noteAttempt: a signalling stream with the partner is up (it answered
// over libp2p) and a new PeerConnection starts on it.
func (s *Session) noteAttemptLocked() {
	s.try.attempts++
	s.try.reachable = true
}

func (s *Session) noteICEState(st webrtc.PeerConnectionState) {
	s.mu.Lock()
	s.try.iceState = st.String()
	if st == webrtc.PeerConnectionStateFailed {
		s.try.lastErr = "no ICE candidate pair worked (WebRTC failed)"
	}
	s.mu.Unlock()
}

// maxErrorShown bounds ConnectReport.LastError (a libp2p dial error
// lists every address tried).
const maxErrorShown = 300

func (s *Session) noteError(err error) {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if len(msg) > maxErrorShown {
		msg = strings.ToValidUTF8(msg[:maxErrorShown], "") + "..."
	}
	s.mu.Lock()
	s.try.lastErr = msg
	s.mu.Unlock()
}

// checkConnectLocked follows the try at each tick of the schedule: it
// starts the clock when the session begins to want its partner, forgets
// the try once the partner is connected, and announces could-not-connect
// once CouldNotConnectAfter has passed on the node's clock.
func (s *Session) checkConnectLocked(now time.Time) {
	s.checkCapacityLocked()
	switch {
	case s.connected:
		if !s.try.since.IsZero() || s.try.attempts > 0 {
			s.try = connTry{}
		}
	case !s.wantsPartnerLocked():
		s.try.since = time.Time{}
	case s.try.since.IsZero():
		s.try.since = now
	case !s.try.reported && now.Sub(s.try.since) >= CouldNotConnectAfter:
		s.try.reported = true
		r := s.connectReportLocked(now)
		s.log.Info("could not connect to partner", "message", r.Message)
		s.emitLocked(Event{Type: EventCouldNotConnect, Text: r.Message})
	}
}

// libp2pConnected: a connection to the partner exists, direct or through a
// circuit relay (limited), which carries signalling just as well.
func libp2pConnected(c network.Connectedness) bool {
	return c == network.Connected || c == network.Limited
}

// wantsPartnerLocked: the session should be connecting to the partner now.
func (s *Session) wantsPartnerLocked() bool {
	return !s.finished && !s.closing && s.phase != PhaseUpcoming && !s.self.Left && !s.partner.Left
}

func (s *Session) connectReportLocked(now time.Time) ConnectReport {
	r := ConnectReport{
		PartnerReachable: s.try.reachable,
		Libp2pConnected:  libp2pConnected(s.m.cfg.Host.Network().Connectedness(s.b.Partner)),
		Attempts:         s.try.attempts,
		ICEServers:       []string{},
		LocalCandidates:  slices.Clone(s.try.local),
		RemoteCandidates: slices.Clone(s.try.remote),
		ICEState:         s.try.iceState,
		LastError:        s.try.lastErr,
	}
	if r.LocalCandidates == nil {
		r.LocalCandidates = []string{}
	}
	if r.RemoteCandidates == nil {
		r.RemoteCandidates = []string{}
	}
	used := map[string]bool{}
	for _, srv := range s.m.ice.current() {
		for _, u := range srv.URLs {
			used[u] = true
		}
	}
	for _, srv := range s.m.cfg.ICEServers {
		for _, u := range srv.URLs {
			if !used[u] {
				if cur := s.m.ice.resolvedURL(u); cur != "" && used[cur] {
					u += " (" + cur + ")"
				} else {
					u += " (host name not resolved: not used)"
				}
			}
			r.ICEServers = append(r.ICEServers, u)
		}
	}
	for _, h := range s.peerICE {
		for _, u := range h.URLs {
			r.ICEServers = append(r.ICEServers, u+" (Tandem peer "+h.Helper.String()+")")
		}
	}
	switch {
	case s.connected:
		r.State, r.Since = ConnectConnected, s.joinedAt
		if s.link != nil {
			r.Path, r.ICERestarts = s.link.pathCopy(), s.link.restarts
		}
		lim := s.relay.Limit()
		r.VideoLimitKbps, r.AudioOnly = lim.Bitrate/1000, lim.AudioOnly
	case !s.wantsPartnerLocked() && s.phase == PhaseUpcoming:
		r.State = ConnectWaiting
	case !s.wantsPartnerLocked():
		r.State = ConnectOver
	case s.try.since.IsZero() || now.Sub(s.try.since) < CouldNotConnectAfter:
		r.State, r.Since = ConnectConnecting, s.try.since
	default:
		r.State, r.Since = ConnectCouldNotConnect, s.try.since
		r.Message = r.explain(now.Sub(s.try.since))
	}
	return r
}

// explain puts a failed try into words.
func (r ConnectReport) explain(d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Could not connect to your partner in %s. ", d.Round(time.Second))
	if !r.PartnerReachable {
		if r.Libp2pConnected {
			b.WriteString("Their node is connected over libp2p but has not answered this session (it may not have the booking open yet). ")
		} else {
			b.WriteString("Their node is not connected over libp2p (it may be offline or not started yet). ")
		}
		b.WriteString("No media connection was attempted.")
	} else {
		fmt.Fprintf(&b, "Their node answered over libp2p, but the media connection (WebRTC) did not come up (attempts: %d). ", r.Attempts)
		fmt.Fprintf(&b, "ICE candidates gathered here: %s; from your partner: %s. ", listOrNone(r.LocalCandidates), listOrNone(r.RemoteCandidates))
		fmt.Fprintf(&b, "ICE servers: %s.", listOrNone(r.ICEServers))
		if !slices.ContainsFunc(r.LocalCandidates, func(c string) bool { return strings.HasPrefix(c, "relay ") }) {
			if slices.ContainsFunc(r.ICEServers, func(u string) bool { return strings.HasPrefix(u, "turn") }) {
				b.WriteString(" No relay (TURN) address was gathered here: the TURN servers did not answer.")
			} else {
				b.WriteString(" No relay (TURN) address was gathered here: no Tandem peer offering a relay was found and no TURN server is configured.")
			}
		}
	}
	if r.LastError != "" {
		fmt.Fprintf(&b, " Last error: %s.", strings.TrimSuffix(r.LastError, "."))
	}
	b.WriteString(" Still trying.")
	return b.String()
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// Connection paths (ConnectPath.Kind).
const (
	PathDirect = "direct" // host, server-reflexive or peer-reflexive candidates on both sides
	PathRelay  = "relay"  // through a TURN relay on at least one side
)

// ConnectPath is how a connected session's packets flow: the ICE candidate
// pair WebRTC selected.
type ConnectPath struct {
	Kind string `json:"kind"`
	// Local and Remote are the selected candidates, "TYPE PROTOCOL
	// ADDRESS:PORT" ("relay udp 203.0.113.7:50123").
	Local  string `json:"local"`
	Remote string `json:"remote"`
	// Relay names the TURN relay(s) used: "Tandem peer 12D3KooW..." for a
	// node that helps (peerturn), else the relay's address.
	Relay string `json:"relay,omitempty"`
	// Text says it in words: "direct" or "via relay (Tandem peer ...)".
	Text string `json:"text"`
}

// PeerICEServer is a STUN/TURN server another Tandem node runs for others,
// with credentials it gave this node.
type PeerICEServer struct {
	webrtc.ICEServer
	Helper peer.ID
	// TLSFingerprint is the SHA-256 of the certificate the helper's
	// turns: URLs must present (its certificate is self-signed); turns:
	// URLs without one are left out.
	TLSFingerprint []byte
}

// peerICETimeout bounds how long a connection attempt waits for peer
// helpers' credentials (Config.PeerICE).
const peerICETimeout = 3 * time.Second

// peerServers asks Config.PeerICE for the helpers' servers, and keeps them
// for the report.
func (s *Session) peerServers() []PeerICEServer {
	if s.m.cfg.PeerICE == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, peerICETimeout)
	defer cancel()
	out := s.m.cfg.PeerICE(ctx)
	s.mu.Lock()
	s.peerICE = out
	s.mu.Unlock()
	return out
}

// pathCopy is a copy of the link's path, nil if none; s.mu is held.
func (l *link) pathCopy() *ConnectPath {
	if l.path == nil {
		return nil
	}
	p := *l.path
	return &p
}

// selectedPath describes the link's selected candidate pair, nil if none.
func (l *link) selectedPath() *ConnectPath {
	sctp := l.pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return nil
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil {
		return nil
	}
	return l.describePair(pair)
}

func (l *link) describePair(pair *webrtc.ICECandidatePair) *ConnectPath {
	if pair == nil || pair.Local == nil || pair.Remote == nil {
		return nil
	}
	cand := func(c *webrtc.ICECandidate) string {
		return c.Typ.String() + " " + c.Protocol.String() + " " + net.JoinHostPort(c.Address, strconv.Itoa(int(c.Port)))
	}
	p := &ConnectPath{Kind: PathDirect, Local: cand(pair.Local), Remote: cand(pair.Remote), Text: "direct"}
	var relays []string
	if pair.Local.Typ == webrtc.ICECandidateTypeRelay {
		relays = append(relays, l.relayName(pair.Local.Address, "your relay"))
	}
	if pair.Remote.Typ == webrtc.ICECandidateTypeRelay {
		relays = append(relays, l.relayName(pair.Remote.Address, "your partner's relay"))
	}
	if len(relays) > 0 {
		p.Kind = PathRelay
		p.Relay = strings.Join(slices.Compact(relays), ", ")
		p.Text = "via relay (" + p.Relay + ")"
	}
	return p
}

// relayName names the TURN relay at addr: the Tandem peer that runs it, if
// it is one of this link's helpers, else the address.
func (l *link) relayName(addr, whose string) string {
	at := func(u string) bool {
		if _, host, _, ok := splitICEURL(u); ok {
			return host == addr
		}
		a, ok := turnsAddr(u) // turns: keeps its host name or IP
		host, _, _ := net.SplitHostPort(a)
		return ok && host == addr
	}
	for _, h := range l.helpers {
		if slices.ContainsFunc(h.URLs, at) {
			return "Tandem peer " + h.Helper.String()
		}
	}
	for _, srv := range l.s.m.ice.current() {
		if slices.ContainsFunc(srv.URLs, at) {
			return "TURN server " + addr
		}
	}
	return whose + " at " + addr
}

// checkCapacityLocked tells the user when video pauses for want of
// capacity on a relayed path, and when it comes back.
func (s *Session) checkCapacityLocked() {
	audioOnly := s.connected && s.relay.Limit().AudioOnly
	if audioOnly == s.audioOnly {
		return
	}
	s.audioOnly = audioOnly
	text := "Video is back."
	if audioOnly {
		text = "Video paused: the connection through the relay is too slow for it. Audio and chat go on."
	}
	s.log.Info("video capacity", "audio_only", audioOnly)
	s.emitLocked(Event{Type: EventCapacity, Text: text})
}

// notePath starts or stops media adaptation as the link's path is relayed
// or direct.
func (s *Session) notePath(l *link, p *ConnectPath) {
	s.mu.Lock()
	current := s.link == l
	s.mu.Unlock()
	if current && p != nil {
		s.relay.Adapt(p.Kind == PathRelay, time.Now())
	}
}
