package node

import (
	"net/http"
	"net/http/pprof"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/session"
)

// Metrics: GET /metrics serves Prometheus's text format and /debug/pprof/
// Go's profiles, both behind the API token (a scraper sends it as a Bearer
// header). Each node has its own registry: libp2p registers its
// collectors there (through libp2p.PrometheusRegisterer), Tandem its
// counters, which the node feeds from what matchmaking and session already
// report (OnBooking, OnOffer, OnHold, session events) rather than from
// counters inside those packages.
//
// libp2p keeps its collectors in package variables, so two nodes in one
// process (tests) share libp2p's numbers; Tandem's are per node.

type metrics struct {
	reg *prometheus.Registry

	offersSeen *prometheus.CounterVec // by source: gossip, sync, push
	matches    prometheus.Counter
	cancels    prometheus.Counter
	holds      prometheus.Counter
	sessions   *prometheus.CounterVec // by outcome
	ice        *prometheus.CounterVec // by result
	paths      *prometheus.CounterVec // by kind: direct, relay
	relayConns prometheus.Counter

	mu    sync.Mutex
	state map[string]matchmaking.State // last state seen per booking
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		offersSeen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_offers_seen_total",
			Help: "Offer records from other peers that entered the board, by how they came (gossip, sync, push).",
		}, []string{"source"}),
		matches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_matches_total",
			Help: "Bookings of this node that were matched with a partner.",
		}),
		cancels: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_bookings_cancelled_total",
			Help: "Bookings of this node that ended cancelled (by the user, the partner or a failed search).",
		}),
		holds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_holds_total",
			Help: "Match proposals this node accepted and held for the proposer's confirm.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_sessions_total",
			Help: "Sessions that ended, by outcome: completed, no_show, left_early, partner_left_early, not_met.",
		}, []string{"outcome"}),
		ice: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_session_connect_total",
			Help: "Session connection results: connected (the partner's first hello arrived), could_not_connect, reconnected.",
		}, []string{"result"}),
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_session_paths_total",
			Help: "Session connections by the ICE candidate pair WebRTC selected: direct, or relay (TURN).",
		}, []string{"kind"}),
		relayConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_relayed_connections_total",
			Help: "libp2p connections opened through a circuit relay.",
		}),
		state: map[string]matchmaking.State{},
	}
	m.reg.MustRegister(m.offersSeen, m.matches, m.cancels, m.holds, m.sessions, m.ice, m.paths, m.relayConns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registerNode adds the gauges read from the running node.
func (m *metrics) registerNode(n *Node) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_offers_rejected_total",
			Help: "Offer records from peers refused for their content (malformed, forged, bad text).",
		}, func() float64 { return float64(n.mm.RefusedOffers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tandem_offers_needless_refreshes_total",
			Help: "Re-announcements from peers ignored unchecked: unchanged records sent again sooner than an honest owner does.",
		}, func() float64 { return float64(n.mm.NeedlessRefreshes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_connected_peers",
			Help: "Peers this node holds a libp2p connection to.",
		}, func() float64 { return float64(len(n.host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tandem_relayed_connections",
			Help: "Open libp2p connections that go through a circuit relay.",
		}, func() float64 {
			c := 0
			for _, conn := range n.host.Network().Conns() {
				if relayed(conn) {
					c++
				}
			}
			return float64(c)
		}),
	)
}

func relayed(c network.Conn) bool { return c.Stat().Limited || isCircuit(c.RemoteMultiaddr()) }

// seed records the stored bookings' states, so that a restart does not
// count their first change again.
func (m *metrics) seed(bs []matchmaking.Booking) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range bs {
		m.state[b.ID] = b.State
	}
}

// booking counts a booking's move into matched or cancelled.
func (m *metrics) booking(b matchmaking.Booking) {
	m.mu.Lock()
	prev, known := m.state[b.ID]
	m.state[b.ID] = b.State
	if b.State == matchmaking.StateDone {
		delete(m.state, b.ID) // done is final: keep the map small
	}
	m.mu.Unlock()
	if known && prev == b.State {
		return
	}
	switch b.State {
	case matchmaking.StateMatched:
		m.matches.Inc()
	case matchmaking.StateCancelled:
		m.cancels.Inc()
	}
}

func (m *metrics) offer(e matchmaking.OfferEvent) {
	if e.Source != matchmaking.OfferPublished {
		m.offersSeen.WithLabelValues(string(e.Source)).Inc()
	}
}

func (m *metrics) session(e session.Event) {
	switch e.Type {
	case session.EventPartnerJoined:
		m.ice.WithLabelValues("connected").Inc()
	case session.EventPartnerReconnected:
		m.ice.WithLabelValues("reconnected").Inc()
	case session.EventCouldNotConnect:
		m.ice.WithLabelValues("could_not_connect").Inc()
	case session.EventPathChanged:
		if e.Path != nil && e.Path.Kind != "" {
			m.paths.WithLabelValues(e.Path.Kind).Inc()
		}
	case session.EventEnded:
		m.sessions.WithLabelValues(sessionOutcome(e.Record)).Inc()
	}
}

func sessionOutcome(r *session.Record) string {
	switch {
	case r == nil || (!r.Met && !r.NoShow):
		return "not_met"
	case r.NoShow:
		return "no_show"
	case r.LeftEarly:
		return "left_early"
	case r.PartnerLeftEarly:
		return "partner_left_early"
	}
	return "completed"
}

// debugHandler serves /metrics and /debug/pprof/.
func (m *metrics) debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
