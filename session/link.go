package session

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
	"github.com/tandem-cowork/tandem/session/pb"
)

// Retry pacing of the offerer's connection attempts.
const (
	minRetry       = 250 * time.Millisecond
	maxRetry       = 5 * time.Second
	dialTimeout    = 10 * time.Second
	writeTimeout   = 10 * time.Second
	maxPendingCand = 64
)

// link is one connection attempt to the partner: a signalling stream and
// the PeerConnection it negotiates, with the session data channel. A
// dropped partner gets a new link.
type link struct {
	s   *Session
	pc  *webrtc.PeerConnection
	dc  *webrtc.DataChannel
	st  network.Stream
	r   *bufio.Reader
	wmu sync.Mutex // serialises writes to st

	// Guarded by s.mu.
	open      bool // data channel open
	hello     bool // the partner's hello arrived on this link
	connected bool // the PeerConnection has been connected
	restarts  int  // ICE restarts offered on this link

	negMu sync.Mutex // serialises the offerer's offers (first and restarts)

	stopOnce, killOnce sync.Once
	stopCh             chan struct{} // we are done with this link
	dead               chan struct{} // the link broke
	done               chan struct{} // run has returned

	// helpers are the peer STUN/TURN servers this link was given.
	helpers []PeerICEServer
	// path is how the connected link's packets flow (guarded by s.mu).
	path *ConnectPath

	// Used by the reader goroutine only.
	remoteUfrag string          // of the applied remote description
	oldUfrags   map[string]bool // of remote descriptions replaced since
	pending     []webrtc.ICECandidateInit
}

func (l *link) stop() { l.stopOnce.Do(func() { close(l.stopCh) }) }
func (l *link) kill() { l.killOnce.Do(func() { close(l.dead) }) }

// startLink makes a PeerConnection for the signalling stream st and makes
// it the session's current link, replacing any older one.
func (s *Session) startLink(st network.Stream, r *bufio.Reader) (*link, error) {
	servers, helpers := s.m.ice.current(), s.peerServers()
	for _, h := range helpers {
		if h, ok := s.m.turnDial.admit(h); ok {
			servers = append(servers, h.ICEServer)
		}
	}
	policy := webrtc.ICETransportPolicyAll
	if s.m.cfg.RelayOnly {
		policy = webrtc.ICETransportPolicyRelay
	}
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	pc, err := s.m.peerAPI.NewPeerConnection(webrtc.Configuration{ICEServers: servers, ICETransportPolicy: policy})
	if err != nil {
		return nil, fmt.Errorf("creating peer connection: %w", err)
	}
	negotiated, id := true, uint16(dataChannelID)
	dc, err := pc.CreateDataChannel(DataChannelLabel, &webrtc.DataChannelInit{Negotiated: &negotiated, ID: &id})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("creating data channel: %w", err)
	}
	if err := s.relay.Bind(media.Partner, pc); err != nil {
		pc.Close()
		return nil, fmt.Errorf("binding media relay: %w", err)
	}
	l := &link{s: s, pc: pc, dc: dc, st: st, r: r, helpers: helpers,
		stopCh: make(chan struct{}), dead: make(chan struct{}), done: make(chan struct{})}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			s.noteLocalCandidate(c.ToJSON())
			l.sendCandidate(c.ToJSON())
		}
	})
	// pion calls this from a new goroutine per change, so the order of
	// calls is not the order of changes: always look at the current state.
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.noteICEState(st)
		s.onLinkState(l)
	})
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(p *webrtc.ICECandidatePair) {
		if path := l.describePair(p); path != nil {
			s.mu.Lock()
			if l.path != nil && *l.path != *path && s.link == l && s.connected && !s.finished {
				// A new path on the same connection (ICE restart, a
				// better pair nominated): say so.
				s.emitLocked(Event{Type: EventPathChanged, Path: path})
			}
			l.path = path
			s.mu.Unlock()
			s.notePath(l, path)
		}
	})
	dc.OnOpen(func() { s.onOpen(l) })
	dc.OnClose(l.kill)
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		if !msg.IsString {
			s.onMessage(l, msg.Data)
		}
	})

	s.mu.Lock()
	if s.closing || s.finished {
		s.mu.Unlock()
		s.relay.Unbind(media.Partner, pc)
		pc.Close()
		return nil, ErrEnded
	}
	prev := s.link
	s.link = l
	s.noteAttemptLocked()
	s.goWorkerLocked(l.run)
	s.mu.Unlock()
	if prev != nil {
		prev.stop()
	}
	return l, nil
}

