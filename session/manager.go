package session

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/session/media"
)

// Config wires a Manager to its node.
type Config struct {
	Host host.Host
	DB   *badger.DB
	Log  *slog.Logger
	// Now is the wall clock the schedule follows (tests inject one);
	// default time.Now.
	Now func() time.Time
	// OnEvent gets every event of every session, in order, from one
	// goroutine. It should not block for long.
	OnEvent func(Event)
	// Tick is how often the schedule is re-evaluated (default 1 s).
	Tick time.Duration

	// ICEServers for the node-to-node connection (STUN/TURN); none are
	// needed on a LAN or on one machine.
	ICEServers []webrtc.ICEServer
	// PeerICE, if set, gives the STUN/TURN servers other Tandem nodes
	// offer (peerturn helpers), with fresh credentials. It is asked before
	// each connection attempt (for at most peerICETimeout) and should
	// answer from a cache.
	PeerICE func(ctx context.Context) []PeerICEServer
	// RelayOnly makes the node-to-node connection use TURN relays only
	// (ICETransportPolicyRelay): the partner never learns this node's
	// addresses. Tests use it to force the relay path.
	RelayOnly bool
	// IncludeLoopback gathers 127.0.0.1 candidates for the node-to-node
	// connection (two nodes on one machine).
	IncludeLoopback bool
	// LoopbackOnly restricts every PeerConnection to loopback UDP4 with
	// multicast DNS off: nothing leaves the machine (tests).
	LoopbackOnly bool
	// ICE liveness timeouts of the node-to-node connection; zero means
	// 5 s disconnected, 15 s failed, 2 s keepalive.
	ICEDisconnectedTimeout time.Duration
	ICEFailedTimeout       time.Duration
	ICEKeepAlive           time.Duration
	// ConnectTimeout bounds one connection attempt, from the signalling
	// stream to a connected PeerConnection (default 20 s).
	ConnectTimeout time.Duration
	// LeaveLinger is how long a leaving session waits for the partner's
	// receipt (default 3 s).
	LeaveLinger time.Duration
	// LookupHost resolves the ICE servers' host names (tests inject one);
	// default the system resolver. See iceservers.go.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Manager runs the sessions of one node and keeps their history.
type Manager struct {
	cfg        Config
	log        *slog.Logger
	key        crypto.PrivKey
	peerAPI    *webrtc.API
	browserAPI *webrtc.API
	turnDial   *turnDialer // opens TCP and TLS connections to TURN servers for peerAPI
	events     *eventQueue
	notifee    *network.NotifyBundle
	ice        *iceResolver
	iceDone    chan struct{} // the resolver has stopped

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // sessions
	// The event queue outlives the sessions, so their last events arrive.
	stopEvents context.CancelFunc
	eventsDone chan struct{}

	mu       sync.Mutex
	running  bool
	sessions map[string]*Session // by booking ID
}

// NewManager checks cfg and prepares a Manager; nothing runs until Start.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Host == nil || cfg.DB == nil {
		return nil, fmt.Errorf("%w: session manager needs a host and a database", ErrInvalid)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(Event) {}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Tick, time.Second)
	def(&cfg.ICEDisconnectedTimeout, 5*time.Second)
	def(&cfg.ICEFailedTimeout, 15*time.Second)
	def(&cfg.ICEKeepAlive, 2*time.Second)
	def(&cfg.ConnectTimeout, 20*time.Second)
	def(&cfg.LeaveLinger, 3*time.Second)
	key := cfg.Host.Peerstore().PrivKey(cfg.Host.ID())
	if key == nil {
		return nil, fmt.Errorf("%w: the host's private key is not in its peerstore", ErrInvalid)
	}
	turnDial := newTURNDialer()
	for _, s := range cfg.ICEServers {
		turnDial.trustCA(s.URLs)
	}
	peerAPI, err := media.NewAPI(media.Options{
		IncludeLoopback: cfg.IncludeLoopback, LoopbackOnly: cfg.LoopbackOnly,
		DisconnectedTimeout: cfg.ICEDisconnectedTimeout, FailedTimeout: cfg.ICEFailedTimeout,
		KeepAliveInterval: cfg.ICEKeepAlive, TURNDialer: turnDial,
	})
	if err != nil {
		return nil, fmt.Errorf("creating WebRTC API: %w", err)
	}
	// The browser leg always runs on this machine.
	browserAPI, err := media.NewAPI(media.Options{IncludeLoopback: true, LoopbackOnly: cfg.LoopbackOnly})
	if err != nil {
		return nil, fmt.Errorf("creating browser WebRTC API: %w", err)
	}
	m := &Manager{
		cfg: cfg, log: cfg.Log, key: key, peerAPI: peerAPI, browserAPI: browserAPI, turnDial: turnDial,
		events: newEventQueue(cfg.OnEvent), sessions: map[string]*Session{},
		ice: newICEResolver(cfg.ICEServers, cfg.LookupHost), iceDone: make(chan struct{}),
	}
	m.notifee = &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		m.wakePartner(c.RemotePeer())
	}}
	return m, nil
}

// Start serves the signalling protocol. Sessions stop when ctx ends; Close
// must still be called to stop the event queue.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running || m.ctx != nil {
		return fmt.Errorf("%w: started twice", ErrInvalid)
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.running = true
	evCtx, stop := context.WithCancel(context.Background())
	m.stopEvents, m.eventsDone = stop, make(chan struct{})
	go func() {
		defer close(m.eventsDone)
		m.events.run(evCtx)
	}()
	go func() {
		defer close(m.iceDone)
		m.ice.run(m.ctx)
	}()
	m.cfg.Host.SetStreamHandler(SignalProtocol, m.handleSignal)
	m.cfg.Host.Network().Notify(m.notifee)
	return nil
}

