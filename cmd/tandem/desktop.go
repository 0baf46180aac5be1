package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
)

// Desktop notifications from `tandem up --desktop-notify`: the same
// reminder and match/cancel notices as the web UI's, following the same
// settings (notify_reminder, remind_before_min, notify_match), sent with
// notify-send on Linux and osascript on macOS. The notifier is a client of
// the node's own API, like any other command.

// notifier sends one desktop notification.
type notifier func(ctx context.Context, title, body string) error

// desktopCommand is the command that shows a notification on goos, or nil
// when the platform offers none (no notify-send on the PATH).
func desktopCommand(goos string, lookPath func(string) (string, error), title, body string) []string {
	switch goos {
	case "darwin":
		q := func(s string) string { return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"` }
		return []string{"osascript", "-e", "display notification " + q(body) + " with title " + q(title)}
	default:
		p, err := lookPath("notify-send")
		if err != nil {
			return nil
		}
		return []string{p, "--app-name=Tandem", "--icon=appointment-soon", "--", title, body}
	}
}

// commandNotifier runs desktopCommand through run (tests record it).
func commandNotifier(goos string, lookPath func(string) (string, error), run runner) (notifier, error) {
	if desktopCommand(goos, lookPath, "", "") == nil {
		return nil, errors.New("no notify-send on the PATH (Debian: apt-get install libnotify-bin)")
	}
	return func(ctx context.Context, title, body string) error {
		argv := desktopCommand(goos, lookPath, title, body)
		if out, err := run(ctx, argv[0], argv[1:]...); err != nil {
			return fmt.Errorf("showing a desktop notification: %w: %s", err, strings.TrimSpace(out))
		}
		return nil
	}, nil
}

// startDesktopNotices runs the desktop notices of `tandem up` when the
// config asks for them, until ctx ends; the channel is closed when they
// have stopped (at once when they are off).
func startDesktopNotices(ctx context.Context, cfg node.Config, n *node.Node, log *slog.Logger, out io.Writer) <-chan struct{} {
	done := make(chan struct{})
	if !cfg.DesktopNotify {
		close(done)
		return done
	}
	send, err := commandNotifier(runtime.GOOS, exec.LookPath, execRunner)
	if err != nil {
		log.Warn("desktop notifications are off", "err", err)
		close(done)
		return done
	}
	fmt.Fprintln(out, "  Desktop:   notifications on (they follow the web UI's notification settings)")
	c := client.New(n.APIURL(), n.Token())
	go func() {
		defer close(done)
		if err := newDesktopNotices(c, n.Token, send, log).run(ctx); err != nil {
			log.Warn("desktop notifications stopped", "err", err)
		}
	}()
	return done
}

// desktopNotices watches the node through c until ctx ends.
type desktopNotices struct {
	c *client.Client
	// token is the node's API token now: after `tandem token rotate` the
	// node answers c's old one 401, and the notifier carries on with this.
	token    func() string
	send     notifier
	log      *slog.Logger
	states   map[string]string // last state seen per booking
	reminded map[string]bool
}

func newDesktopNotices(c *client.Client, token func() string, send notifier, log *slog.Logger) *desktopNotices {
	return &desktopNotices{c: c, token: token, send: send, log: log, states: map[string]string{}, reminded: map[string]bool{}}
}

// ask runs one API call of d's; when the node refuses the token because
// it was rotated, it switches d's client to the current one and asks once
// more.
func ask[T any](d *desktopNotices, call func() (T, error)) (T, error) {
	v, err := call()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		return v, err
	}
	if tok := d.token(); tok != "" && tok != d.c.Token {
		d.log.Info("desktop notifications: the API token was rotated; using the new one")
		d.c.Token = tok
		return call()
	}
	return v, err
}