// run supervises the link: it signals, waits for the link to break, be
// replaced or time out while connecting, and then closes it.
func (l *link) run() {
	s := l.s
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		l.readLoop()
	}()
	if s.offerer {
		if err := l.sendOffer(); err != nil {
			s.log.Debug("sending offer", "err", err)
			l.kill()
		}
	}
	timeout := time.NewTimer(s.m.cfg.ConnectTimeout)
	defer timeout.Stop()
wait:
	for {
		select {
		case <-s.ctx.Done():
			break wait
		case <-l.stopCh:
			break wait
		case <-l.dead:
			break wait
		case <-timeout.C:
			if !l.isConnected() {
				s.log.Debug("connection attempt timed out")
				s.noteError(fmt.Errorf("no WebRTC connection within %v", s.m.cfg.ConnectTimeout))
				break wait
			}
		}
	}
	l.st.Reset()
	if err := l.pc.GracefulClose(); err != nil {
		s.log.Debug("closing peer connection", "err", err)
	}
	<-readerDone
	s.relay.Unbind(media.Partner, l.pc)
	s.linkGone(l)
	close(l.done)
}

func (l *link) isConnected() bool {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	return l.connected
}

// readLoop handles the partner's signalling frames. A signalling stream
// that ends after the PeerConnection connected is harmless (the media path
// does not need it); one that ends before breaks the attempt.
func (l *link) readLoop() {
	for {
		sig, err := readSignal(l.r)
		if err != nil {
			if !l.isConnected() {
				l.kill()
			}
			return
		}
		switch b := sig.GetBody().(type) {
		case *pb.Signal_Description:
			if err := l.onDescription(b.Description); err != nil {
				l.s.log.Debug("applying description", "err", err)
				l.kill()
				return
			}
		case *pb.Signal_Candidate:
			l.onCandidate(b.Candidate)
		}
	}
}

func (l *link) sendOffer() error {
	l.negMu.Lock()
	defer l.negMu.Unlock()
	offer, err := l.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("creating offer: %w", err)
	}
	if err := l.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("setting local offer: %w", err)
	}
	return l.write(&pb.Signal{Body: &pb.Signal_Description{Description: &pb.Description{
		Type: pb.SDPType_SDP_TYPE_OFFER, Sdp: offer.SDP,
	}}})
}

func (l *link) onDescription(d *pb.Description) error {
	isOffer := d.GetType() == pb.SDPType_SDP_TYPE_OFFER
	if isOffer == l.s.offerer {
		return fmt.Errorf("%w: unexpected %v", ErrInvalidMessage, d.GetType())
	}
	typ := webrtc.SDPTypeAnswer
	if isOffer {
		typ = webrtc.SDPTypeOffer
	}
	for _, line := range strings.Split(d.GetSdp(), "\n") {
		if strings.HasPrefix(line, "a=candidate:") {
			l.s.noteRemoteCandidate(strings.TrimSpace(line))
		}
	}
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: d.GetSdp()}); err != nil {
		return fmt.Errorf("setting remote description: %w", err)
	}
	if u := sdpUfrag(d.GetSdp()); u != l.remoteUfrag {
		if l.remoteUfrag != "" {
			if l.oldUfrags == nil {
				l.oldUfrags = map[string]bool{}
			}
			l.oldUfrags[l.remoteUfrag] = true
		}
		l.remoteUfrag = u
	}
	pending := l.pending
	l.pending = nil
	for _, c := range pending {
		l.addCandidate(c)
	}
	if !isOffer {
		return nil
	}
	answer, err := l.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("creating answer: %w", err)
	}
	if err := l.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("setting local answer: %w", err)
	}
	return l.write(&pb.Signal{Body: &pb.Signal_Description{Description: &pb.Description{
		Type: pb.SDPType_SDP_TYPE_ANSWER, Sdp: answer.SDP,
	}}})
}

// onCandidate takes a trickled candidate from the partner.
func (l *link) onCandidate(c *pb.Candidate) {
	if c.GetCandidate() == "" {
		return // end of candidates
	}
	l.s.noteRemoteCandidate(c.GetCandidate())
	init := webrtc.ICECandidateInit{Candidate: c.GetCandidate(), SDPMid: c.SdpMid, UsernameFragment: c.UsernameFragment}
	if c.SdpMlineIndex != nil {
		i := uint16(c.GetSdpMlineIndex())
		init.SDPMLineIndex = &i
	}
	l.addCandidate(init)
}

