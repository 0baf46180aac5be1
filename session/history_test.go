package session

import (
	"testing"
	"time"
)

func TestPhaseAt(t *testing.T) {
	start := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	b := Booking{Start: start, DurationMin: 50, Kind: KindScheduled}
	for _, c := range []struct {
		at   time.Duration // from the start
		want Phase
		next time.Duration
	}{
		{-10 * time.Minute, PhaseUpcoming, -5 * time.Minute},
		{-5 * time.Minute, PhaseLobby, 0},
		{-time.Second, PhaseLobby, 0},
		{0, PhaseFocus, 49 * time.Minute},
		{49 * time.Minute, PhaseWarning, 50 * time.Minute},
		{50 * time.Minute, PhaseCheckin, 55 * time.Minute},
		{3 * time.Hour, PhaseCheckin, 55 * time.Minute},
	} {
		now := start.Add(c.at)
		if got := phaseAt(b, now); got != c.want {
			t.Errorf("at %v: %s, want %s", c.at, got, c.want)
		}
		if got := nextPhaseAt(b, now); !got.Equal(start.Add(c.next)) {
			t.Errorf("next after %v: %v, want %v", c.at, got, start.Add(c.next))
		}
	}
	now := b
	now.Kind = KindNow
	if got := phaseAt(now, start.Add(-time.Hour)); got != PhaseLobby {
		t.Errorf("a now session's lobby opens at once, got %s", got)
	}
}

func TestStats(t *testing.T) {
	loc := time.FixedZone("UTC+2", 2*3600)
	now := time.Date(2026, 3, 11, 12, 0, 0, 0, loc) // a Wednesday
	rec := func(daysAgo int, done bool, mins int) Record {
		start := now.AddDate(0, 0, -daysAgo).Add(-time.Hour)
		r := Record{Start: start, DurationMin: 50, Met: true, JoinedAt: start,
			LeftAt: start.Add(time.Duration(mins) * time.Minute)}
		if done {
			r.CheckIn = &CheckIn{Outcome: OutcomeDone}
		} else {
			r.CheckIn = &CheckIn{Outcome: OutcomeNot}
		}
		return r
	}
	recs := []Record{
		rec(0, true, 50),  // this week
		rec(1, false, 20), // this week, left after 20 minutes
		rec(8, true, 50),  // last week
		rec(14, true, 50), // two weeks ago
		rec(28, true, 50), // four weeks ago: the streak broke before it
		{Start: now, DurationMin: 60, NoShow: true}, // never met
	}
	st := computeStats(recs, now)
	want := Stats{Sessions: 5, ThisWeek: 2, MinutesFocused: 220, CheckIns: 5, Done: 4, DoneRatio: 0.8, NoShows: 1, Streak: 3}
	want.PerWeek = 5.0 / 5 // five weeks from the first one to this one
	if st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
	// Early in a week without a session yet, last week's streak still counts.
	monday := time.Date(2026, 3, 16, 8, 0, 0, 0, loc)
	if st := computeStats(recs, monday); st.Streak != 3 || st.ThisWeek != 0 {
		t.Fatalf("streak on Monday: %+v", st)
	}
	if st := computeStats(nil, now); st != (Stats{}) {
		t.Fatalf("empty history: %+v", st)
	}
}

// TestStatsFullSessionMinutes: a focus-now session starts when the match
// is made and the partner's video connects a few seconds later; the full
// 25 minutes count as 25, not 24 (minutes are rounded, not cut).
func TestStatsFullSessionMinutes(t *testing.T) {
	start := time.Date(2026, 3, 11, 12, 0, 0, 0, time.UTC)
	r := Record{Start: start, DurationMin: 25, Met: true, JoinedAt: start.Add(3 * time.Second),
		LeftAt: start.Add(25*time.Minute + 2*time.Second)}
	if got := computeStats([]Record{r}, start.Add(time.Hour)).MinutesFocused; got != 25 {
		t.Errorf("a full 25-minute session counts %d minutes, want 25", got)
	}
	// Leaving early counts what was spent, to the nearest minute.
	r.LeftAt = start.Add(10*time.Minute + 40*time.Second)
	if got := computeStats([]Record{r}, start.Add(time.Hour)).MinutesFocused; got != 11 {
		t.Errorf("10:37 together counts %d minutes, want 11", got)
	}
}
