package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestDesktopCommand: what `tandem up --desktop-notify` would run, per
// platform, without running it.
func TestDesktopCommand(t *testing.T) {
	found := func(string) (string, error) { return "/usr/bin/notify-send", nil }
	missing := func(string) (string, error) { return "", errors.New("not found") }
	f := &fakeRunner{}
	send, err := commandNotifier("linux", found, f.run)
	if err != nil {
		t.Fatal(err)
	}
	if err := send(context.Background(), "Tandem: partner found", "-Bo for 14:00"); err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/notify-send", "--app-name=Tandem", "--icon=appointment-soon", "--", "Tandem: partner found", "-Bo for 14:00"}
	if len(f.ran) != 1 || !slices.Equal(f.ran[0], want) {
		t.Errorf("ran %q, want %q", f.ran, want)
	}
	if _, err := commandNotifier("linux", missing, f.run); err == nil || !strings.Contains(err.Error(), "notify-send") {
		t.Errorf("without notify-send: %v, want an error naming it", err)
	}
	mac := desktopCommand("darwin", missing, `Say "hi"`, `a\b "c"`)
	if want := []string{"osascript", "-e", `display notification "a\\b \"c\"" with title "Say \"hi\""`}; !slices.Equal(mac, want) {
		t.Errorf("macOS command %q, want %q", mac, want)
	}
}

type sentNotes struct {
	mu    sync.Mutex
	notes []string // "title|body"
}

func (s *sentNotes) send(_ context.Context, title, body string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, title+"|"+body)
	return nil
}

func (s *sentNotes) count(title, body string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.notes {
		if strings.HasPrefix(x, title+"|") && strings.Contains(x, body) {
			n++
		}
	}
	return n
}

// TestDesktopNotices: with the reminder (10 minutes) and match notices
// on in the settings, the notifier of `tandem up` tells of the match, of
// the session 9 minutes ahead on the node's clock (not 30), and of the
// partner's cancel, once each.
func TestDesktopNotices(t *testing.T) {
	clock := &nodetest.Clock{}
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Now, cfgB.Now = clock.Now, clock.Now
	cfgB.Name = "Bo"
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := client.New(a.APIURL(), a.Token()), client.New(b.APIURL(), b.Token())
	ctx, cancel := context.WithCancel(context.Background())
	st, err := ca.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.NotifyReminder, st.RemindBeforeMin, st.NotifyMatch = true, 10, true
	if _, err := ca.SetSettings(ctx, st); err != nil {
		t.Fatal(err)
	}
	sent := &sentNotes{}
	done := make(chan error, 1)
	d := newDesktopNotices(ca, a.Token, sent.send, nodetest.Logger(t, "info"))
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("notifier: %v", err)
		}
	})

	start := clock.Now().Truncate(15 * time.Minute).Add(45 * time.Minute)
	if _, err := ca.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: start, DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: start, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool { return sent.count("Tandem: partner found", "Bo") == 1 }, "the match notice")
	if n := sent.count("Tandem: your session starts soon", ""); n != 0 {
		t.Fatalf("%d reminders 30+ minutes before the start", n)
	}
	// A proposer counts itself matched before its Confirm arrives; the
	// clock jumps 36+ minutes below, and a Confirm that reaches a slow
	// acceptor after the jump finds its 10 s hold over. Both sides hold
	// the match first (a real clock does not jump mid-handshake).
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		bs, err := cb.Bookings(ctx)
		return err == nil && slices.ContainsFunc(bs, func(b apiv1.Booking) bool { return b.ID == bb.ID && b.State == "matched" })
	}, "Bo's side of the match")
	clock.Advance(start.Sub(clock.Now()) - 9*time.Minute)
	a.ClockChanged()
	nodetest.WaitFor(t, 30*time.Second, func() bool { return sent.count("Tandem: your session starts soon", "In 9 min") == 1 }, "the reminder")
	if _, err := cb.Cancel(ctx, bb.ID, "sick today"); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool { return sent.count("Tandem: your partner cancelled", "sick today") == 1 }, "the cancel notice")
	a.ClockChanged() // another check must not remind again
	if n := sent.count("Tandem: partner found", ""); n != 1 {
		t.Errorf("%d match notices, want 1: %q", n, sent.notes)
	}
}

