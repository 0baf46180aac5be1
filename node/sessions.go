package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/session"
)

// DefaultICEServers are used on the internet when the config names none,
// so two NATed nodes can find a direct media path. Local-only nodes use
// none: nothing may leave the machine.
var DefaultICEServers = []ICEServer{{URLs: []string{"stun:stun.l.google.com:19302"}}}

func (n *Node) newSessionManager() (*session.Manager, error) {
	var ice []webrtc.ICEServer
	servers := n.cfg.iceServers()
	for _, s := range servers {
		ice = append(ice, s.webrtc())
	}
	var peerICE func(context.Context) []session.PeerICEServer
	if n.cfg.TURN.usePeers() {
		peerICE = n.turn.peerICE
	}
	return session.NewManager(session.Config{
		Host: n.host, DB: n.db, Log: n.log.With("pkg", "session"), Now: n.now,
		ICEServers: ice, PeerICE: peerICE, RelayOnly: n.cfg.TURN.RelayOnly,
		IncludeLoopback: true, LoopbackOnly: n.loopbackOnly(),
		OnEvent: n.onSessionEvent,
		// The schedule is checked once a second of the node's clock, so a
		// compressed clock (demo --short) still sounds every chime.
		Tick: max(time.Duration(float64(time.Second)/max(n.cfg.ClockRate, 1)), 50*time.Millisecond),
	})
}

// loopbackOnly: a local-only node that listens on loopback only keeps its
// WebRTC traffic there too (tests, the demo).
func (n *Node) loopbackOnly() bool {
	if !n.cfg.LocalOnly() {
		return false
	}
	for _, a := range n.cfg.Listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil || !manet.IsIPLoopback(m) {
			return false
		}
	}
	return true
}

// onSessionEvent acts on a session's event, then publishes it: an event
// on the stream means the node has dealt with it. Every event names the
// match its session was opened for (booking and partner booking); a
// booking freed by a cancel and matched again with someone else has a new
// session, and the old one's events must not touch the new match.
func (n *Node) onSessionEvent(e session.Event) {
	defer n.events.publish(apiv1.EventSession, e)
	n.metrics.session(e)
	switch e.Type {
	case session.EventRematchOffered:
		if s, err := n.uiSettings(); err == nil && s.AutoRematch {
			n.goRun(func() {
				if _, err := n.rematch(n.ctx, e.Booking, &e.PartnerBooking); err != nil {
					n.log.Info("automatic rematch", "booking", e.Booking, "err", err)
				}
			})
		}
	case session.EventEnded:
		// A session that has ended leaves its booking done: one that
		// ended before its booked end (no-show, someone left, or left
		// before it began) frees the booking's time for a new session at
		// once. Whether it ended early is the session's judgement, on the
		// session clock (the offerer's): this node's clock may be minutes
		// off it, so a session that ran to its end can end before the
		// booking does on this clock.
		r := e.Record
		n.noteSession(r)
		note := ""
		if r == nil || r.NoShow || r.LeftEarly || r.PartnerLeftEarly {
			note = "session ended early"
		}
		n.leftMu.Lock()
		left, wasLeft := n.leftUnmatched[e.Booking]
		if wasLeft && left == e.PartnerBooking {
			delete(n.leftUnmatched, e.Booking)
		}
		n.leftMu.Unlock()
		if wasLeft && left == e.PartnerBooking {
			// Ended because its match was undone (a cancel, a crashed
			// partner's reconcile): the booking may be in the same match
			// again by now, whose session is still to come.
			n.kickSessions()
			return
		}
		if b, err := n.mm.Booking(e.Booking); err == nil && b.State == matchmaking.StateMatched {
			if _, err := n.mm.Finish(e.Booking, e.PartnerBooking, note); err != nil && !errors.Is(err, matchmaking.ErrConflict) {
				n.log.Warn("marking booking done", "booking", e.Booking, "err", err)
			}
		}
		n.kickSessions()
	}
}

// leaveUnmatched ends session s because its booking is no longer in the
// session's match, and notes it so that the session's end leaves the
// booking alone.
func (n *Node) leaveUnmatched(s *session.Session, reason string) {
	n.leftMu.Lock()
	n.leftUnmatched[s.ID()] = s.Booking().PartnerBooking
	n.leftMu.Unlock()
	s.Leave(reason)
}

func (n *Node) kickSessions() {
	select {
	case n.sessionKick <- struct{}{}:
	default:
	}
}

// runSessions opens a session for every matched booking that has not
// ended, and tells a session its booking was cancelled.
func (n *Node) runSessions(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n.syncSessions()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.sessionKick:
		}
	}
}