// addCandidate adds a remote candidate to the PeerConnection, keeps it
// until the description of its ICE generation arrives, or drops it if its
// generation is over. A candidate can come before its description: the
// partner gathers as soon as it sets its local description, and the
// gathering callbacks race the write of the description itself; this
// happens on every ICE restart, where the previous remote description is
// still in place and pion drops candidates whose ufrag it does not know.
func (l *link) addCandidate(c webrtc.ICECandidateInit) {
	u := candidateUfrag(c.Candidate)
	if c.UsernameFragment != nil && *c.UsernameFragment != "" {
		u = *c.UsernameFragment
	}
	if l.remoteUfrag == "" || (u != "" && u != l.remoteUfrag) {
		if l.oldUfrags[u] {
			return // from before an ICE restart
		}
		if len(l.pending) < maxPendingCand {
			l.pending = append(l.pending, c)
		}
		return
	}
	if err := l.pc.AddICECandidate(c); err != nil {
		l.s.log.Debug("adding candidate", "err", err)
	}
}

// sdpUfrag is the ICE username fragment of a session description.
func sdpUfrag(sdp string) string {
	for _, line := range strings.Split(sdp, "\n") {
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-ufrag:"); ok {
			return u
		}
	}
	return ""
}

// candidateUfrag is the ufrag extension of a trickled candidate line
// ("candidate:... ufrag XYZ"), or "" when it has none.
func candidateUfrag(candidate string) string {
	f := strings.Fields(candidate)
	for i := len(f) - 2; i >= 0; i-- {
		if f[i] == "ufrag" {
			return f[i+1]
		}
	}
	return ""
}

func (l *link) sendCandidate(c webrtc.ICECandidateInit) {
	pc := &pb.Candidate{Candidate: c.Candidate, SdpMid: c.SDPMid, UsernameFragment: c.UsernameFragment}
	if c.SDPMLineIndex != nil {
		i := uint32(*c.SDPMLineIndex)
		pc.SdpMlineIndex = &i
	}
	if err := l.write(&pb.Signal{Body: &pb.Signal_Candidate{Candidate: pc}}); err != nil {
		l.s.log.Debug("sending candidate", "err", err)
	}
}

func (l *link) write(m *pb.Signal) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.st.SetWriteDeadline(time.Now().Add(writeTimeout))
	return writeSignal(l.st, m)
}

// onLinkState follows the PeerConnection's state.
func (s *Session) onLinkState(l *link) {
	switch l.pc.ConnectionState() {
	case webrtc.PeerConnectionStateConnected:
		path := l.selectedPath()
		s.mu.Lock()
		l.connected = true
		if path != nil {
			if l.path == nil && s.link == l && s.connected && !s.finished {
				// The partner's hello came first and its event had no path.
				s.emitLocked(Event{Type: EventPathChanged, Path: path})
			}
			l.path = path
		}
		if s.link == l && l.hello && !s.connected && !s.finished {
			s.connected = true
			s.emitLocked(Event{Type: EventPartnerReconnected, From: FromPartner, Path: l.pathCopy()})
		}
		s.mu.Unlock()
		s.notePath(l, path)
		s.relay.Connected(media.Partner, l.pc)
	case webrtc.PeerConnectionStateDisconnected:
		s.mu.Lock()
		if s.link == l && s.connected && !s.finished {
			s.connected = false
			s.emitLocked(Event{Type: EventPartnerDisconnected, From: FromPartner})
		}
		current := s.link == l && !s.finished
		s.mu.Unlock()
		// The path broke (a network change, a lost NAT binding): look for
		// a new one on the same PeerConnection (restart.go).
		if current && s.offerer {
			if err := l.restartICE(); err != nil {
				s.log.Debug("restarting ICE", "err", err)
			}
		}
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		l.kill()
	}
}

// onOpen greets the partner when the data channel opens.
func (s *Session) onOpen(l *link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link != l || s.finished {
		return
	}
	l.open = true
	if err := s.sendLocked(s.helloLocked()); err != nil {
		s.log.Debug("sending hello", "err", err)
	}
	s.probes, s.clockSamples = nil, nil // a new path: measure afresh
	s.probeClockLocked(true)
}

// linkGone forgets a closed link and tells the connector.
func (s *Session) linkGone(l *link) {
	s.mu.Lock()
	if s.link == l {
		s.link = nil
		was := s.connected
		s.connected = false
		s.maybeFinishLocked(s.m.cfg.Now())
		if was && !s.finished {
			s.emitLocked(Event{Type: EventPartnerDisconnected, From: FromPartner})
		}
	}
	s.mu.Unlock()
	s.poke()
}

