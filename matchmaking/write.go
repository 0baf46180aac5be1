package matchmaking

import (
	"fmt"
	"sync"
)

// Booking writes and the main lock.
//
// A synced badger write takes a fraction of a millisecond on an idle disk
// and far longer on a busy one, so it never happens under s.mu, which every
// negotiation, board read and API call takes. A change of a booking goes in
// three steps (update):
//
//  1. decide, under s.mu, from the committed booking;
//  2. write the new booking to badger, without s.mu;
//  3. commit it to memory, under s.mu, only if the write succeeded.
//
// The booking's own write lock, held from step 1 to step 3, serialises the
// changes of one booking, so each is decided on the committed state, which
// is what is on disk; a failed write commits nothing, so memory and disk
// still agree. While a change is being written the booking is in s.pending:
// a proposal to it is answered "busy", and overlap checks count its pending
// version as well as its committed one, so two bookings decided at once
// cannot both take one time. Other bookings' negotiations wait on s.mu for
// a decision or a commit, never on the disk.
//
// Lock order: a booking's write lock before s.mu; never take a write lock
// while holding s.mu.

// writeLock is one booking's write lock, dropped once nobody holds or waits
// for it.
type writeLock struct {
	mu   sync.Mutex
	refs int // holders and waiters, under Service.wlMu
}

// lockBooking takes booking id's write lock and returns its release.
func (s *Service) lockBooking(id string) (unlock func()) {
	s.wlMu.Lock()
	l := s.wlocks[id]
	if l == nil {
		l = &writeLock{}
		s.wlocks[id] = l
	}
	l.refs++
	s.wlMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.wlMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.wlocks, id)
		}
		s.wlMu.Unlock()
	}
}

// update changes booking id. decide runs under s.mu with a copy of the
// committed booking (nil if there is none) and returns the booking to
// store, or nil to leave it as it is; its error is returned as is. The
// booking is then written (synced) without s.mu, and committed to memory
// and published (OnBooking) once stored. update returns the stored
// booking, or nil if decide changed nothing or the write failed (then with
// the error, and memory is as before).
func (s *Service) update(id string, decide func(cur *Booking) (*Booking, error)) (*Booking, error) {
	unlock := s.lockBooking(id)
	defer unlock()
	s.mu.Lock()
	var cur *Booking
	if b, ok := s.bookings[id]; ok {
		cp := *b
		cur = &cp
	}
	nb, err := decide(cur)
	if err != nil || nb == nil {
		s.mu.Unlock()
		return nil, err
	}
	nb.ID = id
	nb.UpdatedAt = s.now()
	s.pending[id] = *nb
	s.mu.Unlock()

	err = s.db.put(bookingPrefix+id, nb)

	s.mu.Lock()
	delete(s.pending, id)
	if err == nil {
		cp := *nb
		s.trackLocked(s.bookings[id], cp)
		s.bookings[id] = &cp
	}
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("saving booking: %w", err)
	}
	// Still under the booking's write lock: OnBooking sees one booking's
	// changes in the order they were stored.
	s.cfg.OnBooking(*nb)
	return nb, nil
}
