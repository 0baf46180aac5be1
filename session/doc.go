// Package session runs the co-working session between two matched Tandem
// nodes: the schedule, the WebRTC connection signalled over libp2p, the
// session protocol on a data channel, the media relay to the user's
// browser, signed attendance receipts and the history they end in.
//
// # Using it
//
// A node makes one Manager and starts it:
//
//	m, err := session.NewManager(session.Config{Host: h, DB: db, Log: log, OnEvent: publish})
//	err = m.Start(ctx)
//	defer m.Close()
//
// When a booking is matched (any time before its check-in window closes)
// the node opens its session; Open returns at once and the session follows
// the wall clock from there, connecting to the partner when the lobby
// opens. Opening it again after a restart resumes it (the joined-at time
// and our goal are kept in the database under "session/live/"):
//
//	s, err := m.Open(session.Booking{ID: b.ID, PartnerBooking: b.PartnerBooking,
//		Partner: partner, PartnerName: b.PartnerName, Name: myName, Goal: b.Goal,
//		Start: b.Start, DurationMin: b.DurationMin, Kind: string(b.Kind)})
//
// The user then drives it: s.SetGoal, s.Chat, s.SetPresence, s.CheckIn,
// s.Leave; s.State returns a Snapshot for the API, and every change is
// also reported to Config.OnEvent as an Event (the node turns these into
// server-sent events; the UI plays the chimes on "phase" events). The
// browser's video joins with s.AttachBrowser, which takes the browser's
// SDP offer and returns the answer (WHIP-style); s.DetachBrowser drops it.
// When the session is over its Record is in m.History, and m.Stats sums
// the history up. s.Done is closed once the session has ended.
//
// Events the node should act on: EventRematchOffered (partner 2 minutes
// late: offer a rematch), EventPartnerLeft (the partner left early: may
// rematch for the remaining time), EventEnded (the record is stored).
//
// # Schedule
//
// Phases follow Config.Now, never message timing, so both sides chime
// together: upcoming -> lobby (LobbyBefore the start; at once for a "now"
// booking) -> focus (at the start) -> warning (WarningBefore the end) ->
// checkin (at the end) -> done. A session is done when both check-ins and
// receipts are exchanged, when either side leaves, CheckinWindow after the
// end, or NoShowAfter the start if the partner never came.
//
// # Wire
//
// The node with the lower peer ID offers. It opens a SignalProtocol stream
// to the partner, sends Join, an SDP offer and trickled ICE candidates; the
// partner answers on the same stream. A stream from any peer that is not
// the booked partner of an open session is reset. Because the stream runs
// over the authenticated libp2p connection, the DTLS fingerprint in the SDP
// is bound to the partner's peer ID. The session protocol (hello, goal,
// chat, presence, media, check-in, leave, receipt) runs on a negotiated,
// reliable, ordered data channel; see pb/session.proto and docs/protocol.md.
//
// A dropped partner is reconnected with a new PeerConnection: the offerer
// redials with backoff (and at once when libp2p reconnects), the answerer
// accepts the new stream and replaces its old connection. The full wire
// description is section 5 of docs/protocol.md.
//
// # Goroutines
//
// Every goroutine is owned: a Session's by the Session (stopped when it
// ends or its Manager closes), the Manager's by the Manager. Close stops
// them all and waits.
package session

import (
	"errors"
	"time"
)

// Schedule of a session, relative to its booked start and end.
const (
	// LobbyBefore is how long before the start the lobby opens.
	LobbyBefore = 5 * time.Minute
	// WarningBefore is how long before the end the warning chime sounds.
	WarningBefore = time.Minute
	// RematchAfter: a partner still absent this long after the start
	// triggers EventRematchOffered.
	RematchAfter = 2 * time.Minute
	// NoShowAfter: a partner still absent this long after the start is a
	// no-show, and the session ends.
	NoShowAfter = 5 * time.Minute
	// CheckinWindow is how long after the end check-ins are awaited.
	CheckinWindow = 5 * time.Minute
)

// Sentinel errors callers branch on.
var (
	// ErrInvalid: a bad argument (booking fields, text too long, unknown value).
	ErrInvalid = errors.New("invalid request")
	// ErrNotStarted: the Manager was not started, or is closed.
	ErrNotStarted = errors.New("session manager not running")
	// ErrEnded: the session is over (or the booking's time has passed).
	ErrEnded = errors.New("session has ended")
	// ErrBusy: the booking's previous match still has its session open.
	ErrBusy = errors.New("previous session still open")
	// ErrNotConnected: the partner is not connected right now.
	ErrNotConnected = errors.New("partner not connected")
	// ErrWrongPhase: the action is not possible in the current phase.
	ErrWrongPhase = errors.New("not possible in this phase")
	// ErrInvalidMessage: a wire message failed to decode or validate.
	ErrInvalidMessage = errors.New("invalid session message")
	// ErrBadReceipt: an attendance receipt failed verification.
	ErrBadReceipt = errors.New("invalid attendance receipt")
	// ErrBrowserNoNetwork: the browser's offer has no ICE candidate, so
	// its leg cannot connect (a browser on a machine with only loopback).
	ErrBrowserNoNetwork = errors.New("your browser offered no network address for the video connection " +
		"(on a computer whose only network is loopback, e.g. offline, Chromium needs the flag " +
		"--allow-loopback-in-peer-connection; or connect to any network and try again)")
)
