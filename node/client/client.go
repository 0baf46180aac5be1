// Package client is the typed client of a running node's local API. The
// CLI's commands (all but `up`) use only this package: they never open the
// store or touch daemon internals.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// apiFile is the name of the file a running node writes into its data dir.
const apiFile = "api.json"

// ErrNotRunning means no node is running on the data dir.
var ErrNotRunning = errors.New("no tandem node is running for this data dir (start one with `tandem up`)")

// Client talks to one node.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// New returns a client for the node at url with token.
func New(url, token string) *Client {
	return &Client{URL: url, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// FromDataDir reads the API file the node in dataDir wrote.
func FromDataDir(dataDir string) (*Client, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, apiFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotRunning
	}
	if err != nil {
		return nil, fmt.Errorf("reading API file: %w", err)
	}
	var f apiv1.APIFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("reading API file: %w", err)
	}
	return New(f.URL, f.Token), nil
}

// APIError is a non-2xx answer from the node.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// do sends in as JSON and decodes the answer into out; a *[]byte out
// takes the body as it is.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+"/api/v1"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e apiv1.Error
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		*raw = data
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Health asks the node's GET /healthz (no token) and reports whether it
// answered "ok".
func (c *Client) Health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return fmt.Errorf("node at %s is not healthy: %s %q", c.URL, resp.Status, body)
	}
	return nil
}

// Settings returns the user's settings kept on the node (the web UI's).
func (c *Client) Settings(ctx context.Context) (apiv1.Settings, error) {
	var st apiv1.Settings
	return st, c.do(ctx, http.MethodGet, "/settings", nil, &st)
}

// SetSettings stores the user's settings and returns what the node kept.
func (c *Client) SetSettings(ctx context.Context, st apiv1.Settings) (apiv1.Settings, error) {
	var out apiv1.Settings
	return out, c.do(ctx, http.MethodPut, "/settings", st, &out)
}

// Calendar returns the secret URL of the node's calendar feed.
func (c *Client) Calendar(ctx context.Context) (apiv1.Calendar, error) {
	var cal apiv1.Calendar
	return cal, c.do(ctx, http.MethodGet, "/calendar", nil, &cal)
}

// RotateCalendar gives the calendar feed a new secret URL; the old one
// stops working.
func (c *Client) RotateCalendar(ctx context.Context) (apiv1.Calendar, error) {
	var cal apiv1.Calendar
	return cal, c.do(ctx, http.MethodPost, "/calendar/rotate", nil, &cal)
}

// CalendarICS returns the user's bookings as an iCalendar file.
func (c *Client) CalendarICS(ctx context.Context) ([]byte, error) {
	var data []byte
	return data, c.do(ctx, http.MethodGet, "/calendar.ics", nil, &data)
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (apiv1.Status, error) {
	var s apiv1.Status
	return s, c.do(ctx, http.MethodGet, "/status", nil, &s)
}

// LoginURL is the web UI's login link: it hands the browser this client's
// token once, for a cookie.
func (c *Client) LoginURL() string { return c.URL + "/login?token=" + c.Token }

// RotateToken makes the node replace its API token; every browser is
// logged out. The client switches to the new token.
func (c *Client) RotateToken(ctx context.Context) (apiv1.Token, error) {
	var t apiv1.Token
	if err := c.do(ctx, http.MethodPost, "/token/rotate", nil, &t); err != nil {
		return t, err
	}
	c.Token = t.Token
	return t, nil
}

// Peers lists connected peers.
func (c *Client) Peers(ctx context.Context) ([]apiv1.Peer, error) {
	var p []apiv1.Peer
	return p, c.do(ctx, http.MethodGet, "/peers", nil, &p)
}

// Book asks for a booking.
func (c *Client) Book(ctx context.Context, req apiv1.BookRequest) (apiv1.Booking, error) {
	var b apiv1.Booking
	return b, c.do(ctx, http.MethodPost, "/bookings", req, &b)
}

// Bookings lists the user's bookings.
func (c *Client) Bookings(ctx context.Context) ([]apiv1.Booking, error) {
	var b []apiv1.Booking
	return b, c.do(ctx, http.MethodGet, "/bookings", nil, &b)
}

// Cancel cancels a booking.
func (c *Client) Cancel(ctx context.Context, id, reason string) (apiv1.Booking, error) {
	var b apiv1.Booking
	return b, c.do(ctx, http.MethodPost, "/bookings/"+url.PathEscape(id)+"/cancel", apiv1.CancelRequest{Reason: reason}, &b)
}

// Slots lists other peers' open offers between from and to (zero = open).
func (c *Client) Slots(ctx context.Context, from, to time.Time) ([]apiv1.Offer, error) {
	q := url.Values{}
	if !from.IsZero() {
		q.Set("from", from.Format(time.RFC3339))
	}
	if !to.IsZero() {
		q.Set("to", to.Format(time.RFC3339))
	}
	var o []apiv1.Offer
	return o, c.do(ctx, http.MethodGet, "/slots?"+q.Encode(), nil, &o)
}

// People lists marked peers.
func (c *Client) People(ctx context.Context) ([]apiv1.Person, error) {
	var p []apiv1.Person
	return p, c.do(ctx, http.MethodGet, "/people", nil, &p)
}

// SetPerson favourites, blocks, unblocks or snoozes a peer.
func (c *Client) SetPerson(ctx context.Context, peerID string, req apiv1.PersonRequest) (apiv1.Person, error) {
	var p apiv1.Person
	return p, c.do(ctx, http.MethodPost, "/people/"+url.PathEscape(peerID), req, &p)
}

// Profile returns the display name.
func (c *Client) Profile(ctx context.Context) (apiv1.Profile, error) {
	var p apiv1.Profile
	return p, c.do(ctx, http.MethodGet, "/profile", nil, &p)
}

// SetProfile changes the display name.
func (c *Client) SetProfile(ctx context.Context, p apiv1.Profile) (apiv1.Profile, error) {
	var out apiv1.Profile
	return out, c.do(ctx, http.MethodPut, "/profile", p, &out)
}

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context) ([]apiv1.Session, error) {
	var s []apiv1.Session
	return s, c.do(ctx, http.MethodGet, "/sessions", nil, &s)
}

