package session

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/session/usertext"
)

// Kinds of booking, as matchmaking names them.
const (
	KindScheduled = "scheduled"
	KindNow       = "now"
)

// Booking is what a session needs to know about one matched booking.
type Booking struct {
	// ID is our booking ID; PartnerBooking the partner's (learnt from the
	// partner's hello when empty, but then not checked on Join).
	ID             string `json:"id"`
	PartnerBooking string `json:"partner_booking,omitempty"`
	// Partner is the only peer that may join this session.
	Partner     peer.ID `json:"partner"`
	PartnerName string  `json:"partner_name,omitempty"`
	// Name is our display name, sent in hello.
	Name string `json:"name,omitempty"`
	// Goal is our initial goal; SetGoal changes it.
	Goal  string    `json:"goal,omitempty"`
	Start time.Time `json:"start"`
	// DurationMin is the booked focus time in minutes (25, 50, 75).
	DurationMin int `json:"duration_min"`
	// Kind is KindScheduled or KindNow; a "now" session has its lobby open
	// at once.
	Kind string `json:"kind"`
}

// End is when the focus time ends.
func (b Booking) End() time.Time { return b.Start.Add(time.Duration(b.DurationMin) * time.Minute) }

func (b Booking) validate(self peer.ID) error {
	switch {
	case b.ID == "" || len(b.ID) > maxIDLen:
		return fmt.Errorf("%w: booking id length %d", ErrInvalid, len(b.ID))
	case len(b.PartnerBooking) > maxIDLen:
		return fmt.Errorf("%w: partner booking id too long", ErrInvalid)
	case b.Partner.Validate() != nil || b.Partner == self:
		return fmt.Errorf("%w: partner %q", ErrInvalid, b.Partner)
	case b.Start.IsZero() || b.DurationMin < 1 || b.DurationMin > 240:
		return fmt.Errorf("%w: start %v duration %d min", ErrInvalid, b.Start, b.DurationMin)
	case b.Kind != KindScheduled && b.Kind != KindNow && b.Kind != "":
		return fmt.Errorf("%w: kind %q", ErrInvalid, b.Kind)
	}
	if err := checkText(usertext.Name, b.Name); err != nil {
		return err
	}
	if err := checkText(usertext.Field{Name: "partner name", Max: usertext.MaxName}, b.PartnerName); err != nil {
		return err
	}
	return checkText(usertext.Goal, b.Goal)
}

