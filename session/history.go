package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Everything this package stores sits under "session/", so it can share
// the node's database.
const (
	recordPrefix = "session/record/"
	livePrefix   = "session/live/"
)

// matchKey names one match of a booking in the store: a booking freed by
// a cancel can be matched again with someone else, and the new match's
// session must neither resume the old one's state nor count as recorded
// because the old one was. Stores from before matches were told apart
// keyed by booking ID alone; those keys are still read.
func matchKey(b Booking) string {
	if b.PartnerBooking == "" {
		return b.ID
	}
	return b.ID + "/" + b.PartnerBooking
}

// liveState is what an open session keeps across a node restart, so the
// partner is not taken for a no-show and the receipt keeps the first
// joined-at time.
type liveState struct {
	JoinedAt time.Time `json:"joined_at,omitzero"`
	Goal     string    `json:"goal"`
	// ClockOffsetMs is the answerer's last measured offset to the
	// offerer's clock (the session clock), so a restart keeps the
	// schedule until it measures again; nil if never measured.
	ClockOffsetMs *int64 `json:"clock_offset_ms,omitempty"`
}

func saveLive(db *badger.DB, b Booking, l liveState) error {
	data, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("encoding live session state: %w", err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(livePrefix+matchKey(b)), data) }); err != nil {
		return fmt.Errorf("saving live session state: %w", err)
	}
	return nil
}

func deleteLive(db *badger.DB, b Booking) error {
	return db.Update(func(txn *badger.Txn) error { return deleteLiveTxn(txn, b) })
}

func deleteLiveTxn(txn *badger.Txn, b Booking) error {
	if err := txn.Delete([]byte(livePrefix + matchKey(b))); err != nil {
		return err
	}
	return txn.Delete([]byte(livePrefix + b.ID)) // an old store's key
}

func loadLive(db *badger.DB, b Booking) (liveState, bool, error) {
	var l liveState
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(livePrefix + matchKey(b)))
		if errors.Is(err, badger.ErrKeyNotFound) {
			it, err = txn.Get([]byte(livePrefix + b.ID)) // an old store's key
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return json.Unmarshal(v, &l) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("loading live session state: %w", err)
	}
	return l, true, nil
}

// saveRecord stores the record of booking b's finished session and drops
// its live state, in one transaction.
func saveRecord(db *badger.DB, b Booking, r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding record: %w", err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := deleteLiveTxn(txn, b); err != nil {
			return err
		}
		return txn.Set([]byte(recordPrefix+matchKey(b)), data)
	})
	if err != nil {
		return fmt.Errorf("saving record: %w", err)
	}
	return nil
}

// hasRecord reports whether the session of booking b's match is in the
// history.
func hasRecord(db *badger.DB, b Booking) (bool, error) {
	found := false
	err := db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(recordPrefix + matchKey(b))); err == nil {
			found = true
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		// An old store's key: the record is this match's if it names the
		// same partner booking.
		it, err := txn.Get([]byte(recordPrefix + b.ID))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			found = b.PartnerBooking == "" || r.PartnerBooking == "" || r.PartnerBooking == b.PartnerBooking
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("looking up session record: %w", err)
	}
	return found, nil
}

func loadRecords(db *badger.DB) ([]Record, error) {
	var out []Record
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(recordPrefix), PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r Record
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				return fmt.Errorf("decoding %s: %w", it.Item().Key(), err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading history: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.After(out[j].Start) })
	return out, nil
}

// Stats sums up the history.
type Stats struct {
	// Sessions counts sessions where the partner came; ThisWeek those in
	// the current week (weeks start on Monday, in the clock's time zone).
	Sessions int `json:"sessions"`
	ThisWeek int `json:"this_week"`
	// PerWeek averages Sessions over the weeks since the first one.
	PerWeek float64 `json:"per_week"`
	// MinutesFocused is the time spent with a partner, booked time only,
	// each session rounded to the nearest minute.
	MinutesFocused int `json:"minutes_focused"`
	// CheckIns and Done count our check-ins and the "done" ones; DoneRatio
	// is Done / CheckIns.
	CheckIns  int     `json:"check_ins"`
	Done      int     `json:"done"`
	DoneRatio float64 `json:"done_ratio"`
	// NoShows counts partners who never came.
	NoShows int `json:"no_shows"`
	// Streak is the number of consecutive weeks with a session, up to this
	// week (or last week, while this one has none yet).
	Streak int `json:"streak_weeks"`
}

func weekOf(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc)
	y, m, d := t.Date()
	return time.Date(y, m, d-(int(t.Weekday())+6)%7, 0, 0, 0, 0, loc)
}

func weekKey(w time.Time) string { return w.Format("2006-01-02") }

func computeStats(recs []Record, now time.Time) Stats {
	var st Stats
	loc := now.Location()
	thisWeek := weekOf(now, loc)
	weeks := map[string]int{}
	var first time.Time
	for _, r := range recs {
		if r.NoShow {
			st.NoShows++
		}
		if !r.Met {
			continue
		}
		st.Sessions++
		w := weekOf(r.Start, loc)
		weeks[weekKey(w)]++
		if first.IsZero() || w.Before(first) {
			first = w
		}
		if w.Equal(thisWeek) {
			st.ThisWeek++
		}
		from, to := r.Start, r.End()
		if r.JoinedAt.After(from) {
			from = r.JoinedAt
		}
		if !r.LeftAt.IsZero() && r.LeftAt.Before(to) {
			to = r.LeftAt
		}
		if to.After(from) {
			// Rounded, not cut: a focus-now session starts at the match
			// and the partner joins seconds later; 24:57 together is the
			// full 25 minutes, not 24.
			st.MinutesFocused += int(to.Sub(from).Round(time.Minute) / time.Minute)
		}
		if r.CheckIn != nil {
			st.CheckIns++
			if r.CheckIn.Outcome == OutcomeDone {
				st.Done++
			}
		}
	}
	if st.CheckIns > 0 {
		st.DoneRatio = float64(st.Done) / float64(st.CheckIns)
	}
	if st.Sessions > 0 {
		n := 1
		for w := first; w.Before(thisWeek); w = w.AddDate(0, 0, 7) {
			n++
		}
		st.PerWeek = float64(st.Sessions) / float64(n)
	}
	w := thisWeek
	if weeks[weekKey(w)] == 0 {
		w = w.AddDate(0, 0, -7)
	}
	for weeks[weekKey(w)] > 0 {
		st.Streak++
		w = w.AddDate(0, 0, -7)
	}
	return st
}