// Session returns the live session of a booking.
func (c *Client) Session(ctx context.Context, bookingID string) (apiv1.Session, error) {
	var s apiv1.Session
	return s, c.do(ctx, http.MethodGet, "/sessions/"+url.PathEscape(bookingID), nil, &s)
}

// SessionAction runs one of goal, chat, presence, checkin, leave.
func (c *Client) SessionAction(ctx context.Context, bookingID, action string, body apiv1.SessionAction) (apiv1.Session, error) {
	var s apiv1.Session
	return s, c.do(ctx, http.MethodPost, "/sessions/"+url.PathEscape(bookingID)+"/"+action, body, &s)
}

// AttachMedia attaches a browser leg to a booking's live session the way
// the web UI does (WHIP-style: POST /sessions/{id}/media with the leg's
// complete SDP offer) and returns the node's SDP answer.
func (c *Client) AttachMedia(ctx context.Context, bookingID, offerSDP string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/api/v1/sessions/"+url.PathEscape(bookingID)+"/media", strings.NewReader(offerSDP))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e apiv1.Error
		json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return "", &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	return string(body), nil
}

// Rematch gives up on an absent partner and asks for a new one now.
func (c *Client) Rematch(ctx context.Context, bookingID string) (apiv1.Booking, error) {
	var b apiv1.Booking
	return b, c.do(ctx, http.MethodPost, "/sessions/"+url.PathEscape(bookingID)+"/rematch", nil, &b)
}

// History lists past sessions.
func (c *Client) History(ctx context.Context) ([]apiv1.Record, error) {
	var r []apiv1.Record
	return r, c.do(ctx, http.MethodGet, "/history", nil, &r)
}

// Stats sums up the history.
func (c *Client) Stats(ctx context.Context) (apiv1.Stats, error) {
	var s apiv1.Stats
	return s, c.do(ctx, http.MethodGet, "/stats", nil, &s)
}

// Events streams the node's server-sent events until ctx ends or the
// connection drops; the channel is closed then.
func (c *Client) Events(ctx context.Context) (<-chan apiv1.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/api/v1/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream is long-lived
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &APIError{Status: resp.StatusCode, Message: resp.Status}
	}
	out := make(chan apiv1.Event, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev apiv1.Event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.Type = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = json.RawMessage(strings.TrimPrefix(line, "data: "))
			case line == "" && ev.Type != "":
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
				ev = apiv1.Event{}
			}
		}
	}()
	return out, nil
}

// Circles lists the circles the node is in.
func (c *Client) Circles(ctx context.Context) ([]apiv1.Circle, error) {
	var out []apiv1.Circle
	return out, c.do(ctx, http.MethodGet, "/circles", nil, &out)
}

// CreateCircle makes a circle; the answer carries its invite.
func (c *Client) CreateCircle(ctx context.Context, name string) (apiv1.Circle, error) {
	var out apiv1.Circle
	return out, c.do(ctx, http.MethodPost, "/circles", apiv1.CircleRequest{Name: name}, &out)
}

// JoinCircle joins the circle of an invite (a code or a link); name, if
// set, names it on this node.
func (c *Client) JoinCircle(ctx context.Context, invite, name string) (apiv1.Circle, error) {
	var out apiv1.Circle
	return out, c.do(ctx, http.MethodPost, "/circles/join", apiv1.CircleRequest{Invite: invite, Name: name}, &out)
}

// LeaveCircle leaves a circle, named by ID or name.
func (c *Client) LeaveCircle(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/circles/"+url.PathEscape(ref), nil, nil)
}