// checkText applies the user text rules (usertext: length, UTF-8, no
// control or bidi formatting characters) to s, wrapping ErrInvalid.
func checkText(f usertext.Field, s string) error {
	if err := f.Check(s); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Phase is where the session is in its schedule.
type Phase string

const (
	PhaseUpcoming Phase = "upcoming" // before the lobby opens
	PhaseLobby    Phase = "lobby"    // LobbyBefore the start
	PhaseFocus    Phase = "focus"    // from the start (chime)
	PhaseWarning  Phase = "warning"  // WarningBefore the end (warning sound)
	PhaseCheckin  Phase = "checkin"  // from the end (chime)
	PhaseDone     Phase = "done"     // over; the record is stored
)

// phaseAt is the schedule: the phase of booking b at time now (never done;
// that one is reached by events).
func phaseAt(b Booking, now time.Time) Phase {
	end := b.End()
	switch {
	case b.Kind != KindNow && now.Before(b.Start.Add(-LobbyBefore)):
		return PhaseUpcoming
	case now.Before(b.Start):
		return PhaseLobby
	case now.Before(end.Add(-WarningBefore)):
		return PhaseFocus
	case now.Before(end):
		return PhaseWarning
	}
	return PhaseCheckin
}

// nextPhaseAt is when the phase after phaseAt(b, now) begins.
func nextPhaseAt(b Booking, now time.Time) time.Time {
	switch phaseAt(b, now) {
	case PhaseUpcoming:
		return b.Start.Add(-LobbyBefore)
	case PhaseLobby:
		return b.Start
	case PhaseFocus:
		return b.End().Add(-WarningBefore)
	case PhaseWarning:
		return b.End()
	}
	return b.End().Add(CheckinWindow)
}

// Presence is what a user shows their partner.
type Presence string

const (
	PresenceHere      Presence = "here"
	PresenceAway      Presence = "away"
	PresenceCameraOff Presence = "camera-off"
)

// Outcome is a check-in answer: did you finish what you set out to do?
type Outcome string

const (
	OutcomeDone   Outcome = "done"
	OutcomePartly Outcome = "partly"
	OutcomeNot    Outcome = "not"
)

// CheckIn is one side's check-in.
type CheckIn struct {
	Outcome Outcome `json:"outcome"`
	Note    string  `json:"note,omitempty"`
}

// Who said or did something, in events and chat lines.
const (
	FromSelf    = "self"
	FromPartner = "partner"
)

// Event types.
const (
	EventPhase               = "phase"                // Phase set: play the chime
	EventPartnerJoined       = "partner-joined"       // first hello from the partner
	EventPartnerDisconnected = "partner-disconnected" // connection lost; reconnecting
	EventPartnerReconnected  = "partner-reconnected"  // back after a disconnect
	EventPathChanged         = "path-changed"         // the connection now flows another way (Path)
	EventCapacity            = "capacity"             // video paused or back on a slow relayed path (Text)
	EventCouldNotConnect     = "could-not-connect"    // no connection for CouldNotConnectAfter; Text says what was tried
	EventRematchOffered      = "rematch-offered"      // partner RematchAfter late
	EventNoShow              = "no-show"              // partner NoShowAfter late; the session ends
	EventGoal                = "goal"                 // Text is the new goal of From
	EventChat                = "chat"                 // Text from From
	EventPresence            = "presence"             // Presence of From
	EventMedia               = "media"                // Media of From (no video: "no camera")
	EventCheckIn             = "check-in"             // CheckIn of From
	EventPartnerLeft         = "partner-left"         // Text is the partner's reason
	EventReceipt             = "receipt"              // the partner's receipt arrived and verified
	EventEnded               = "ended"                // Record is stored (or nil: nothing to record)
)

// Event is one thing that happened in a session, for the API's event
// stream. Only the fields its Type names are set.
type Event struct {
	Type    string `json:"type"`
	Booking string `json:"booking"`
	// PartnerBooking is the partner's booking in the match the session
	// was opened for: a booking matched again with someone else has a
	// new session, and the old one's events must not act on the new match.
	PartnerBooking string    `json:"partner_booking,omitempty"`
	At             time.Time `json:"at"`
	From           string    `json:"from,omitempty"`
	Phase          Phase     `json:"phase,omitempty"`
	Text           string    `json:"text,omitempty"`
	Presence       Presence  `json:"presence,omitempty"`
	Media          *Media    `json:"media,omitempty"`
	CheckIn        *CheckIn  `json:"check_in,omitempty"`
	Record         *Record   `json:"record,omitempty"`
	// Path is how the session is connected (partner-joined,
	// partner-reconnected, path-changed).
	Path *ConnectPath `json:"path,omitempty"`
}

// Media says whether a side sends video and audio from a browser.
type Media struct {
	Video bool `json:"video"`
	Audio bool `json:"audio"`
}

// ChatLine is one chat message.
type ChatLine struct {
	From string    `json:"from"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// Party is one side of a session as this node sees it.
type Party struct {
	Name     string   `json:"name,omitempty"`
	Goal     string   `json:"goal,omitempty"`
	Presence Presence `json:"presence"`
	Media    Media    `json:"media"`
	CheckIn  *CheckIn `json:"check_in,omitempty"`
	// Left is set when this side left early; Reason says why.
	Left   bool   `json:"left,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Snapshot is the state of a session at one moment.
type Snapshot struct {
	Booking Booking `json:"booking"`
	Phase   Phase   `json:"phase"`
	// NextPhaseAt is when the schedule moves on (for countdowns), on
	// this node's clock.
	NextPhaseAt time.Time `json:"next_phase_at"`
	// ClockOffsetMs is how far the session clock (the offerer's, which
	// the schedule follows) is ahead of this node's clock; 0 on the
	// offerer and until measured. The booked start happens at
	// Booking.Start minus this offset on this node's clock.
	ClockOffsetMs int64 `json:"clock_offset_ms"`
	// Connected: the partner is connected now. Met: they joined at least
	// once; JoinedAt is when.
	Connected bool `json:"connected"`
	// Connect says how connecting to the partner goes: after
	// CouldNotConnectAfter without success its state is
	// "could-not-connect", with what was tried.
	Connect  ConnectReport `json:"connect"`
	Met      bool          `json:"met"`
	JoinedAt time.Time     `json:"joined_at,omitzero"`
	// Browser: a browser is attached to this node for this session.
	Browser bool       `json:"browser"`
	Self    Party      `json:"self"`
	Partner Party      `json:"partner"`
	Chat    []ChatLine `json:"chat"`
}

// Record is the history entry a session ends in.
type Record struct {
	BookingID      string    `json:"booking_id"`
	PartnerBooking string    `json:"partner_booking,omitempty"`
	Partner        peer.ID   `json:"partner"`
	PartnerName    string    `json:"partner_name,omitempty"`
	Kind           string    `json:"kind,omitempty"`
	Start          time.Time `json:"start"`
	DurationMin    int       `json:"duration_min"`
	// Met: the partner joined; JoinedAt is when, LeftAt when the session
	// ended for us.
	Met            bool      `json:"met"`
	JoinedAt       time.Time `json:"joined_at,omitzero"`
	LeftAt         time.Time `json:"left_at"`
	Goal           string    `json:"goal,omitempty"`
	PartnerGoal    string    `json:"partner_goal,omitempty"`
	CheckIn        *CheckIn  `json:"check_in,omitempty"`
	PartnerCheckIn *CheckIn  `json:"partner_check_in,omitempty"`
	// NoShow: the partner never came.
	NoShow             bool   `json:"no_show,omitempty"`
	LeftEarly          bool   `json:"left_early,omitempty"`
	LeaveReason        string `json:"leave_reason,omitempty"`
	PartnerLeftEarly   bool   `json:"partner_left_early,omitempty"`
	PartnerLeaveReason string `json:"partner_leave_reason,omitempty"`
	// Receipt and PartnerReceipt are signed attendance envelopes; open
	// them with VerifyReceipt (ours against our ID, theirs against Partner).
	Receipt        []byte `json:"receipt,omitempty"`
	PartnerReceipt []byte `json:"partner_receipt,omitempty"`
}

// End is the booked end.
func (r Record) End() time.Time { return r.Start.Add(time.Duration(r.DurationMin) * time.Minute) }
