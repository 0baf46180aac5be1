package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/webui"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// maxBody bounds a JSON request body; the texts in it are far shorter
// (usertext limits), so only a mistake or an attack comes near it.
const maxBody = 64 << 10

// bodyTooLarge names the limit and the text limits under it: a user who
// pasted a long goal learns what fits, not only that something did not.
var bodyTooLarge = fmt.Sprintf("request body over the API's limit of %d bytes; texts must be far shorter: "+
	"a name at most %d bytes, a goal or reason %d, a check-in note %d, a chat line %d",
	maxBody, usertext.MaxName, usertext.MaxGoal, usertext.MaxNote, usertext.MaxChat)

func (n *Node) handler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.Status()) })
	api.HandleFunc("GET /api/v1/peers", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.Peers()) })
	api.HandleFunc("GET /api/v1/events", n.serveEvents)
	api.HandleFunc("GET /api/v1/bookings", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.mm.Bookings()) })
	api.HandleFunc("POST /api/v1/bookings", n.postBooking)
	api.HandleFunc("POST /api/v1/bookings/{id}/cancel", n.postCancel)
	api.HandleFunc("GET /api/v1/slots", n.getSlots)
	api.HandleFunc("GET /api/v1/people", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.mm.People()) })
	api.HandleFunc("POST /api/v1/people/{peer}", n.postPerson)
	api.HandleFunc("GET /api/v1/profile", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, apiv1.Profile{Name: n.mm.Name()})
	})
	api.HandleFunc("PUT /api/v1/profile", n.putProfile)
	api.HandleFunc("POST /api/v1/token/rotate", n.postRotateToken)
	n.circleRoutes(api)
	n.sessionAPI(api)
	n.uiAPI(api)

	root := http.NewServeMux()
	n.calendarAPI(api, root)
	root.Handle("/api/", n.tokenCheck(api))
	root.HandleFunc("GET /login", n.login)
	// The service manager's probe: no token, and nothing but "ok".
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, "ok")
	})
	debug := n.tokenCheck(n.metrics.debugHandler())
	root.Handle("GET /metrics", debug)
	root.Handle("/debug/pprof/", debug)
	root.Handle("/", webui.Handler())
	return hostCheck(csrfCheck(root))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(apiv1.Error{Error: msg})
}

// writeErr maps matchmaking's sentinel errors to HTTP status codes.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, matchmaking.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, matchmaking.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, matchmaking.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			writeError(w, http.StatusRequestEntityTooLarge, bodyTooLarge)
			return false
		}
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

func (n *Node) postBooking(w http.ResponseWriter, r *http.Request) {
	var req apiv1.BookRequest
	if !readJSON(w, r, &req) {
		return
	}
	b, err := n.mm.Book(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, b)
}

// postRotateToken replaces the API token. The caller's own cookie or
// Bearer token stops working with the answer: it carries the new one.
func (n *Node) postRotateToken(w http.ResponseWriter, r *http.Request) {
	tok, err := n.rotateToken()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "rotating token: "+err.Error())
		return
	}
	writeJSON(w, apiv1.Token{Token: tok, LoginURL: LoginURL(n.apiURL, tok)})
}

func (n *Node) postCancel(w http.ResponseWriter, r *http.Request) {
	var req apiv1.CancelRequest
	if r.ContentLength != 0 && !readJSON(w, r, &req) {
		return
	}
	b, err := n.mm.Cancel(r.Context(), r.PathValue("id"), req.Reason)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, b)
}

func (n *Node) getSlots(w http.ResponseWriter, r *http.Request) {
	var from, to time.Time
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if s := r.URL.Query().Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: want RFC 3339 time: %v", p.name, err))
				return
			}
			*p.dst = t
		}
	}
	// The calendar asks for the days it shows: the node joins their
	// shards for a while, so the counts come from them.
	n.mm.View(from, to)
	writeJSON(w, n.mm.Board(from, to))
}

func (n *Node) postPerson(w http.ResponseWriter, r *http.Request) {
	var req apiv1.PersonRequest
	if !readJSON(w, r, &req) {
		return
	}
	var snooze time.Duration
	if req.Action == "snooze" {
		d, err := ParseSnooze(req.SnoozeFor)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		snooze = d
	}
	p, err := n.mm.SetPerson(r.PathValue("peer"), req.Action, snooze)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, p)
}

// ParseSnooze accepts a Go duration ("36h") or whole days ("7d").
func ParseSnooze(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(d)
		if err == nil && days > 0 && days <= 365 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("snooze for %q: want a duration like 7d or 36h", s)
	}
	return d, nil
}

func (n *Node) putProfile(w http.ResponseWriter, r *http.Request) {
	var p apiv1.Profile
	if !readJSON(w, r, &p) {
		return
	}
	if err := n.mm.SetName(p.Name); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, apiv1.Profile{Name: n.mm.Name()})
}

// serveEvents streams node events as server-sent events, until the client
// goes, the node stops, or the token the stream was opened with is
// rotated (a client that still may reconnects with the new one).
func (n *Node) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, unsubscribe := n.events.subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": hello\n\n")
	fl.Flush()
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-n.stopping:
			return
		case <-tokenRotated(r):
			return
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		case ev := <-ch:
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, ev.Data)
		}
		fl.Flush()
	}
}
