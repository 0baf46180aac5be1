package node

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/session"
)

// TestMetricsFromEvents: a booking's repeated updates count one match and
// one cancel; a restart's stored states count nothing; each session end
// lands in its outcome and each connect result in its own.
func TestMetricsFromEvents(t *testing.T) {
	m := newMetrics()
	m.seed([]matchmaking.Booking{{ID: "old", State: matchmaking.StateMatched}})
	for _, b := range []matchmaking.Booking{
		{ID: "old", State: matchmaking.StateMatched}, // re-confirmed after a restart
		{ID: "a", State: matchmaking.StateSearching},
		{ID: "a", State: matchmaking.StateMatched},
		{ID: "a", State: matchmaking.StateMatched},   // confirmed
		{ID: "a", State: matchmaking.StateSearching}, // partner cancelled
		{ID: "a", State: matchmaking.StateMatched},
		{ID: "a", State: matchmaking.StateCancelled},
		{ID: "a", State: matchmaking.StateCancelled},
	} {
		m.booking(b)
	}
	if got := value(t, m.matches); got != 2 {
		t.Errorf("matches = %v, want 2", got)
	}
	if got := value(t, m.cancels); got != 1 {
		t.Errorf("cancels = %v, want 1", got)
	}
	for _, tc := range []struct {
		r    *session.Record
		want string
	}{
		{nil, "not_met"},
		{&session.Record{}, "not_met"},
		{&session.Record{NoShow: true}, "no_show"},
		{&session.Record{Met: true}, "completed"},
		{&session.Record{Met: true, LeftEarly: true}, "left_early"},
		{&session.Record{Met: true, PartnerLeftEarly: true}, "partner_left_early"},
	} {
		m.session(session.Event{Type: session.EventEnded, Record: tc.r})
		if got := value(t, m.sessions.WithLabelValues(tc.want)); got < 1 {
			t.Errorf("record %+v: nothing counted as %s", tc.r, tc.want)
		}
	}
	if got := value(t, m.sessions.WithLabelValues("not_met")); got != 2 {
		t.Errorf("not_met = %v, want 2", got)
	}
	m.session(session.Event{Type: session.EventPartnerJoined})
	m.session(session.Event{Type: session.EventCouldNotConnect})
	m.session(session.Event{Type: session.EventChat})
	m.session(session.Event{Type: session.EventPathChanged, Path: &session.ConnectPath{Kind: session.PathRelay}})
	m.session(session.Event{Type: session.EventPathChanged, Path: &session.ConnectPath{Kind: session.PathDirect}})
	m.session(session.Event{Type: session.EventPathChanged})
	for _, k := range []string{session.PathRelay, session.PathDirect} {
		if got := value(t, m.paths.WithLabelValues(k)); got != 1 {
			t.Errorf("path %s = %v, want 1", k, got)
		}
	}
	for _, r := range []string{"connected", "could_not_connect"} {
		if got := value(t, m.ice.WithLabelValues(r)); got != 1 {
			t.Errorf("connect %s = %v, want 1", r, got)
		}
	}
}

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