// Close ends every open session without leaving it (the partner sees a
// disconnect, and the session resumes if it is opened again), stops
// serving signalling and waits for every goroutine.
func (m *Manager) Close() {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return
	}
	m.running = false
	m.mu.Unlock()
	m.cfg.Host.RemoveStreamHandler(SignalProtocol)
	m.cfg.Host.Network().StopNotify(m.notifee)
	m.cancel()
	m.wg.Wait()
	<-m.iceDone
	m.stopEvents()
	<-m.eventsDone
}

// Open starts the session of booking b, or returns the one already open
// for the same match (ErrBusy while a previous match's session of the
// booking is still open).
// It returns at once; the session connects to the partner when its lobby
// opens. A booking whose check-in window has passed (CheckinWindow after
// its end), or whose session is already in the history, gives ErrEnded.
func (m *Manager) Open(b Booking) (*Session, error) {
	if err := b.validate(m.cfg.Host.ID()); err != nil {
		return nil, err
	}
	if b.Kind == "" {
		b.Kind = KindScheduled
	}
	if !m.cfg.Now().Before(b.End().Add(CheckinWindow)) {
		return nil, fmt.Errorf("%w: booking %s ended at %v", ErrEnded, b.ID, b.End())
	}
	done, err := hasRecord(m.cfg.DB, b)
	if err != nil {
		return nil, err
	}
	if done {
		return nil, fmt.Errorf("%w: booking %s is in the history", ErrEnded, b.ID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return nil, ErrNotStarted
	}
	if s, ok := m.sessions[b.ID]; ok {
		if s.b.Partner != b.Partner || s.b.PartnerBooking != b.PartnerBooking {
			// The booking was matched again: the old match's session must
			// end (Leave) before the new one can open.
			return nil, fmt.Errorf("%w: booking %s still has the session of its previous match", ErrBusy, b.ID)
		}
		return s, nil
	}
	s, err := newSession(m, b)
	if err != nil {
		return nil, err
	}
	m.sessions[b.ID] = s
	m.wg.Add(1)
	go s.run()
	return s, nil
}

// Get returns the open session of a booking.
func (m *Manager) Get(bookingID string) (*Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[bookingID]
	return s, ok
}

// Sessions returns the open sessions.
func (m *Manager) Sessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	return out
}

// History returns every session record, newest first.
func (m *Manager) History() ([]Record, error) { return loadRecords(m.cfg.DB) }

// Stats sums up the history as of now (weeks in now's time zone).
func (m *Manager) Stats(now time.Time) (Stats, error) {
	recs, err := loadRecords(m.cfg.DB)
	if err != nil {
		return Stats{}, err
	}
	return computeStats(recs, now), nil
}

func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	if m.sessions[s.b.ID] == s {
		delete(m.sessions, s.b.ID)
	}
	m.mu.Unlock()
}

// wakePartner nudges the sessions with p when libp2p connects to p: a
// partner that comes back is redialled at once.
func (m *Manager) wakePartner(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		if s.b.Partner == p {
			s.poke()
			select {
			case s.redial <- struct{}{}:
			default:
			}
		}
	}
}

const joinTimeout = 10 * time.Second

// handleSignal serves the answering side of the signalling protocol. Only
// the booked partner of an open session, in its lobby or later, gets
// past it; every other stream is reset before anything is read.
func (m *Manager) handleSignal(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if !m.expects(remote) {
		m.log.Debug("refusing signalling stream", "peer", remote)
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Now().Add(joinTimeout))
	r := bufio.NewReader(st)
	sig, err := readSignal(r)
	if err != nil || sig.GetJoin() == nil {
		m.log.Debug("bad join", "peer", remote, "err", err)
		st.Reset()
		return
	}
	j := sig.GetJoin()
	s := m.sessionFor(remote, j.GetToBooking())
	if s == nil || !s.admits(remote, j) {
		m.log.Debug("refusing join", "peer", remote, "booking", j.GetToBooking())
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	if err := s.accept(st, r); err != nil {
		m.log.Debug("accepting signalling stream", "peer", remote, "err", err)
		st.Reset()
	}
}

// sessionFor finds the session a Join from p is for: by our booking ID, or
// when the partner does not know it, the one session answering p.
func (m *Manager) sessionFor(p peer.ID, bookingID string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	if bookingID != "" {
		return m.sessions[bookingID]
	}
	var found *Session
	for _, s := range m.sessions {
		if s.b.Partner == p && !s.offerer {
			if found != nil {
				return nil // ambiguous
			}
			found = s
		}
	}
	return found
}

// expects reports whether an open session answers p.
func (m *Manager) expects(p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		if s.b.Partner == p && !s.offerer {
			return true
		}
	}
	return false
}

// eventQueue delivers events to OnEvent in order, from one goroutine, so
// a session never calls out while holding its lock.
type eventQueue struct {
	fn     func(Event)
	mu     sync.Mutex
	queue  []Event
	signal chan struct{}
}

func newEventQueue(fn func(Event)) *eventQueue {
	return &eventQueue{fn: fn, signal: make(chan struct{}, 1)}
}

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	q.queue = append(q.queue, e)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
		case <-q.signal:
		}
		q.mu.Lock()
		batch := q.queue
		q.queue = nil
		q.mu.Unlock()
		for _, e := range batch {
			q.fn(e)
		}
		if ctx.Err() != nil {
			return
		}
	}
}
