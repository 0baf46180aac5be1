// Package apiv1 holds the JSON types of the node's local HTTP API
// (/api/v1). The daemon and the CLI client share them; nothing here runs.
package apiv1

import (
	"encoding/json"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/session"
)

// Status is GET /api/v1/status.
type Status struct {
	PeerID         string   `json:"peer_id"`
	Name           string   `json:"name"`
	Addrs          []string `json:"addrs"`
	ConnectedPeers int      `json:"connected_peers"`
	APIURL         string   `json:"api_url"`
	DataDir        string   `json:"data_dir"`
	Version        string   `json:"version"`
	LocalOnly      bool     `json:"local_only"`
	// Now is the node's clock (bookings and sessions follow it); ClockRate
	// is how fast it runs against real time (above 1 in `tandem demo
	// --short`). The UI computes countdowns from these, not its own clock.
	Now       time.Time `json:"now"`
	ClockRate float64   `json:"clock_rate"`
	// Demo: this is the user's node of `tandem demo`.
	Demo bool `json:"demo"`
	// TURNHelper says whether this node offers a STUN server and TURN
	// relay to other Tandem nodes: "off", "waiting: ...", "not offered:
	// why" or "offering URLS".
	TURNHelper string `json:"turn_helper"`
	// Identity says whether this node's identity is ready to be seen by
	// other peers: a new identity computes its stamp first (docs/
	// protocol.md, once, seconds), and its open offers go out then.
	Identity Identity `json:"identity"`
}

// Identity is Status.Identity.
type Identity struct {
	// Ready: the identity stamp is there; offers are announced.
	Ready bool `json:"ready"`
	// Progress is, while not ready, the share of the stamp's expected
	// work done, 0 to 0.99 (finding one is luck: it may end earlier).
	Progress float64 `json:"progress"`
	// Text says it for people: "ready", or "preparing identity
	// (one-time, a few seconds): 40%".
	Text string `json:"text"`
}

// Peer is one entry of GET /api/v1/peers.
type Peer struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`
	LatencyMS float64  `json:"latency_ms"`
	Direction string   `json:"direction"`
}

// Event is one server-sent event on GET /api/v1/events.
type Event struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Event types.
const (
	EventPeerConnected    = "peer-connected"
	EventPeerDisconnected = "peer-disconnected"
	EventBooking          = "booking"
	EventBoard            = "board"
	// EventSession carries a session.Event: phases (chimes), partner
	// presence, goals, chat, check-ins, rematch offers.
	EventSession = "session"
	// EventClock carries a Clock: the node's clock changed pace (a demo
	// whose clock a test slows down); countdowns re-sync.
	EventClock = "clock"
	// EventIdentity carries an Identity: the identity stamp a new node
	// computes at its first start is ready, and its offers go out.
	EventIdentity = "identity"
)

// Clock is the node's time and how fast it runs, as in Status.
type Clock struct {
	Now       time.Time `json:"now"`
	ClockRate float64   `json:"clock_rate"`
}

// SessionAction is the body of POST /api/v1/sessions/{id}/{goal,chat,
// presence,checkin,leave}; each uses the fields its action needs.
type SessionAction struct {
	Text     string `json:"text,omitempty"`     // goal, chat
	Presence string `json:"presence,omitempty"` // here, away, camera-off
	Outcome  string `json:"outcome,omitempty"`  // done, partly, not
	Note     string `json:"note,omitempty"`     // check-in note
	Reason   string `json:"reason,omitempty"`   // leave
}

// APIFile is the content of the api.json file in the data dir.
type APIFile struct {
	URL   string `json:"url"`
	Token string `json:"token"`
	PID   int    `json:"pid"`
}

// Token is the answer of POST /api/v1/token/rotate: the new API token and
// the web UI login link that carries it.
type Token struct {
	Token    string `json:"token"`
	LoginURL string `json:"login_url"`
}

// Settings is GET/PUT /api/v1/settings: the user's UI settings, kept on
// the node. `tandem up --desktop-notify` follows the notification ones too.
type Settings struct {
	// DefaultDurationMin, DefaultActivity and DefaultQuiet prefill the
	// booking dialog and are what "Focus now" books.
	DefaultDurationMin int                  `json:"default_duration_min"`
	DefaultActivity    matchmaking.Activity `json:"default_activity"`
	DefaultQuiet       bool                 `json:"default_quiet"`
	// DefaultScope and DefaultOpenAfterMin prefill who a new booking may
	// match: "anyone", "circle" or "circle-first" (after that many
	// minutes, anyone). The config's circle_scope is the default.
	DefaultScope        matchmaking.Scope `json:"default_scope"`
	DefaultOpenAfterMin int               `json:"default_open_after_min"`
	// Sounds: the chimes at the start, 1 minute before the end and at the end.
	Sounds bool `json:"sounds"`
	// NotifyReminder: a notification RemindBeforeMin minutes before a
	// session; NotifyPartnerJoined: one when the partner arrives;
	// NotifyMatch: one when a partner is found for a booking, or cancels.
	NotifyReminder      bool `json:"notify_reminder"`
	RemindBeforeMin     int  `json:"remind_before_min"`
	NotifyPartnerJoined bool `json:"notify_partner_joined"`
	NotifyMatch         bool `json:"notify_match"`
	// AutoRematch: when the partner is 2 minutes late, find a new one
	// without asking. The config file's auto_rematch is the default until
	// the user saves settings.
	AutoRematch bool `json:"auto_rematch"`
}

// Calendar is GET /api/v1/calendar and POST /api/v1/calendar/rotate: the
// secret URL of the iCalendar feed of the user's bookings, as http:// and
// as webcal:// (which calendar apps open as a subscription).
type Calendar struct {
	FeedURL   string `json:"feed_url"`
	WebcalURL string `json:"webcal_url"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Booking, Offer and the requests are the matchmaking types as they are.
