package session

import (
	"context"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
	"github.com/tandem-cowork/tandem/session/pb"
)

// maxBrowserSDP bounds the browser's offer.
const maxBrowserSDP = 64 << 10

// AttachBrowser connects the user's browser to this session's media relay,
// WHIP-style: it takes the browser's SDP offer (send and receive audio and
// video, VP8 and Opus) and returns the complete answer, with all of this
// node's candidates in it (no trickle). The browser's camera and
// microphone go to the partner and the partner's come back. A second call
// replaces the first browser (concurrent calls take turns, the last one
// wins). The partner is told whether we send video.
func (s *Session) AttachBrowser(ctx context.Context, offerSDP string) (string, error) {
	if offerSDP == "" || len(offerSDP) > maxBrowserSDP {
		return "", fmt.Errorf("%w: browser offer of %d bytes", ErrInvalid, len(offerSDP))
	}
	// One attach at a time (two tabs at once): the relay forwards the
	// browser bound last, which must be the one kept as s.browser.
	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	s.mu.Lock()
	ended := s.finished || s.closing
	s.mu.Unlock()
	if ended {
		return "", ErrEnded
	}
	// No trickle: an offer without candidates can never connect. Chromium
	// gathers none when loopback is its only network (it skips loopback).
	if !strings.Contains(offerSDP, "a=candidate:") {
		return "", ErrBrowserNoNetwork
	}
	pc, err := s.m.browserAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("creating browser peer connection: %w", err)
	}
	fail := func(err error) (string, error) {
		s.relay.Unbind(media.Browser, pc)
		pc.Close()
		return "", err
	}
	if err := s.relay.Bind(media.Browser, pc); err != nil {
		return fail(fmt.Errorf("binding media relay: %w", err))
	}
	pc.OnConnectionStateChange(func(webrtc.PeerConnectionState) { s.onBrowserState(pc) })
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		return fail(fmt.Errorf("%w: applying browser offer: %v", ErrInvalid, err))
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(fmt.Errorf("creating answer for browser: %w", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(fmt.Errorf("setting answer for browser: %w", err))
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(fmt.Errorf("gathering candidates for browser: %w", ctx.Err()))
	}
	local := pc.LocalDescription()
	md := browserSends(local)

	s.mu.Lock()
	if s.finished || s.closing {
		s.mu.Unlock()
		return fail(ErrEnded)
	}
	prev := s.browser
	s.browser = pc
	s.setMediaLocked(md)
	s.mu.Unlock()
	if prev != nil {
		prev.Close()
	}
	return local.SDP, nil
}

// DetachBrowser disconnects the browser, if one is attached (WHIP DELETE).
func (s *Session) DetachBrowser() {
	s.mu.Lock()
	pc := s.browser
	s.browser = nil
	if pc != nil && !s.finished {
		s.setMediaLocked(Media{})
	}
	s.mu.Unlock()
	if pc != nil {
		s.relay.Unbind(media.Browser, pc)
		pc.Close()
	}
}

func (s *Session) setMediaLocked(md Media) {
	if md == s.self.Media {
		return
	}
	s.self.Media = md
	s.sendLocked(&pb.Message{Body: &pb.Message_Media{Media: &pb.Media{Video: md.Video, Audio: md.Audio}}})
	s.emitLocked(Event{Type: EventMedia, From: FromSelf, Media: &md})
}

// browserSends reads our answer to the browser: the media sections we
// accepted to receive are what the browser sends.
func browserSends(answer *webrtc.SessionDescription) Media {
	var md Media
	parsed, err := answer.Unmarshal()
	if err != nil {
		return md
	}
	for _, m := range parsed.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			continue // rejected
		}
		// We receive unless we said sendonly or inactive (no attribute
		// means sendrecv, RFC 8866 section 6.7).
		_, sendonly := m.Attribute("sendonly")
		_, inactive := m.Attribute("inactive")
		if sendonly || inactive {
			continue
		}
		switch m.MediaName.Media {
		case "video":
			md.Video = true
		case "audio":
			md.Audio = true
		}
	}
	return md
}

// onBrowserState follows the browser leg's state.
func (s *Session) onBrowserState(pc *webrtc.PeerConnection) {
	switch st := pc.ConnectionState(); st {
	case webrtc.PeerConnectionStateConnected:
		s.relay.Connected(media.Browser, pc)
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		s.mu.Lock()
		mine := s.browser == pc
		if mine {
			s.browser = nil
			if !s.finished {
				s.setMediaLocked(Media{})
			}
		}
		if mine && st == webrtc.PeerConnectionStateFailed {
			s.goWorkerLocked(func() { pc.Close() })
		}
		s.mu.Unlock()
		s.relay.Unbind(media.Browser, pc)
	}
}
