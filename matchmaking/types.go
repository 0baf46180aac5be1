package matchmaking

import "time"

// Kind says how a booking's start time was chosen.
type Kind string

const (
	// KindScheduled sits on the quarter-hour grid, up to 14 days ahead.
	KindScheduled Kind = "scheduled"
	// KindNow starts as soon as a partner is matched.
	KindNow Kind = "now"
)

// State is where a booking is in its life.
type State string

const (
	StateSearching State = "searching"
	StateMatched   State = "matched"
	StateCancelled State = "cancelled"
	StateDone      State = "done"
)

// Activity is what the user will be doing during the session.
type Activity string

const (
	ActivityDesk     Activity = "desk"
	ActivityMoving   Activity = "moving"
	ActivityAnything Activity = "anything"
)

// Booking is the user's own booking, as stored and as the API shows it.
type Booking struct {
	ID          string    `json:"id"`
	Start       time.Time `json:"start"`
	DurationMin int       `json:"duration_min"`
	Kind        Kind      `json:"kind"`
	State       State     `json:"state"`
	Partner     string    `json:"partner"`
	PartnerName string    `json:"partner_name"`
	Activity    Activity  `json:"activity"`
	Quiet       bool      `json:"quiet"`
	Goal        string    `json:"goal"`
	// With asks for one named peer only.
	With string `json:"with,omitempty"`
	// Scope, Circle and OpenAfterMin say who may match it (circles.go):
	// anyone, members of Circle (a circle ID; "" is every circle the node
	// is in), or members first and anyone OpenAfterMin minutes after
	// booking.
	Scope        Scope  `json:"scope,omitempty"`
	Circle       string `json:"circle,omitempty"`
	OpenAfterMin int    `json:"open_after_min,omitempty"`
	// Note tells the user what last happened, e.g. why a partner cancelled.
	Note string `json:"note,omitempty"`
	// PartnerBooking is the partner's booking ID, used on the wire.
	PartnerBooking string `json:"partner_booking,omitempty"`
	// Confirmed is set once the partner has acknowledged the match; an
	// unconfirmed match is re-confirmed with the partner until settled.
	Confirmed bool `json:"confirmed"`
	// PartnerAddrs is where the partner could be reached when the match
	// was made: a node that restarts dials it to re-check the match.
	PartnerAddrs []string `json:"partner_addrs,omitempty"`
	// CancelUnsent: the user cancelled this match and the partner has not
	// acknowledged it yet; the Cancel is re-sent until it has.
	CancelUnsent bool      `json:"cancel_unsent,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// End is when the session ends.
func (b Booking) End() time.Time { return b.Start.Add(time.Duration(b.DurationMin) * time.Minute) }

// Live reports whether the booking still occupies its time.
func (b Booking) Live() bool { return b.State == StateSearching || b.State == StateMatched }

// BookRequest asks for a new booking.
type BookRequest struct {
	// At is the start for a scheduled booking; ignored for "now".
	At          time.Time `json:"at"`
	DurationMin int       `json:"duration_min"`
	Kind        Kind      `json:"kind"`
	Activity    Activity  `json:"activity"`
	Quiet       bool      `json:"quiet"`
	Goal        string    `json:"goal"`
	With        string    `json:"with,omitempty"`
	// Scope: "anyone" (or "" for the node's default), "circle" or
	// "circle-first"; Circle names a circle by ID or name ("" is every
	// circle); OpenAfterMin is the wait of "circle-first" (default 10).
	Scope        Scope  `json:"scope,omitempty"`
	Circle       string `json:"circle,omitempty"`
	OpenAfterMin int    `json:"open_after_min,omitempty"`
}

// BoardOffer is another peer's open offer as the board shows it.
type BoardOffer struct {
	Owner       string    `json:"owner"`
	Name        string    `json:"name"`
	BookingID   string    `json:"booking_id"`
	Start       time.Time `json:"start"`
	DurationMin int       `json:"duration_min"`
	Kind        Kind      `json:"kind"`
	Activity    Activity  `json:"activity"`
	Quiet       bool      `json:"quiet"`
	Expires     time.Time `json:"expires"`
	Favourite   bool      `json:"favourite"`
	// Circles names the owner's circles this node shares with it.
	Circles []string `json:"circles,omitempty"`
}

// Person is what this node remembers about another peer.
type Person struct {
	ID           string    `json:"id"`
	Name         string    `json:"name,omitempty"`
	Favourite    bool      `json:"favourite"`
	Blocked      bool      `json:"blocked"`
	SnoozedUntil time.Time `json:"snoozed_until,omitzero"`
}

// Avoided reports whether the person must not be matched at time now.
func (p Person) Avoided(now time.Time) bool { return p.Blocked || now.Before(p.SnoozedUntil) }
