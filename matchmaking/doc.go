// Package matchmaking is Tandem's peer-to-peer matcher: it validates
// booking requests against the quarter-hour grid, announces open slots as
// signed offer records over gossipsub, keeps a board of other peers' offers
// (with anti-entropy sync when a peer connects), and pairs bookings with a
// propose / accept / confirm negotiation over a direct libp2p stream.
//
// Invariants (see docs/protocol.md):
//  1. a node never holds two live bookings that overlap in time;
//  2. once both sides have settled, A's booking names B iff B's names A;
//  3. bookings are written to badger with synced writes before they are
//     acknowledged, and unsettled matches are reconciled on reconnect.
package matchmaking

import "errors"

// Sentinel errors callers branch on.
var (
	// ErrInvalid: the request breaks a booking rule (grid, duration, ...).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such booking.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request clashes with another booking.
	ErrConflict = errors.New("conflict")
)
