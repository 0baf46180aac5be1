package node

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	ics "github.com/arran4/golang-ical"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
)

// The calendar feed: the user's bookings as an iCalendar (RFC 5545) file,
// for a calendar app to subscribe to. A calendar app cannot log in, so the
// feed's URL carries its own secret: a read-only token (CalendarTokenFile,
// mode 0600 in the data dir, kept across restarts like the API token)
// that opens the feed and nothing else. Rotating it (`tandem calendar
// rotate`) makes every subscribed URL answer 404; the API token is not
// touched, and rotating the API token leaves the feed alone.
//
//	GET  /calendar/TOKEN.ics          the feed (no API token: the URL is the secret)
//	GET  /api/v1/calendar             {feed_url, webcal_url}
//	POST /api/v1/calendar/rotate      a new feed token, the old URL stops working
//	GET  /api/v1/calendar.ics         the same file, with the API token (export)

// CalendarTokenFile holds the calendar feed's token (mode 0600).
const CalendarTokenFile = "calendar-token"

// calendarRefresh is how often the feed asks calendar apps to re-fetch it.
const calendarRefresh = "PT15M"

// RotateCalendarToken replaces the feed token of the node whose data dir is
// dataDir while that node is not running (a running node rotates through
// POST /api/v1/calendar/rotate).
func RotateCalendarToken(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	_, err := writeSecret(dataDir, CalendarTokenFile)
	return err
}

func (n *Node) calendarToken() string {
	n.tokenMu.RLock()
	defer n.tokenMu.RUnlock()
	return n.calToken
}

func (n *Node) calendarInfo() apiv1.Calendar {
	feed := n.apiURL + "/calendar/" + n.calendarToken() + ".ics"
	return apiv1.Calendar{FeedURL: feed, WebcalURL: "webcal://" + strings.TrimPrefix(feed, "http://")}
}

func (n *Node) rotateCalendarToken() error {
	n.tokenMu.Lock()
	defer n.tokenMu.Unlock()
	tok := newToken()
	if n.cfg.DataDir != "" {
		var err error
		if tok, err = writeSecret(n.cfg.DataDir, CalendarTokenFile); err != nil {
			return err
		}
	}
	n.calToken = tok
	n.log.Info("calendar feed token rotated: subscribed calendars must use the new URL")
	return nil
}

// calendarAPI registers the feed and its management endpoints.
func (n *Node) calendarAPI(api, root *http.ServeMux) {
	api.HandleFunc("GET /api/v1/calendar", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.calendarInfo())
	})
	api.HandleFunc("POST /api/v1/calendar/rotate", func(w http.ResponseWriter, r *http.Request) {
		if err := n.rotateCalendarToken(); err != nil {
			writeError(w, http.StatusInternalServerError, "rotating calendar token: "+err.Error())
			return
		}
		writeJSON(w, n.calendarInfo())
	})
	api.HandleFunc("GET /api/v1/calendar.ics", n.serveCalendar)
	root.HandleFunc("GET /calendar/{file}", func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutSuffix(r.PathValue("file"), ".ics")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(n.calendarToken())) != 1 {
			// 404, not 401: a wrong URL is just not a calendar.
			http.Error(w, "no such calendar: the feed URL was rotated (`tandem calendar url` prints the current one)", http.StatusNotFound)
			return
		}
		n.serveCalendar(w, r)
	})
}

func (n *Node) serveCalendar(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/calendar; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if err := n.calendar(n.mm.Bookings()).SerializeTo(w); err != nil {
		n.log.Info("writing calendar feed", "err", err)
	}
}

// calendar turns bookings into an iCalendar. Each booking is one event
// whose UID is its booking ID, so a calendar app updates the event as the
// booking changes (matched, cancelled) instead of adding another.
func (n *Node) calendar(bookings []matchmaking.Booking) *ics.Calendar {
	cal := ics.NewCalendar()
	cal.SetProductId("-//Tandem//Tandem " + Version + "//EN")
	cal.SetMethod(ics.MethodPublish)
	cal.SetName("Tandem")
	cal.SetXWRCalName("Tandem")
	cal.SetRefreshInterval(calendarRefresh)
	cal.SetXPublishedTTL(calendarRefresh)
	now := n.now()
	for _, b := range bookings {
		e := cal.AddEvent(b.ID + "@tandem")
		e.SetDtStampTime(now)
		e.SetStartAt(b.Start)
		e.SetEndAt(b.End())
		if !b.CreatedAt.IsZero() {
			e.SetCreatedTime(b.CreatedAt)
		}
		if !b.UpdatedAt.IsZero() {
			e.SetLastModifiedAt(b.UpdatedAt)
		}
		e.SetSummary(eventSummary(b))
		e.SetDescription(eventDescription(b))
		e.SetURL(n.apiURL + "/#/session/" + b.ID)
		switch b.State {
		case matchmaking.StateCancelled:
			e.SetStatus(ics.ObjectStatusCancelled)
		case matchmaking.StateSearching:
			e.SetStatus(ics.ObjectStatusTentative)
		default:
			e.SetStatus(ics.ObjectStatusConfirmed)
		}
	}
	return cal
}

func partnerName(b matchmaking.Booking) string {
	if b.PartnerName != "" {
		return b.PartnerName
	}
	if len(b.Partner) > 8 {
		return "peer …" + b.Partner[len(b.Partner)-8:]
	}
	return b.Partner
}

func eventSummary(b matchmaking.Booking) string {
	switch {
	case b.State == matchmaking.StateCancelled:
		return "Tandem session (cancelled)"
	case b.Partner != "":
		return "Tandem with " + partnerName(b)
	}
	return "Tandem session (finding a partner)"
}

func eventDescription(b matchmaking.Booking) string {
	var lines []string
	if b.Goal != "" {
		lines = append(lines, "Goal: "+b.Goal)
	}
	if b.Partner != "" {
		lines = append(lines, "Partner: "+partnerName(b)+" ("+b.Partner+")")
	}
	lines = append(lines, fmt.Sprintf("%d min, %s", b.DurationMin, b.Activity))
	if b.Quiet {
		lines = append(lines, "Quiet mode")
	}
	if b.Note != "" {
		lines = append(lines, b.Note)
	}
	return strings.Join(lines, "\n")
}
