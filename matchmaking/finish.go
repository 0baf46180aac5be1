package matchmaking

import "fmt"

// Finish marks a matched booking done before its booked end: its session
// is over (the partner never came, or someone left early), so its time is
// free again for a new booking. The partner is not told: its own session
// ended too, and a later re-check of the match is answered "no such
// match", which frees the partner's booking as well.
//
// partnerBooking names the match the session belonged to: a booking that
// was freed and matched again with someone else in the meantime is left
// alone (ErrConflict), since the session that ended was not this match's.
func (s *Service) Finish(id, partnerBooking, note string) (Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bookings[id]
	if !ok {
		return Booking{}, fmt.Errorf("%w: booking %q", ErrNotFound, id)
	}
	if b.State != StateMatched {
		return *b, nil
	}
	if b.PartnerBooking != partnerBooking {
		return *b, fmt.Errorf("%w: booking %s is matched with another partner now", ErrConflict, id)
	}
	nb := *b
	nb.State = StateDone
	if note != "" {
		nb.Note = note
	}
	if err := s.saveLocked(&nb); err != nil {
		return Booking{}, err
	}
	return nb, nil
}