func (n *Node) syncSessions() {
	now := n.now()
	recorded := map[string]bool{}
	if recs, err := n.sm.History(); err == nil {
		for _, r := range recs {
			recorded[r.BookingID+"|"+r.PartnerBooking] = true
		}
	}
	for _, b := range n.mm.Bookings() {
		s, open := n.sm.Get(b.ID)
		if open {
			sb := s.Booking()
			if b.State == matchmaking.StateMatched && (sb.Partner.String() != b.Partner || sb.PartnerBooking != b.PartnerBooking) {
				// The booking was freed and matched again before this
				// session of its old match ended: end it; the new match's
				// session opens once it has (EventEnded kicks us).
				n.leaveUnmatched(s, "matched with someone else")
				continue
			}
		}
		if b.State == matchmaking.StateMatched && now.Before(b.End()) {
			// Matched (or in session) with a partner we reach only
			// through a relay: try for a direct connection, for the
			// session's sake; nothing waits for it.
			if partner, err := peer.Decode(b.Partner); err == nil {
				n.upgrade.want(n.ctx, partner, "partner")
			}
		}
		switch {
		case b.State == matchmaking.StateMatched && !open && !recorded[b.ID+"|"+b.PartnerBooking] &&
			now.Before(b.End().Add(session.CheckinWindow)):
			partner, err := peer.Decode(b.Partner)
			if err != nil {
				continue
			}
			n.leftMu.Lock()
			delete(n.leftUnmatched, b.ID) // a new session: any earlier one has ended
			n.leftMu.Unlock()
			_, err = n.sm.Open(session.Booking{
				ID: b.ID, PartnerBooking: b.PartnerBooking, Partner: partner, PartnerName: b.PartnerName,
				Name: n.mm.Name(), Goal: b.Goal, Start: b.Start,
				DurationMin: b.DurationMin, Kind: string(b.Kind),
			})
			if err != nil && !errors.Is(err, session.ErrEnded) && !errors.Is(err, session.ErrBusy) {
				n.log.Warn("opening session", "booking", b.ID, "err", err)
			}
		case open && b.State != matchmaking.StateMatched && b.State != matchmaking.StateDone:
			// Cancelled by either side: the session ends; before the start
			// that leaves no history record.
			n.leaveUnmatched(s, b.Note)
		}
	}
}

// Rematch finds a new partner for the rest of a booking's time when the
// partner did not come or left: the old booking is cancelled (which tells
// the partner) or, if its session already ended, left done, and a "now"
// request is made for the valid duration closest to the time that remains.
func (n *Node) Rematch(ctx context.Context, bookingID string) (matchmaking.Booking, error) {
	return n.rematch(ctx, bookingID, nil)
}

