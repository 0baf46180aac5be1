package matchmaking

import "fmt"

// Finish marks a matched booking done before its booked end: its session
// is over (the partner never came, or someone left early), so its time is
// free again for a new booking. The partner is not told: its own session
// ended too and finishes its side. A later re-check of the match is
// answered "confirmed" (the match happened), so the partner's booking is
// never freed to search again by it.
//
// partnerBooking names the match the session belonged to: a booking that
// was freed and matched again with someone else in the meantime is left
// alone (ErrConflict), since the session that ended was not this match's.
func (s *Service) Finish(id, partnerBooking, note string) (Booking, error) {
	var unchanged Booking
	nb, err := s.update(id, func(b *Booking) (*Booking, error) {
		switch {
		case b == nil:
			return nil, fmt.Errorf("%w: booking %q", ErrNotFound, id)
		case b.State != StateMatched:
			unchanged = *b
			return nil, nil
		case b.PartnerBooking != partnerBooking:
			return nil, fmt.Errorf("%w: booking %s is matched with another partner now", ErrConflict, id)
		}
		b.State = StateDone
		if note != "" {
			b.Note = note
		}
		return b, nil
	})
	if err != nil {
		return Booking{}, err
	}
	if nb == nil {
		return unchanged, nil
	}
	return *nb, nil
}