type (
	Booking     = matchmaking.Booking
	Offer       = matchmaking.BoardOffer
	BookRequest = matchmaking.BookRequest
	Person      = matchmaking.Person
	Activity    = matchmaking.Activity
	// Session is a live session's state; SessionEvent one of its events.
	Session      = session.Snapshot
	SessionEvent = session.Event
	Record       = session.Record
	Stats        = session.Stats
	Phase        = session.Phase
	ChatLine     = session.ChatLine
	// ConnectReport is Session.Connect: how connecting to the partner goes.
	ConnectReport = session.ConnectReport
	// ConnectPath is Session.Connect.Path: how a connected session flows.
	ConnectPath = session.ConnectPath
)

// Session phases, event types (SessionEvent.Type) and sides
// (SessionEvent.From), as the session package names them.
const (
	PhaseUpcoming = session.PhaseUpcoming
	PhaseLobby    = session.PhaseLobby
	PhaseFocus    = session.PhaseFocus
	PhaseWarning  = session.PhaseWarning
	PhaseCheckin  = session.PhaseCheckin
	PhaseDone     = session.PhaseDone

	SessionPhase               = session.EventPhase
	SessionPartnerJoined       = session.EventPartnerJoined
	SessionPartnerDisconnected = session.EventPartnerDisconnected
	SessionPartnerReconnected  = session.EventPartnerReconnected
	SessionPathChanged         = session.EventPathChanged
	SessionCapacity            = session.EventCapacity
	SessionCouldNotConnect     = session.EventCouldNotConnect
	SessionRematchOffered      = session.EventRematchOffered
	SessionNoShow              = session.EventNoShow
	SessionGoal                = session.EventGoal
	SessionChat                = session.EventChat
	SessionPresence            = session.EventPresence
	SessionMedia               = session.EventMedia
	SessionCheckIn             = session.EventCheckIn
	SessionPartnerLeft         = session.EventPartnerLeft
	SessionEnded               = session.EventEnded

	FromSelf    = session.FromSelf
	FromPartner = session.FromPartner

	// Session.Connect.State values.
	ConnectWaiting         = session.ConnectWaiting
	ConnectConnecting      = session.ConnectConnecting
	ConnectConnected       = session.ConnectConnected
	ConnectCouldNotConnect = session.ConnectCouldNotConnect

	// ConnectPath.Kind values.
	PathDirect  = session.PathDirect
	PathRelay   = session.PathRelay
	ConnectOver = session.ConnectOver
)

// CancelRequest is the body of POST /api/v1/bookings/{id}/cancel.
type CancelRequest struct {
	Reason string `json:"reason"`
}

// PersonRequest is the body of POST /api/v1/people/{peer}.
type PersonRequest struct {
	// Action is favorite, unfavorite, block, unblock or snooze.
	Action string `json:"action"`
	// SnoozeFor is a Go duration or a number of days ("7d").
	SnoozeFor string `json:"snooze_for,omitempty"`
}

// Profile is GET/PUT /api/v1/profile.
type Profile struct {
	Name string `json:"name"`
}

// Circle is a private circle the node is in (GET /api/v1/circles), with
// its invite and the members the node has seen; CircleMember is one.
type (
	Circle       = matchmaking.Circle
	CircleMember = matchmaking.CircleMember
	Scope        = matchmaking.Scope
)

// CircleRequest is the body of POST /api/v1/circles (Name) and POST
// /api/v1/circles/join (Invite: a code or a tandem:// link; Name, if set,
// names the circle on this node).
type CircleRequest struct {
	Name   string `json:"name,omitempty"`
	Invite string `json:"invite,omitempty"`
}

// EventCircles: the node joined or left a circle.
const EventCircles = "circles"