// run sends notices until ctx ends or the node's event stream closes for
// good (the node stopped).
func (d *desktopNotices) run(ctx context.Context) error {
	watch := func() (<-chan apiv1.Event, error) { return d.c.Events(ctx) }
	events, err := ask(d, watch)
	if err != nil {
		return fmt.Errorf("watching the node's events: %w", err)
	}
	if bs, err := ask(d, func() ([]apiv1.Booking, error) { return d.c.Bookings(ctx) }); err == nil {
		for _, b := range bs {
			d.states[b.ID] = noticeState(b)
		}
	}
	tick := time.NewTicker(20 * time.Second)
	defer tick.Stop()
	d.remind(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			d.remind(ctx)
		case ev, ok := <-events:
			if !ok {
				// The node ends its event streams when it stops, and
				// when the token they were opened with is rotated: then
				// the stream opens again with the new one.
				if events, err = ask(d, watch); err != nil || ctx.Err() != nil {
					return nil
				}
				d.catchUp(ctx)
				continue
			}
			switch ev.Type {
			case apiv1.EventBooking:
				var b apiv1.Booking
				if json.Unmarshal(ev.Data, &b) == nil {
					d.booking(ctx, b)
				}
			case apiv1.EventClock:
				d.remind(ctx)
			}
		}
	}
}

// catchUp tells of what changed while no event stream was open.
func (d *desktopNotices) catchUp(ctx context.Context) {
	if bs, err := ask(d, func() ([]apiv1.Booking, error) { return d.c.Bookings(ctx) }); err == nil {
		for _, b := range bs {
			d.booking(ctx, b)
		}
	}
	d.remind(ctx)
}

func (d *desktopNotices) notify(ctx context.Context, title, body string) {
	if err := d.send(ctx, title, body); err != nil {
		d.log.Info("desktop notification", "err", err)
	}
}

func partnerLabel(b apiv1.Booking) string {
	if b.PartnerName != "" {
		return b.PartnerName
	}
	if len(b.Partner) > 8 {
		return "peer …" + b.Partner[len(b.Partner)-8:]
	}
	return b.Partner
}

// noticeState is a booking's state as the notices follow it: a match
// the partner has not acknowledged yet is "matching". A node that
// proposed counts itself matched from its own write until the partner's
// answer to its Confirm, which can be "no such match" (the partner took
// another's Confirm first): told "partner found" then, the user would
// see the booking searching again a moment later with nobody to blame.
func noticeState(b apiv1.Booking) string {
	if b.State == "matched" && !b.Confirmed {
		return "matching"
	}
	return string(b.State)
}

func (d *desktopNotices) booking(ctx context.Context, b apiv1.Booking) {
	prev, seen := d.states[b.ID]
	state := noticeState(b)
	d.states[b.ID] = state
	if seen && prev == state {
		return
	}
	st, err := ask(d, func() (apiv1.Settings, error) { return d.c.Settings(ctx) })
	if err != nil || !st.NotifyMatch {
		return
	}
	when := fmt.Sprintf("%s, %d min", b.Start.Local().Format("Mon 2 Jan 15:04"), b.DurationMin)
	switch {
	case state == "matched":
		d.notify(ctx, "Tandem: partner found", partnerLabel(b)+" for "+when+".")
	case prev == "matched" && strings.HasPrefix(b.Note, "partner cancelled"):
		next := ""
		if state == "searching" {
			next = " Looking for someone else."
		}
		d.notify(ctx, "Tandem: your partner cancelled", when+": "+b.Note+"."+next)
	}
}

func (d *desktopNotices) remind(ctx context.Context) {
	st, err := ask(d, func() (apiv1.Settings, error) { return d.c.Settings(ctx) })
	if err != nil || !st.NotifyReminder {
		return
	}
	status, err := ask(d, func() (apiv1.Status, error) { return d.c.Status(ctx) })
	if err != nil {
		return
	}
	bs, err := ask(d, func() ([]apiv1.Booking, error) { return d.c.Bookings(ctx) })
	if err != nil {
		return
	}
	lead := time.Duration(max(st.RemindBeforeMin, 1)) * time.Minute
	now := status.Now
	for _, b := range bs {
		live := b.State == "matched" || (b.State == "searching" && b.Kind == "scheduled")
		left := b.Start.Sub(now)
		if !live || d.reminded[b.ID] || left > lead+15*time.Second || left < 0 {
			continue
		}
		d.reminded[b.ID] = true
		who := "(still finding a partner)"
		if b.State == "matched" {
			who = "with " + partnerLabel(b)
		}
		d.notify(ctx, "Tandem: your session starts soon", fmt.Sprintf("In %d min, %s: %d min %s.",
			max(int(left.Round(time.Minute)/time.Minute), 1), b.Start.Local().Format("15:04"), b.DurationMin, who))
	}
}
