package matchmaking

import (
	"fmt"
	"slices"
	"time"

	"github.com/tandem-cowork/tandem/session/usertext"
)

// Booking rules.
const (
	Grid         = 15 * time.Minute
	MaxAhead     = 14 * 24 * time.Hour
	MaxGoalLen   = usertext.MaxGoal
	MaxNameLen   = usertext.MaxName
	maxIDLen     = 64
	nowSearchTTL = 15 * time.Minute
)

// Durations are the session lengths on offer, in minutes.
var Durations = []int{25, 50, 75}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// checkText applies the user text rules (usertext) to a request field.
func checkText(f usertext.Field, s string) error {
	if err := f.Check(s); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// CheckDuration accepts 25, 50 or 75 minutes.
func CheckDuration(min int) error {
	if !slices.Contains(Durations, min) {
		return invalidf("duration must be 25, 50 or 75 minutes, not %d", min)
	}
	return nil
}

// CheckStart accepts a scheduled start on the quarter-hour grid, not in the
// past and at most 14 days ahead.
func CheckStart(start, now time.Time) error {
	if start.IsZero() {
		return invalidf("a start time is needed")
	}
	if start.Second() != 0 || start.Nanosecond() != 0 || start.Unix()%int64(Grid/time.Second) != 0 {
		return invalidf("start %s is not on the quarter-hour grid (:00 :15 :30 :45)", start.Format("15:04:05"))
	}
	if start.Before(now) {
		return invalidf("start %s is in the past", start.Format(time.RFC3339))
	}
	if start.After(now.Add(MaxAhead)) {
		return invalidf("start %s is more than 14 days ahead", start.Format(time.RFC3339))
	}
	return nil
}

// CheckActivity accepts desk, moving or anything ("" means anything).
func CheckActivity(a Activity) (Activity, error) {
	switch a {
	case "":
		return ActivityAnything, nil
	case ActivityDesk, ActivityMoving, ActivityAnything:
		return a, nil
	}
	return "", invalidf("activity must be desk, moving or anything, not %q", a)
}

// compatibleActivity: "anything" goes with every activity.
func compatibleActivity(a, b Activity) bool {
	return a == ActivityAnything || b == ActivityAnything || a == b
}

// interval is the time a booking occupies as seen at now: a "now" booking
// that is still searching would start at once.
func interval(b Booking, now time.Time) (time.Time, time.Time) {
	if b.Kind == KindNow && b.State == StateSearching {
		return now, now.Add(time.Duration(b.DurationMin) * time.Minute)
	}
	return b.Start, b.End()
}

func overlaps(s1, e1, s2, e2 time.Time) bool { return s1.Before(e2) && s2.Before(e1) }