// needsLink reports whether the offerer should be connecting now.
func (s *Session) needsLink() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.finished && !s.closing && s.link == nil && s.phase != PhaseUpcoming &&
		!s.self.Left && !s.partner.Left
}

// connectLoop is the offerer's connector: whenever the session needs a
// link it dials the partner, with backoff while the partner is not there.
func (s *Session) connectLoop() {
	backoff := minRetry
	for {
		for !s.needsLink() {
			select {
			case <-s.ctx.Done():
				return
			case <-s.wake:
			}
		}
		l, err := s.dial()
		if err == nil {
			select {
			case <-s.ctx.Done():
				return
			case <-l.done:
			}
			if l.isConnected() {
				backoff = minRetry
				continue // it was up: try again at once
			}
		} else {
			s.log.Debug("connecting to partner", "err", err)
			s.noteError(err)
		}
		d := backoff/2 + rand.N(backoff)
		backoff = min(2*backoff, maxRetry)
		t := time.NewTimer(d)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.redial:
			t.Stop()
		}
	}
}

// dial opens the signalling stream to the partner and, once the partner
// has answered our Join with its own, starts a link on it.
func (s *Session) dial() (*link, error) {
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	// Signalling is a few small messages: it may go through a circuit
	// relay (a limited connection) while the nodes have no direct
	// connection; the media path is WebRTC's, not this stream's.
	st, err := s.m.cfg.Host.NewStream(network.WithAllowLimitedConn(ctx, "tandem signalling"), s.b.Partner, SignalProtocol)
	if err != nil {
		return nil, fmt.Errorf("opening signalling stream: %w", err)
	}
	st.SetDeadline(time.Now().Add(joinTimeout))
	s.mu.Lock()
	join := &pb.Join{FromBooking: s.b.ID, ToBooking: s.partnerBooking}
	s.mu.Unlock()
	if err := writeSignal(st, &pb.Signal{Body: &pb.Signal_Join{Join: join}}); err != nil {
		st.Reset()
		return nil, fmt.Errorf("sending join: %w", err)
	}
	r := bufio.NewReader(st)
	sig, err := readSignal(r)
	if err != nil {
		st.Reset()
		return nil, fmt.Errorf("reading join: %w", err)
	}
	if j := sig.GetJoin(); j == nil || !s.learnPartnerBooking(st.Conn().RemotePeer(), j) {
		st.Reset()
		return nil, fmt.Errorf("%w: partner answered with another booking", ErrInvalidMessage)
	}
	st.SetDeadline(time.Time{})
	l, err := s.startLink(st, r)
	if err != nil {
		st.Reset()
		return nil, err
	}
	return l, nil
}

// admits reports whether remote's Join may open a link to this session:
// the booked partner, the right bookings, from the lobby on. The offerer
// dials when its lobby opens on its clock, which may be MaxClockSkew
// ahead of ours (we follow its clock only once connected).
func (s *Session) admits(remote peer.ID, j *pb.Join) bool {
	if s.offerer || (j.GetToBooking() != "" && j.GetToBooking() != s.b.ID) {
		return false
	}
	s.mu.Lock()
	ok := !s.finished && !s.closing && !s.self.Left && !s.partner.Left &&
		phaseAt(s.b, s.sessionNowLocked().Add(MaxClockSkew)) != PhaseUpcoming
	s.mu.Unlock()
	return ok && s.learnPartnerBooking(remote, j)
}

// learnPartnerBooking checks a Join from remote against the booking, and
// remembers the partner's booking ID if we did not know it.
func (s *Session) learnPartnerBooking(remote peer.ID, j *pb.Join) bool {
	if remote != s.b.Partner || j.GetFromBooking() == "" || (j.GetToBooking() != "" && j.GetToBooking() != s.b.ID) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.partnerBooking == "" {
		s.partnerBooking = j.GetFromBooking()
	}
	return s.partnerBooking == j.GetFromBooking()
}

// accept answers a partner's Join with ours and starts a link on the
// stream; the partner's offer follows.
func (s *Session) accept(st network.Stream, r *bufio.Reader) error {
	s.mu.Lock()
	join := &pb.Join{FromBooking: s.b.ID, ToBooking: s.partnerBooking}
	s.mu.Unlock()
	st.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := writeSignal(st, &pb.Signal{Body: &pb.Signal_Join{Join: join}}); err != nil {
		return fmt.Errorf("answering join: %w", err)
	}
	_, err := s.startLink(st, r)
	return err
}