// TestDesktopNoticesAfterTokenRotate: `tandem token rotate` while the node
// runs replaces the API token the notifier of `tandem up --desktop-notify`
// started with; its reminders still come (it takes the new token when the
// node refuses the old one), whether the rotation came before it watched
// the node's events or after.
func TestDesktopNoticesAfterTokenRotate(t *testing.T) {
	clock := &nodetest.Clock{}
	cfg := nodetest.Config(t)
	cfg.Now = clock.Now
	a := nodetest.Start(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	user := client.New(a.APIURL(), a.Token())
	st, err := user.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.NotifyReminder, st.RemindBeforeMin = true, 10
	if _, err := user.SetSettings(ctx, st); err != nil {
		t.Fatal(err)
	}
	first := clock.Now().Truncate(15 * time.Minute).Add(45 * time.Minute)
	second := first.Add(30 * time.Minute)
	for _, at := range []time.Time{first, second} {
		if _, err := user.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: at, DurationMin: 25}); err != nil {
			t.Fatal(err)
		}
	}
	sent := &sentNotes{}
	done := make(chan error, 1)
	d := newDesktopNotices(client.New(a.APIURL(), a.Token()), a.Token, sent.send, nodetest.Logger(t, "info"))
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("notifier: %v", err)
		}
	})
	// reminded moves the clock to 9 minutes before at and waits for the
	// n-th reminder. Each clock event makes the notifier check (one may
	// come before it is subscribed); it reminds once per booking.
	reminded := func(at time.Time, n int) {
		t.Helper()
		clock.Advance(at.Sub(clock.Now()) - 9*time.Minute)
		nodetest.WaitFor(t, 30*time.Second, func() bool {
			a.ClockChanged()
			return sent.count("Tandem: your session starts soon", "In 9 min") == n
		}, "reminder %d after the token was rotated", n)
	}

	// Rotated while the notifier starts: maybe before it watches events.
	if _, err := user.RotateToken(ctx); err != nil { // what `tandem token rotate` does
		t.Fatal(err)
	}
	reminded(first, 1)
	// Rotated again: the notifier is watching (it reminded after it
	// subscribed), and its next calls get 401.
	if _, err := user.RotateToken(ctx); err != nil {
		t.Fatal(err)
	}
	reminded(second, 2)
}

// TestDesktopMatchNoticeWaitsForConfirm: a booking whose node proposed
// counts as matched from its own write until the partner answers the
// Confirm, and that answer can take the match back ("no such match").
// The notice comes once the partner has acknowledged the match, never
// for one it did not; a cancel is told only of a match that was.
func TestDesktopMatchNoticeWaitsForConfirm(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t))
	c := client.New(a.APIURL(), a.Token())
	ctx := context.Background()
	st, err := c.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.NotifyMatch = true
	if _, err := c.SetSettings(ctx, st); err != nil {
		t.Fatal(err)
	}
	sent := &sentNotes{}
	d := newDesktopNotices(c, a.Token, sent.send, nodetest.Logger(t, "info"))
	start := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	step := func(id string, state string, confirmed bool, note string) {
		d.booking(ctx, apiv1.Booking{ID: id, Start: start, DurationMin: 50, State: matchmaking.State(state),
			PartnerName: "Bo", Confirmed: confirmed, Note: note})
	}
	// Taken back before the partner acknowledged it: nothing to tell.
	step("b1", "searching", false, "")
	step("b1", "matched", false, "")
	step("b1", "searching", false, "the partner no longer holds this match")
	if len(sent.notes) != 0 {
		t.Fatalf("told %q of a match the partner never held", sent.notes)
	}
	// Acknowledged: told once, when the acknowledgement comes.
	step("b2", "searching", false, "")
	step("b2", "matched", false, "")
	step("b2", "matched", true, "")
	step("b2", "matched", true, "")
	if n := sent.count("Tandem: partner found", "Bo"); n != 1 || len(sent.notes) != 1 {
		t.Fatalf("told %q, want one match notice", sent.notes)
	}
	step("b2", "searching", false, "partner cancelled: sick today")
	if n := sent.count("Tandem: your partner cancelled", "sick today"); n != 1 {
		t.Fatalf("told %q, want the cancel", sent.notes)
	}
}