// rematch is Rematch; with match set, only while the booking is still in
// the match with that partner booking (an automatic rematch offered by one
// match's session must not cancel a newer match of the booking).
func (n *Node) rematch(ctx context.Context, bookingID string, match *string) (matchmaking.Booking, error) {
	b, err := n.mm.Booking(bookingID)
	if err != nil {
		return matchmaking.Booking{}, err
	}
	if b.State != matchmaking.StateMatched && b.State != matchmaking.StateDone {
		return matchmaking.Booking{}, fmt.Errorf("%w: booking %s is %s", matchmaking.ErrConflict, bookingID, b.State)
	}
	if match == nil {
		match = &b.PartnerBooking
	}
	if b.PartnerBooking != *match {
		return matchmaking.Booking{}, fmt.Errorf("%w: booking %s is matched with someone else now", matchmaking.ErrConflict, bookingID)
	}
	s, open := n.sm.Get(bookingID)
	if open && s.Booking().PartnerBooking != *match {
		open = false // the session of another match: not ours to leave
	}
	if open && s.State().Connected {
		return matchmaking.Booking{}, fmt.Errorf("%w: your partner is here", matchmaking.ErrConflict)
	}
	remaining := b.End().Sub(n.now())
	if remaining < 10*time.Minute {
		return matchmaking.Booking{}, fmt.Errorf("%w: less than 10 minutes left", matchmaking.ErrConflict)
	}
	dur := matchmaking.Durations[0]
	for _, d := range matchmaking.Durations {
		if absDur(time.Duration(d)*time.Minute-remaining) < absDur(time.Duration(dur)*time.Minute-remaining) {
			dur = d
		}
	}
	if open {
		s.Leave("looking for a new partner")
	}
	if b.State == matchmaking.StateMatched {
		if _, err := n.mm.CancelMatch(ctx, bookingID, *match, "partner did not come; rematched"); err != nil {
			// A conflict here: the partner cancelled meanwhile (the
			// booking is free anyway) or it was matched again (keep it).
			if !errors.Is(err, matchmaking.ErrConflict) {
				return matchmaking.Booking{}, err
			}
			if cur, _ := n.mm.Booking(bookingID); cur.State == matchmaking.StateMatched {
				return matchmaking.Booking{}, err
			}
		}
	}
	return n.mm.Book(ctx, matchmaking.BookRequest{
		Kind: matchmaking.KindNow, DurationMin: dur, Activity: b.Activity, Quiet: b.Quiet, Goal: b.Goal,
	})
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// sessionAPI registers the session endpoints.
func (n *Node) sessionAPI(api *http.ServeMux) {
	api.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		out := []session.Snapshot{}
		for _, s := range n.sm.Sessions() {
			out = append(out, s.State())
		}
		writeJSON(w, out)
	})
	api.HandleFunc("GET /api/v1/sessions/{id}", n.withSession(func(w http.ResponseWriter, r *http.Request, s *session.Session) {
		writeJSON(w, s.State())
	}))
	act := func(f func(s *session.Session, body apiv1.SessionAction) error) func(http.ResponseWriter, *http.Request, *session.Session) {
		return func(w http.ResponseWriter, r *http.Request, s *session.Session) {
			var body apiv1.SessionAction
			if r.ContentLength != 0 && !readJSON(w, r, &body) {
				return
			}
			if err := f(s, body); err != nil {
				writeSessionErr(w, err)
				return
			}
			writeJSON(w, s.State())
		}
	}
	api.HandleFunc("POST /api/v1/sessions/{id}/goal", n.withSession(act(func(s *session.Session, b apiv1.SessionAction) error { return s.SetGoal(b.Text) })))
	api.HandleFunc("POST /api/v1/sessions/{id}/chat", n.withSession(act(func(s *session.Session, b apiv1.SessionAction) error { return s.Chat(b.Text) })))
	api.HandleFunc("POST /api/v1/sessions/{id}/presence", n.withSession(act(func(s *session.Session, b apiv1.SessionAction) error {
		return s.SetPresence(session.Presence(b.Presence))
	})))
	api.HandleFunc("POST /api/v1/sessions/{id}/checkin", n.withSession(act(func(s *session.Session, b apiv1.SessionAction) error {
		return s.CheckIn(session.Outcome(b.Outcome), b.Note)
	})))
	api.HandleFunc("POST /api/v1/sessions/{id}/leave", n.withSession(act(func(s *session.Session, b apiv1.SessionAction) error { return s.Leave(b.Reason) })))
	api.HandleFunc("POST /api/v1/sessions/{id}/rematch", func(w http.ResponseWriter, r *http.Request) {
		b, err := n.Rematch(r.Context(), r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, b)
	})
	// WHIP-style: the browser POSTs its SDP offer, gets the SDP answer.
	api.HandleFunc("POST /api/v1/sessions/{id}/media", n.withSession(func(w http.ResponseWriter, r *http.Request, s *session.Session) {
		offer, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(offer)), "v=0") {
			writeError(w, http.StatusBadRequest, "want an SDP offer (application/sdp)")
			return
		}
		answer, err := s.AttachBrowser(r.Context(), string(offer))
		if err != nil {
			writeSessionErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answer)
	}))
	api.HandleFunc("DELETE /api/v1/sessions/{id}/media", n.withSession(func(w http.ResponseWriter, r *http.Request, s *session.Session) {
		s.DetachBrowser()
		w.WriteHeader(http.StatusNoContent)
	}))
	api.HandleFunc("GET /api/v1/history", func(w http.ResponseWriter, r *http.Request) {
		recs, err := n.sm.History()
		if err != nil {
			writeErr(w, err)
			return
		}
		if recs == nil {
			recs = []session.Record{}
		}
		writeJSON(w, recs)
	})
	api.HandleFunc("GET /api/v1/stats", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.sm.Stats(n.now())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, st)
	})
}

func (n *Node) withSession(f func(http.ResponseWriter, *http.Request, *session.Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := n.sm.Get(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, "no live session for booking "+r.PathValue("id"))
			return
		}
		f(w, r, s)
	}
}

func writeSessionErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, session.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, session.ErrBrowserNoNetwork):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, session.ErrEnded), errors.Is(err, session.ErrWrongPhase), errors.Is(err, session.ErrNotConnected):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
