package session

import (
	"fmt"

	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/pb"
)

// ICE restarts (RFC 8445 section 9, RFC 8839 section 4.4): when the
// network under a connected session changes (a new address, Wi-Fi to
// cable, a NAT binding lost), the offerer sends a new offer with fresh ICE
// credentials on the same signalling stream, and both sides gather and
// check candidates again on the same PeerConnection: the data channel, the
// DTLS session and the media tracks stay, so nothing is set up again.
// Only the offerer restarts (the roles hold for the whole session, so
// there is no glare); it does so when the connection goes disconnected
// and when its node sees its addresses change (Manager.RestartICE). If the
// signalling stream is gone too, the connection fails in the end and a new
// one replaces it, as before.

// RestartICE restarts ICE on the session's connection, if this side
// offers and a connection is up; the answerer waits for the offerer's.
func (s *Session) RestartICE() error {
	if !s.offerer {
		return nil
	}
	s.mu.Lock()
	l := s.link
	s.mu.Unlock()
	if l == nil {
		return ErrNotConnected
	}
	return l.restartICE()
}

// RestartICE restarts ICE on every session this node offers in (the node
// calls it when its addresses change).
func (m *Manager) RestartICE() {
	for _, s := range m.Sessions() {
		if err := s.RestartICE(); err != nil {
			s.log.Debug("restarting ICE", "err", err)
		}
	}
}

// restartICE sends an ICE-restart offer on the link's signalling stream.
// An offer still waiting for its answer is left alone: it is either the
// first one or a restart already under way.
func (l *link) restartICE() error {
	l.negMu.Lock()
	defer l.negMu.Unlock()
	if l.pc.SignalingState() != webrtc.SignalingStateStable || !l.isConnected() {
		return nil
	}
	offer, err := l.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		return fmt.Errorf("creating ICE restart offer: %w", err)
	}
	if err := l.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("setting ICE restart offer: %w", err)
	}
	l.s.mu.Lock()
	l.restarts++
	l.s.mu.Unlock()
	l.s.log.Debug("restarting ICE")
	if err := l.write(&pb.Signal{Body: &pb.Signal_Description{Description: &pb.Description{
		Type: pb.SDPType_SDP_TYPE_OFFER, Sdp: offer.SDP,
	}}}); err != nil {
		return fmt.Errorf("sending ICE restart offer: %w", err)
	}
	return nil
}
