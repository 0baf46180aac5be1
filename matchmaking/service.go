package matchmaking

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/tandem-cowork/tandem/matchmaking/box"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// OffersTopic is version 1's single offer topic. Version 2 shards offers
// over many topics (package shard); a node uses this one only to match
// with version 1 nodes (Config.V1).
const OffersTopic = shard.V1Topic

// Config wires a Service to its node.
type Config struct {
	Host   host.Host
	PubSub *pubsub.PubSub
	// Gate, if set, is the GossipGate PubSub was built with; the Service
	// attaches to it when it starts.
	Gate *GossipGate
	DB   *badger.DB
	// Name is the initial display name when no profile is stored yet.
	Name string
	Log  *slog.Logger
	// Now is the clock (tests and the demo inject one); default time.Now.
	// Every time the matcher reads, compares or waits for runs on it
	// (clock.go); only stream I/O deadlines are real time.
	Now func() time.Time
	// Rate, with Now, says how many times faster than real time Now runs
	// at the moment (the demo's compressed clock); nil means 1. It only
	// makes waits on Now end on time: they also look at Now every
	// clockPoll, so a clock that jumps or changes pace is followed.
	Rate func() float64
	// OnBooking is called after every persisted change of a booking.
	OnBooking func(Booking)
	// OnBoard is called when the board of open offers changes.
	OnBoard func()
	// OnOffer, if set, observes offer records: each one this node
	// publishes, and each one that enters its board (from gossip or a
	// board sync). It is for benchmarks and tests; it runs synchronously
	// on the matcher's goroutines and must not block.
	OnOffer func(OfferEvent)
	// OnHold, if set, is called when this node accepts a proposal and
	// holds its booking for the proposer's confirm (metrics); it must
	// not block.
	OnHold func()
	// OnProposal, if set, observes every proposal this node makes, once
	// it has an answer or has given up (benchmarks: where a booking's
	// time to match goes); it must not block.
	OnProposal func(ProposalEvent)
	// OnNote, if set, observes why a booking waits (benchmarks' debug
	// timeline): a hold granted on it, a plan partner waited for. It
	// must not block.
	OnNote func(NoteEvent)
	// OnPlace, if set, observes each level decision of a booking on a
	// slot class or lane topic (lanes.go). It must not block.
	OnPlace func(PlaceEvent)
	// FavouritesOnly: match favourites only.
	FavouritesOnly bool
	// NoLanes keeps public scheduled bookings on their day shard, as
	// before slot class topics and lanes (lanes.go); for comparisons.
	NoLanes bool
	// LaneVolume, if set, overrides laneVolume: how many bookings a
	// slot class or lane topic shows before newcomers go a lane deeper
	// (tests and benchmark comparisons).
	LaneVolume int
	// ClimbAlone, if set, overrides climbAlone: how long a booking stays
	// on a lane that shows nobody it could pair with (benchmark
	// comparisons).
	ClimbAlone time.Duration
	// ClassLinger, if set, overrides classLinger: how long a node stays
	// on a slot class or lane topic after its booking there stopped
	// searching (benchmark comparisons).
	ClassLinger time.Duration
	// PartnerKeeps, if set, overrides partnerKeeps: up to how many lane
	// volumes a topic may show and still keep a newcomer that could pair
	// with a booking waiting there; 1 turns the exception off (benchmark
	// comparisons).
	PartnerKeeps int
	// settleWait overrides settleWait (tests that must see a placement
	// decided by a board pull, not by the time bound, on a slow machine).
	settleWait time.Duration
	// DefaultScope and DefaultOpenAfterMin apply to bookings that do not
	// say (circles.go); defaults anyone and 10 minutes.
	DefaultScope        Scope
	DefaultOpenAfterMin int
	// Timers; zero means the default.
	AnnounceInterval time.Duration // re-announce open offers (default 30 s)
	HoldTimeout      time.Duration // how long an accepted proposal waits for Confirm (3 s; exclusive for a measured round trip, at most a quarter of it: holds.go)
	StreamTimeout    time.Duration // per negotiation round trip (5 s)
	MatchInterval    time.Duration // matcher wake-up without news (1 s)
	SyncInterval     time.Duration // pull the board from one random peer (20 s)
	// StampBits is the identity stamp's difficulty (default StampBits);
	// tests lower it. Offers whose stamp falls short are refused.
	StampBits int
	// OnStamp, if set, is called once the identity stamp that Start mints
	// in the background is ready (not when it came from the store); it
	// must not block.
	OnStamp func()
	// OfferTTL is how long, on the clock Now, an announcement stays valid
	// (default three AnnounceIntervals, at most an hour). A compressed
	// clock (the demo) needs it scaled to match real re-announcements.
	OfferTTL time.Duration
	// Finder finds peers on the offer topics this node joins (nil: only
	// peers already connected, and those gossip's peer exchange brings).
	Finder PeerFinder
	// V1 says when to use version 1's single topic too (default V1Auto).
	V1 V1Mode
	// OnTopic, if set, is called with every offer topic as it is joined,
	// before it is subscribed: peer scoring sets its parameters there.
	OnTopic func(name string, t *pubsub.Topic)
	// OnShard, if set, observes joins and leaves of offer topics (for
	// benchmarks and tests; it must not block).
	OnShard func(ShardEvent)
}

// Service is one node's matcher.
type Service struct {
	cfg   Config
	h     host.Host
	key   crypto.PrivKey
	db    db
	log   *slog.Logger
	board *board
	// circleBoard holds the offers that came on circle topics; it is
	// never served to a board sync (circles.go).
	circleBoard *board
	// sealedBoard holds sealed private offers, unread, to serve on
	// (private.go); opener opens those sealed to us, handleKey names our
	// own outside their box.
	sealedBoard *board
	// sealedQ holds the sealed records of board syncs that are relay
	// duty, checked at a pace (sealedqueue.go).
	sealedQ   *sealedQueue
	opener    *box.Opener
	handleKey [32]byte
	circMu    sync.Mutex // guards circles and their members; after s.mu
	circles   map[string]*circleState
	limit     *rateLimiter
	// syncBudget bounds the board sync reply bytes per requester.
	syncBudget *syncBudget
	kick       chan struct{}
	// relayedKick makes relayedSyncLoop pull at once (push.go).
	relayedKick chan struct{}

	// interest counts why the node wants each shard; joined holds the
	// offer topics it is on (shardMu), joinedSnap a copy for readers that
	// must not wait for shardMu.
	interest     *shard.Interest
	shardMu      sync.Mutex
	joined       map[shard.Key]*shardTopic
	joinedSnap   atomic.Pointer[map[shard.Key]*shardTopic]
	shardsClosed bool
	// leftClaims keeps what the node knew of the withdrawals of slot
	// class and lane topics it left, until they expire (shardMu; gone.go).
	leftClaims map[shard.Key][]claim
	// places says where each open booking announces (lanes.go); placeMu
	// is taken after s.mu.
	placeMu sync.Mutex
	places  map[string]*placement
	// fanouts are day shard topics the node publishes on without
	// subscribing (shards.go); fanMu is taken after shardMu.
	fanMu   sync.Mutex
	fanouts map[shard.Key]*fanoutTopic

	mu       sync.Mutex
	bookings map[string]*Booking
	people   map[peer.ID]Person
	name     string
	holds    map[string][]hold // own booking ID -> accepted incoming proposals (holds.go)
	// releasedUntil: own booking ID -> when the holds on it that their
	// proposers cancelled would have run out; till then a new hold on it
	// gets no exclusive window (holds.go, releaseHoldLocked).
	releasedUntil map[string]time.Time
	// confirmDelays: Accept->Confirm delays of this node's recent
	// committed matches, newest per partner (holds.go, exclusiveWindowLocked).
	confirmDelays []confirmDelay
	standing      map[peer.ID]peerStanding // peers' lapses and no-shows (standing.go)
	// standingDirty: records changed and not yet stored (flushStanding).
	standingDirty map[peer.ID]bool
	standingFlush sync.Mutex
	// stamp is this identity's stamp, nil until loaded or minted;
	// stampTried counts the mint's hashes (stamp.go).
	stamp      atomic.Pointer[[]byte]
	stampTried atomic.Uint64
	shows      map[peer.ID]int           // sessions each peer attended with us (AddTrackRecord)
	inflight   map[string]bool           // own booking ID -> our proposal under way
	backoff    map[boardKey]backoffEntry // offers not to propose to again before
	// busyHinted: when each offer's owner last had its "busy" retry
	// hint taken (takeBusyHint).
	busyHinted map[boardKey]time.Time
	// announced is when each open offer was last announced (real time).
	announced map[string]time.Time
	// lastOffer is each open offer's record as last announced, which a
	// peer that appears on its shard soon after is sent again (pushOwnTo).
	lastOffer map[string]*pb.Offer
	// booking holds the bookings Book has stored and not yet announced:
	// the announce loop leaves them to Book, so a new offer goes out once.
	booking map[string]bool
	// proposing marks bookings with a round of proposals under way (a
	// goroutine started by matchOnce); plans holds what each booking
	// waits for in the class plan.
	proposing map[string]bool
	plans     map[string]planWait
	// graceSpent holds, per lower plan partner that let a booking's plan
	// grace run out, until when no booking waits for it (negotiate.go).
	graceSpent map[peer.ID]time.Time
	// awaiting counts, per offer owner, our proposals it has not answered
	// yet: the matcher proposes to no offer of an owner it waits for
	// (answers.go).
	awaiting map[peer.ID]int
	// answerDelays are the Propose->answer delays of the node's recent
	// proposals, newest per owner (answers.go, patienceLocked).
	answerDelays []answerDelay
	// answered is when each owner last answered a proposal of ours
	// (answers.go, answeredFirstLocked).
	answered map[peer.ID]time.Time
	// askedWhileBusy marks bookings that another peer proposed to while
	// our round of proposals for them was under way (answers.go).
	askedWhileBusy map[string]bool
	// reach tracks dials to offer owners the node is not connected to,
	// reachDials how many run (reach.go).
	reach      map[peer.ID]reachState
	reachDials int
	// cancelRetries paces re-sending Cancels not yet acknowledged;
	// recheckRetries re-checking matches whose last re-check got no
	// answer (both by own booking ID).
	cancelRetries  map[string]retry
	recheckRetries map[string]retry
	// cancelled: other peers' bookings cancelled while held on or
	// matched with ours, until when they are remembered (holds.go).
	cancelled map[boardKey]time.Time
	// pending holds the bookings being written, as they will be once
	// stored (write.go).
	pending map[string]Booking

	wlMu   sync.Mutex            // guards wlocks
	wlocks map[string]*writeLock // per-booking write locks (write.go)
	// metaMu serialises the writes of people and the profile, which,
	// like bookings, are stored without s.mu held.
	metaMu sync.Mutex

	clk     clock
	wakeMu  sync.Mutex
	wakeAts []time.Time   // when the matcher wants waking, earliest first (wakeAfter)
	wakeSet chan struct{} // wakeAts has a new earliest

	seqMu      sync.Mutex
	lastSeq    uint64
	seqCeiling uint64 // stored: every seq issued is below it

	// refused counts offer records refused for their content (gossip and
	// board sync); refusedLog paces the info line about them.
	refused       atomic.Uint64
	validated     atomic.Uint64 // gossip messages validated (tests watch a flood land)
	needless      atomic.Uint64 // re-announcements ignored unchecked (needlessRefresh)
	silences      atomic.Uint64 // proposals an owner took and never answered (reach.go)
	refusedLogged atomic.Uint64
	refusedLog    rate.Sometimes

	ctx    context.Context // the service's lifetime, set by Start
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lifeMu sync.Mutex // guards closed against wg.Add racing wg.Wait
	closed bool

	// v1Only, set by tests, makes the node behave as a version 1 node: it
	// uses version 1's topic only and serves only /tandem/board/1.0.0.
	v1Only bool
	// v2Only, set by tests, makes the node behave as a version 2 node:
	// no sealed topics or records, private offers in the clear.
	v2Only bool

	// testHook, when set by tests, is called at named points of the
	// negotiation so a test can crash the node exactly there. Tests set it
	// while the service runs (setTestHook), hence atomic.
	testHook atomic.Pointer[func(point string)]
}

func (s *Service) at(point string) {
	if h := s.testHook.Load(); h != nil {
		(*h)(point)
	}
}

// setTestHook sets the test hook (nil: none).
func (s *Service) setTestHook(h func(point string)) {
	if h == nil {
		s.testHook.Store(nil)
		return
	}
	s.testHook.Store(&h)
}

// New loads the node's bookings, people and profile from the store.
func New(cfg Config) (*Service, error) {
	real := cfg.Now == nil
	if real {
		cfg.Now = time.Now
		cfg.Rate = nil
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.OnBooking == nil {
		cfg.OnBooking = func(Booking) {}
	}
	if cfg.OnBoard == nil {
		cfg.OnBoard = func() {}
	}
	name, err := usertext.CheckName(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("display name: %w", err)
	}
	cfg.Name = name
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AnnounceInterval, 30*time.Second)
	def(&cfg.HoldTimeout, 3*time.Second)
	def(&cfg.StreamTimeout, 5*time.Second)
	def(&cfg.MatchInterval, time.Second)
	def(&cfg.SyncInterval, 20*time.Second)
	def(&cfg.OfferTTL, 3*cfg.AnnounceInterval)
	if cfg.DefaultOpenAfterMin == 0 {
		cfg.DefaultOpenAfterMin = DefaultOpenAfterMin
	}
	switch cfg.DefaultScope {
	case "":
		cfg.DefaultScope = ScopeAnyone
	case ScopeAnyone, ScopeCircle, ScopeCircleFirst:
	default:
		return nil, fmt.Errorf("default scope %q: want anyone, circle or circle-first", cfg.DefaultScope)
	}
	if cfg.StampBits == 0 {
		cfg.StampBits = StampBits
	}
	cfg.OfferTTL = min(cfg.OfferTTL, maxOfferTTL)
	if cfg.V1 == "" {
		cfg.V1 = V1Auto
	}
	s := &Service{
		cfg: cfg, h: cfg.Host, key: cfg.Host.Peerstore().PrivKey(cfg.Host.ID()),
		db: db{cfg.DB, new(atomic.Bool), new(atomic.Pointer[func(string, any)])}, log: cfg.Log, board: newBoard(),
		limit: newRateLimiter(20, 2), syncBudget: newSyncBudget(),
		refusedLog: rate.Sometimes{Interval: time.Minute},
		kick:       make(chan struct{}, 1), relayedKick: make(chan struct{}, 1),
		bookings: map[string]*Booking{}, people: map[peer.ID]Person{},
		holds: map[string][]hold{}, releasedUntil: map[string]time.Time{}, standing: map[peer.ID]peerStanding{}, standingDirty: map[peer.ID]bool{}, shows: map[peer.ID]int{}, inflight: map[string]bool{}, backoff: map[boardKey]backoffEntry{}, busyHinted: map[boardKey]time.Time{},
		announced: map[string]time.Time{}, lastOffer: map[string]*pb.Offer{}, booking: map[string]bool{}, proposing: map[string]bool{}, plans: map[string]planWait{}, graceSpent: map[peer.ID]time.Time{},
		awaiting: map[peer.ID]int{}, answered: map[peer.ID]time.Time{}, askedWhileBusy: map[string]bool{},
		reach:         map[peer.ID]reachState{},
		cancelRetries: map[string]retry{}, recheckRetries: map[string]retry{}, cancelled: map[boardKey]time.Time{}, pending: map[string]Booking{},
		wlocks: map[string]*writeLock{}, wakeSet: make(chan struct{}, 1),
		clk:  clock{now: cfg.Now, rate: cfg.Rate, real: real},
		name: cfg.Name, circleBoard: newBoard(), sealedBoard: newBoard(), sealedQ: newSealedQueue(), circles: map[string]*circleState{},
		interest: shard.NewInterest(cfg.AnnounceInterval),
		joined:   map[shard.Key]*shardTopic{},
		places:   map[string]*placement{},
		fanouts:  map[shard.Key]*fanoutTopic{},
	}
	if s.key == nil {
		return nil, errors.New("matchmaking: host has no private key")
	}
	s.handleKey = handleKeyOf(s.key)
	if s.opener, err = box.NewOpener(s.key); err != nil {
		// Not an Ed25519 identity: nobody can seal a private offer to it.
		s.log.Warn("private offers sealed to this node cannot be read", "err", err)
	}
	bs, err := loadAll[Booking](s.db, bookingPrefix)
	if err != nil {
		return nil, fmt.Errorf("loading bookings: %w", err)
	}
	for _, b := range bs {
		s.bookings[b.ID] = &b
		s.trackLocked(nil, b)
	}
	if err := s.loadCircles(); err != nil {
		return nil, err
	}
	ps, err := loadAll[Person](s.db, personPrefix)
	if err != nil {
		return nil, fmt.Errorf("loading people: %w", err)
	}
	for _, p := range ps {
		if id, err := peer.Decode(p.ID); err == nil {
			s.people[id] = p
		}
	}
	sts, err := loadAll[peerStanding](s.db, standingPrefix)
	if err != nil {
		return nil, fmt.Errorf("loading peer records: %w", err)
	}
	for _, st := range sts {
		if id, err := peer.Decode(st.ID); err == nil {
			s.standing[id] = st
		}
	}
	if stamp, err := s.loadStamp(); err != nil {
		return nil, err
	} else if stamp != nil {
		s.stamp.Store(&stamp)
	}
	if _, err := s.db.get(seqKey, &s.seqCeiling); err != nil {
		return nil, fmt.Errorf("loading offer sequence: %w", err)
	}
	s.lastSeq = s.seqCeiling
	var prof profile
	if ok, err := s.db.get(profileKey, &prof); err != nil {
		return nil, fmt.Errorf("loading profile: %w", err)
	} else if ok {
		s.name = prof.Name
		// A name stored before the usertext rules may break them; every
		// peer would refuse the offers carrying it, so the node would
		// be invisible. Use (and keep) a cleaned copy, and say so.
		if clean := usertext.Name.Clean(prof.Name); clean != prof.Name {
			s.log.Warn("the stored display name has characters or length that peers refuse; using a cleaned copy",
				"stored", prof.Name, "now", clean)
			s.name = clean
			if err := s.db.put(profileKey, profile{Name: clean}); err != nil {
				return nil, fmt.Errorf("saving the cleaned profile: %w", err)
			}
		}
	}
	for _, b := range s.bookings {
		// Goals and partner names stored before the rules go to the
		// partner in the session's hello, which would refuse them.
		b.Goal, b.PartnerName = usertext.Goal.Clean(b.Goal), usertext.Name.Clean(b.PartnerName)
	}
	return s, nil
}

// Start joins the offer topics of the open bookings, serves the
// negotiation and sync protocols and runs the matcher until Close.
func (s *Service) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	identified, err := s.h.EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerProtocolsUpdated)})
	if err != nil {
		return fmt.Errorf("watching peer identification: %w", err)
	}
	if err := s.openCircles(); err != nil {
		return err
	}
	if s.cfg.Gate != nil {
		s.cfg.Gate.svc.Store(s)
	}
	s.h.SetStreamHandler(MatchProtocol, s.handleMatchStream)
	s.h.SetStreamHandler(BoardProtocol, s.handleBoardStream)
	if !s.v1Only {
		s.h.SetStreamHandler(BoardProtocolV2, s.handleBoardStream)
		s.h.SetStreamHandler(OfferPushProtocol, s.handlePushStream)
	}
	s.syncShards(ctx)
	if s.stamp.Load() == nil {
		// A new identity: its stamp takes seconds (minutes on a loaded
		// machine), so it is minted in the background; offers and
		// proposals wait for it.
		s.goRun(func() { s.prepareStamp(ctx) })
	}
	s.goRun(func() { s.watchIdentified(ctx, identified) })
	s.goRun(func() { s.announceLoop(ctx) })
	s.goRun(func() { s.placeLoop(ctx) })
	s.goRun(func() { s.matchLoop(ctx) })
	s.goRun(func() { s.reconcileLoop(ctx) })
	s.goRun(func() { s.recheckAll(ctx) })
	s.goRun(func() { s.syncLoop(ctx) })
	s.goRun(func() { s.relayedSyncLoop(ctx) })
	s.goRun(func() { s.wakeLoop(ctx) })
	s.goRun(func() { s.relayLoop(ctx) })
	return nil
}

// goRun runs f as a goroutine the service owns: Close waits for it. Once
// Close has begun nothing new starts (a negotiation finishing during Close
// does not announce its result; the next start re-announces open offers).
// It reports whether f was started.
func (s *Service) goRun(f func()) bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Close stops the matcher. Bookings stay in the store.
func (s *Service) Close() {
	if s.cancel == nil {
		return
	}
	s.h.RemoveStreamHandler(MatchProtocol)
	s.h.RemoveStreamHandler(BoardProtocol)
	s.h.RemoveStreamHandler(BoardProtocolV2)
	s.h.RemoveStreamHandler(OfferPushProtocol)
	s.lifeMu.Lock()
	s.closed = true
	s.lifeMu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.closeShards()
	s.circMu.Lock()
	for _, cs := range s.circles {
		s.closeCircle(cs)
	}
	s.circMu.Unlock()
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Name is the display name partners see.
func (s *Service) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}

// SetName changes the display name and re-announces open offers with it.
func (s *Service) SetName(name string) error {
	name, err := usertext.CheckName(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s.metaMu.Lock()
	if err := s.db.put(profileKey, profile{Name: name}); err != nil {
		s.metaMu.Unlock()
		return fmt.Errorf("saving profile: %w", err)
	}
	s.mu.Lock()
	s.name = name
	s.metaMu.Unlock()
	var open []Booking
	for _, b := range s.bookings {
		if b.State == StateSearching {
			open = append(open, *b)
		}
	}
	s.mu.Unlock()
	if s.ctx != nil {
		for _, b := range open {
			s.announce(s.ctx, b)
		}
	}
	return nil
}

func newBookingID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Book validates a request and stores a new searching booking. It returns
// at once; matching happens in the background.
func (s *Service) Book(ctx context.Context, req BookRequest) (Booking, error) {
	now := s.now()
	if req.Kind == "" {
		req.Kind = KindScheduled
	}
	if err := CheckDuration(req.DurationMin); err != nil {
		return Booking{}, err
	}
	act, err := CheckActivity(req.Activity)
	if err != nil {
		return Booking{}, err
	}
	if err := checkText(usertext.Goal, req.Goal); err != nil {
		return Booking{}, err
	}
	if req.With != "" {
		id, err := peer.Decode(req.With)
		if err != nil {
			return Booking{}, invalidf("with: %q is not a peer ID", req.With)
		}
		if id == s.h.ID() {
			return Booking{}, invalidf("with: that is your own peer ID")
		}
		if _, err := box.X25519Public(id); err != nil {
			// Its offer is sealed to that peer's key (private.go).
			return Booking{}, invalidf("with: %q cannot receive a private offer: %v", req.With, err)
		}
	}
	if err := s.checkScope(&req); err != nil {
		return Booking{}, err
	}
	b := Booking{
		ID: newBookingID(), Kind: req.Kind, State: StateSearching, DurationMin: req.DurationMin,
		Activity: act, Quiet: req.Quiet, Goal: req.Goal, With: req.With,
		Scope: req.Scope, Circle: req.Circle, OpenAfterMin: req.OpenAfterMin,
		CreatedAt: now, UpdatedAt: now,
	}
	switch req.Kind {
	case KindScheduled:
		if err := CheckStart(req.At, now); err != nil {
			return Booking{}, err
		}
		b.Start = req.At.UTC()
	case KindNow:
		b.Start = now.Truncate(time.Second)
	default:
		return Booking{}, invalidf("kind must be scheduled or now, not %q", req.Kind)
	}
	stored, err := s.update(b.ID, func(*Booking) (*Booking, error) {
		start, end := interval(b, now)
		if other := s.overlappingLocked(start, end, "", now); other != nil {
			return nil, fmt.Errorf("%w: overlaps your booking %s at %s", ErrConflict, other.ID, other.Start.Local().Format("Mon 15:04"))
		}
		if n := s.searchingLocked(); n >= maxPerOwner {
			return nil, fmt.Errorf("%w: %d of your sessions are still looking for a partner, the most peers keep offers of one person for; cancel one, or book again once some have matched", ErrConflict, n)
		}
		s.booking[b.ID] = true
		return &b, nil
	})
	if err != nil {
		s.mu.Lock()
		delete(s.booking, b.ID)
		s.mu.Unlock()
		return Booking{}, err
	}
	if s.ctx != nil {
		s.syncShards(s.ctx)
	}
	s.announce(ctx, *stored)
	s.mu.Lock()
	delete(s.booking, stored.ID)
	_, announced := s.announced[stored.ID]
	s.mu.Unlock()
	if !announced && s.stamp.Load() != nil {
		// The stamp became ready while this booking was being made, and
		// its announcement of the offers that waited skipped this one,
		// which was ours to send.
		s.announce(ctx, *stored)
	}
	s.wake()
	return *stored, nil
}

// overlappingLocked returns a live booking other than skip that overlaps
// [start, end), or nil. A booking being written counts as it is and as it
// will be (write.go).
// searchingLocked counts the bookings that still look for a partner, each
// an open offer on peers' boards. A board keeps at most maxPerOwner records
// of one owner (boardadmit.go), so Book refuses one more rather than make
// an offer that peers would drop without a word.
func (s *Service) searchingLocked() int {
	n := 0
	for id, b := range s.bookings {
		if p, ok := s.pending[id]; ok {
			b = &p
		}
		if b.State == StateSearching {
			n++
		}
	}
	for id, p := range s.pending {
		if _, ok := s.bookings[id]; !ok && p.State == StateSearching {
			n++
		}
	}
	return n
}

func (s *Service) overlappingLocked(start, end time.Time, skip string, now time.Time) *Booking {
	hit := func(o *Booking) bool {
		if o.ID == skip || !o.Live() {
			return false
		}
		os, oe := interval(*o, now)
		return overlaps(start, end, os, oe)
	}
	for _, o := range s.bookings {
		if hit(o) {
			return o
		}
	}
	for _, p := range s.pending {
		if hit(&p) {
			return &p
		}
	}
	return nil
}

// Bookings lists the user's bookings, soonest first.
func (s *Service) Bookings() []Booking {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Booking, 0, len(s.bookings))
	for _, b := range s.bookings {
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Booking returns one booking.
func (s *Service) Booking(id string) (Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bookings[id]
	if !ok {
		return Booking{}, fmt.Errorf("%w: booking %q", ErrNotFound, id)
	}
	return *b, nil
}

// Cancel cancels a booking, tells the partner at once and withdraws the
// offer from the swarm.
func (s *Service) Cancel(ctx context.Context, id, reason string) (Booking, error) {
	return s.cancelBooking(ctx, id, nil, reason)
}

// CancelMatch cancels a booking only while it is still matched with
// partnerBooking: a caller acting on what it saw of one match (a rematch
// after a no-show) must not cancel a newer match of the same booking.
func (s *Service) CancelMatch(ctx context.Context, id, partnerBooking, reason string) (Booking, error) {
	return s.cancelBooking(ctx, id, &partnerBooking, reason)
}

func (s *Service) cancelBooking(ctx context.Context, id string, match *string, reason string) (Booking, error) {
	if err := checkText(usertext.Reason, reason); err != nil {
		return Booking{}, err
	}
	var partner, partnerBooking string
	stored, err := s.update(id, func(b *Booking) (*Booking, error) {
		switch {
		case b == nil:
			return nil, fmt.Errorf("%w: booking %q", ErrNotFound, id)
		case !b.Live():
			return nil, fmt.Errorf("%w: booking %s is already %s", ErrConflict, id, b.State)
		case match != nil && (b.State != StateMatched || b.PartnerBooking != *match):
			return nil, fmt.Errorf("%w: booking %s is no longer in that match", ErrConflict, id)
		}
		partner, partnerBooking = b.Partner, b.PartnerBooking
		b.State = StateCancelled
		b.Note = reason
		// The Cancel is owed from this write on, stored with it: a node
		// that dies before the partner acknowledges it sends it again
		// when it starts (recheckAll).
		b.CancelUnsent = partner != ""
		if b.CancelUnsent {
			// Sent below; the re-sends start a second after.
			s.cancelRetries[id] = firstRetry(s.now())
		}
		delete(s.holds, id)
		return b, nil
	})
	if err != nil {
		return Booking{}, err
	}
	nb := *stored
	s.at("cancel-stored")
	s.announce(ctx, nb)
	if partner != "" {
		if pid, err := peer.Decode(partner); err == nil {
			if err := s.sendCancel(ctx, pid, id, partnerBooking, reason); err != nil {
				// Re-sent with backoff until the partner acknowledges it
				// (resendCancels); the partner also learns it when it
				// re-checks the match.
				s.log.Info("partner not reachable to cancel; will retry", "peer", pid, "err", err)
			} else if cb := s.cancelDelivered(id); cb != nil {
				nb = *cb
			}
		}
	}
	return nb, nil
}

// Board lists other peers' open offers between from and to (zero = open
// ended), hiding blocked and snoozed peers.
func (s *Service) Board(from, to time.Time) []BoardOffer {
	now := s.now()
	out := []BoardOffer{}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[boardKey]bool{}
	for _, e := range append(s.board.open(now), s.circleBoard.open(now)...) {
		p := s.people[e.owner]
		k := boardKey{e.owner, e.offer.GetBookingId()}
		if p.Avoided(now) || e.owner == s.h.ID() || seen[k] {
			continue
		}
		seen[k] = true
		bo := boardOffer(e)
		bo.Circles = s.circleNames(e.owner)
		if (!from.IsZero() && bo.Start.Before(from)) || (!to.IsZero() && !bo.Start.Before(to)) {
			continue
		}
		bo.Favourite = p.Favourite
		out = append(out, bo)
	}
	return out
}

func boardOffer(e *boardEntry) BoardOffer {
	o := e.offer
	return BoardOffer{
		Owner: e.owner.String(), Name: o.GetName(), BookingID: o.GetBookingId(),
		Start: time.Unix(o.GetStartUnix(), 0).UTC(), DurationMin: int(o.GetDurationMin()),
		Kind: kindFromPB(o.GetKind()), Activity: activityFromPB(o.GetActivity()), Quiet: o.GetQuiet(),
		Expires: time.Unix(o.GetExpiresUnix(), 0).UTC(),
	}
}

// People lists everyone the user has marked.
func (s *Service) People() []Person {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Person{}
	for _, p := range s.people {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SetPerson applies favorite, unfavorite, block, unblock or snooze.
func (s *Service) SetPerson(peerID, action string, snooze time.Duration) (Person, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return Person{}, invalidf("%q is not a peer ID", peerID)
	}
	if id == s.h.ID() {
		return Person{}, invalidf("that is your own peer ID")
	}
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	s.mu.Lock()
	p := s.people[id]
	s.mu.Unlock()
	p.ID = id.String()
	switch action {
	case "favorite":
		p.Favourite, p.Blocked = true, false
	case "unfavorite":
		p.Favourite = false
	case "block":
		p.Blocked, p.Favourite = true, false
	case "unblock":
		p.Blocked = false
		p.SnoozedUntil = time.Time{}
	case "snooze":
		if snooze <= 0 {
			return Person{}, invalidf("snooze needs a positive duration")
		}
		p.SnoozedUntil = s.now().Add(snooze)
	default:
		return Person{}, invalidf("unknown action %q (favorite, unfavorite, block, unblock, snooze)", action)
	}
	if err := s.db.put(personPrefix+p.ID, p); err != nil {
		return Person{}, fmt.Errorf("saving person: %w", err)
	}
	s.mu.Lock()
	s.people[id] = p
	s.mu.Unlock()
	return p, nil
}

// acceptablePeerLocked: not blocked, not snoozed, and a favourite when the
// user only wants favourites.
func (s *Service) acceptablePeerLocked(id peer.ID, now time.Time) bool {
	p := s.people[id]
	if p.Avoided(now) {
		return false
	}
	return !s.cfg.FavouritesOnly || p.Favourite
}

// offerFor builds the offer record of a booking.
func (s *Service) offerFor(b Booking, now time.Time) *pb.Offer {
	o := &pb.Offer{
		Version: protoVersion, Owner: []byte(s.h.ID()), BookingId: b.ID,
		StartUnix: b.Start.Unix(), DurationMin: uint32(b.DurationMin),
		Kind: kindToPB(b.Kind), Activity: activityToPB(b.Activity), Quiet: b.Quiet,
		Name: s.Name(), Seq: s.nextSeq(now), Withdrawn: b.State != StateSearching,
		ExpiresUnix: now.Add(s.offerTTL(s.placeOf(b))).Unix(), Stamp: s.ownStamp(),
	}
	if b.Kind == KindNow {
		o.StartUnix = now.Unix()
	}
	for _, a := range offerAddrsOf(s.h.Addrs()) {
		if len(o.Addrs) == maxOfferAddrs {
			break
		}
		o.Addrs = append(o.Addrs, a.Bytes())
	}
	if b.With != "" {
		if id, err := peer.Decode(b.With); err == nil {
			o.With = []byte(id)
		}
	}
	return o
}

// ownRecord numbers and signs the record of booking b as it stands: an
// open offer while it searches, a withdrawal otherwise (sealed to the
// invited peer for a private booking). ok is false when b changed state
// meanwhile, or the signing failed (logged).
//
// b may be a copy read before a change of state whose own announcement
// then outranks it. The seq is taken before this look at the booking, and
// a change is applied before its own announcement takes a seq: so a
// record of a state that has changed meanwhile is dropped here, and one
// that passes is outranked by the change's record. (An open offer
// announced after a Cancel's withdrawal, with a higher seq, would put the
// cancelled offer back on every board.)
func (s *Service) ownRecord(b Booking, now time.Time) (o *pb.Offer, env []byte, ok bool) {
	o = s.offerFor(b, now)
	s.mu.Lock()
	cur, known := s.bookings[b.ID]
	stale := (known && (cur.State == StateSearching) == o.GetWithdrawn()) || (!known && !o.GetWithdrawn())
	s.mu.Unlock()
	if stale {
		return nil, nil, false
	}
	var err error
	if b.With != "" && !s.v2Only {
		env, err = sealPrivateOffer(o, s.key, s.privateHandle(b.ID))
	} else {
		env, err = sealOffer(o, s.key)
	}
	if err != nil {
		s.log.Error("signing offer", "booking", b.ID, "err", err)
		return nil, nil, false
	}
	return o, env, true
}

// seqReserve is how far ahead of the seqs issued the stored ceiling is
// kept, so that the store is written about once an hour of announcements,
// not at every one.
const seqReserve = uint64(time.Hour / time.Microsecond)

// nextSeq numbers offer records: every announcement must differ (the
// gossip seen-cache drops repeats) and must outrank earlier ones, across
// restarts and clock corrections too. It follows the clock in
// microseconds (so records stay ordered for nodes that had no store to
// keep a counter in), but never falls below the last seq plus one: a
// clock set back must not make new offers lose to old ones. The ceiling of
// all seqs issued is stored, and a restart carries on from it.
func (s *Service) nextSeq(now time.Time) uint64 {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	s.lastSeq = max(s.lastSeq+1, uint64(max(now.UnixMicro(), 0)))
	if s.lastSeq >= s.seqCeiling {
		ceiling := s.lastSeq + seqReserve
		if err := s.db.put(seqKey, ceiling); err != nil {
			// The order holds until a restart; the next seq tries again.
			s.log.Error("saving offer sequence", "err", err)
		} else {
			s.seqCeiling = ceiling
		}
	}
	return s.lastSeq
}

// announce publishes the booking's offer (or its withdrawal). Until the
// identity stamp is ready there is nothing to publish: peers would refuse
// the record, and nothing was announced before it (prepareStamp announces
// every open offer when it is ready).
func (s *Service) announce(ctx context.Context, b Booking) {
	if s.ctx == nil || s.stamp.Load() == nil {
		return
	}
	if s.joinedTopic(s.placeOf(b)) == nil {
		// Not on the topic yet (a booking loaded at start, just placed,
		// a race with a leave): join it first.
		s.syncShards(s.ctx)
	}
	if b.State == StateSearching && !s.settledPlace(b.ID) {
		// Still choosing its lane: placeLoop announces it once settled.
		return
	}
	topics := s.topicsFor(b)
	if len(topics) == 0 {
		s.log.Debug("no offer topic to announce on", "booking", b.ID, "topic", s.placeOf(b))
		return
	}
	s.at("announce " + string(b.State))
	defer s.at("announced " + string(b.State))
	now := s.now()
	o, env, ok := s.ownRecord(b, now)
	if !ok {
		return
	}
	private := b.With != "" && !s.v2Only
	s.observePublished(o, s.placeOf(b).Topic())
	s.mu.Lock()
	_, again := s.announced[b.ID]
	if o.GetWithdrawn() {
		delete(s.announced, b.ID)
		delete(s.lastOffer, b.ID)
	} else {
		s.announced[b.ID] = now
		s.lastOffer[b.ID] = o
	}
	s.mu.Unlock()
	// A new offer or a withdrawal is news to peers reached only through a
	// relay, which gossip does not reach; a re-announcement is not (their
	// pulls keep it fresh). A booking that has just opened also wants
	// their offers now, not at the next pull (push.go).
	news := o.GetWithdrawn() || !again
	if !o.GetWithdrawn() && !again {
		s.kickRelayedPull()
	}
	if private {
		// Sealed to the invited peer, on the shard's sealed topic only:
		// never in the clear, on version 1's topic or a circle's. A push
		// goes to the invited peer only (private.go).
		if news {
			s.pushPrivate(b, o)
		}
		s.publishSealed(ctx, b, env)
		return
	}
	// A booking kept to its circle goes to its circle's topic only.
	if !restricted(&b, now) {
		if news {
			s.pushOffer(env)
			if !o.GetWithdrawn() {
				s.pushToClass(&b, env)
			}
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout)
		defer cancel()
		for _, t := range topics {
			if err := t.Publish(pctx, env); err != nil && ctx.Err() == nil {
				s.log.Debug("publishing offer", "topic", t.String(), "err", err)
			}
		}
	}
	s.announceInCircles(ctx, b, env)
}

// publishSealed publishes the sealed record of private booking b on its
// shard's sealed topic.
func (s *Service) publishSealed(ctx context.Context, b Booking, env []byte) {
	st := s.joinedTopic(ShardOf(b))
	if st == nil || st.sealed == nil {
		s.log.Debug("no sealed topic to announce on", "booking", b.ID, "shard", ShardOf(b))
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout) // real time: a publish bound (clock.go)
	defer cancel()
	if err := st.sealed.Publish(pctx, env); err != nil && ctx.Err() == nil {
		s.log.Debug("publishing sealed offer", "topic", st.key.SealedTopic(), "err", err)
	}
}

// announceLoop re-announces open offers (gossip keeps no history) and
// tidies up bookings whose time has passed. Each offer is re-announced
// once its last announcement is between 80% and 100% of AnnounceInterval
// old, at random: offers made in the same second, or nodes started
// together, would otherwise re-announce in one burst every interval,
// which every node then has to verify at once. After a start, open
// offers go out at the first check, a few seconds in.
func (s *Service) announceLoop(ctx context.Context) {
	s.clk.every(ctx, s.cfg.AnnounceInterval/announceChecks, func() {
		now := s.now()
		s.board.prune(now)
		s.sealedBoard.prune(now)
		s.closeIdleFanouts(2 * s.cfg.AnnounceInterval)
		// Views end, lingering shards are left, version 1 peers come
		// and go.
		s.syncShards(ctx)
		var open, due []Booking
		var past []string
		s.mu.Lock()
		for _, b := range s.bookings {
			if cp := *b; endPast(&cp, now) {
				past = append(past, b.ID)
			} else if b.State == StateSearching && !s.booking[b.ID] {
				open = append(open, *b)
			}
		}
		s.mu.Unlock()
		every := map[shard.Key]time.Duration{}
		place := map[string]shard.Key{}
		for _, b := range open {
			k := s.placeOf(b)
			place[b.ID] = k
			if _, ok := every[k]; !ok {
				every[k] = s.reannounceEvery(k)
			}
		}
		s.mu.Lock()
		for _, b := range open {
			if s.announceDueLocked(b.ID, every[place[b.ID]], now) {
				due = append(due, b)
			}
		}
		s.mu.Unlock()
		for _, id := range past {
			s.expire(id, now)
		}
		for _, b := range due {
			s.announce(ctx, b)
		}
	})
}

// anyShard, given to announceOpen, stands for every shard (version 1's
// topic holds them all).
var anyShard = shard.V1Key

// announceOpen announces at once every open offer that travels on topic
// k: those placed there and, on a day shard (the calendar's) or version
// 1's topic, every one it carries.
func (s *Service) announceOpen(ctx context.Context, k shard.Key) {
	var open []Booking
	s.mu.Lock()
	for _, b := range s.bookings {
		if b.State == StateSearching && s.travelsOn(*b, k) {
			open = append(open, *b)
		}
	}
	s.mu.Unlock()
	for _, b := range open {
		s.announce(ctx, b)
	}
}

// announceChecks is how many times per AnnounceInterval the announce loop
// looks for offers that are due.
const announceChecks = 8

// announceDueLocked reports whether booking id, re-announced every
// `every`, should be re-announced now.
func (s *Service) announceDueLocked(id string, every time.Duration, now time.Time) bool {
	last, ok := s.announced[id]
	if !ok {
		return true
	}
	age := elapsed(now, last)
	return age >= every || age >= every*4/5+time.Duration(mrand.Int64N(int64(every/5)+1))
}

// Re-announcing a crowded shard. Every open offer is re-announced while
// it stays open (gossip keeps no history; the record expires after
// OfferTTL), so a shard's re-announcements grew with its open offers,
// that is with the network: in `tandem bench swarm` they were over half
// of all records published, and every node on the shard verifies each.
// So the interval stretches with the shard: while a node sees more than
// reannounceBudget open offers on a shard, it re-announces its own there
// every AnnounceInterval x open / reannounceBudget (at most
// maxReannounceStretch x AnnounceInterval), and its records live as much
// longer. All owners together then re-announce about reannounceBudget
// records per AnnounceInterval on a shard, whatever its size. What
// re-announcing is for is kept: a node that joins a shard pulls its board
// (sync.go), a record lost to gossip is repaired by the next pull or
// re-announcement, and an offer whose owner vanished leaves boards when
// its longer TTL ends (proposers do not wait for it meanwhile: they plan
// only with owners they reach, reach.go).
const (
	reannounceBudget     = 16
	maxReannounceStretch = 20
)

// reannounceEvery is how often this node re-announces its open offers of
// shard k, from the open offers of k on its board.
func (s *Service) reannounceEvery(k shard.Key) time.Duration {
	d := s.cfg.AnnounceInterval * time.Duration(s.board.openIn(k)) / reannounceBudget
	return min(max(d, s.cfg.AnnounceInterval), maxReannounceStretch*s.cfg.AnnounceInterval)
}

// offerTTL is how long a record of shard k announced now stays valid:
// OfferTTL, stretched as the shard's re-announce interval is, at most
// maxOfferTTL.
func (s *Service) offerTTL(k shard.Key) time.Duration {
	every := s.reannounceEvery(k)
	return min(time.Duration(float64(s.cfg.OfferTTL)*float64(every)/float64(s.cfg.AnnounceInterval)), maxOfferTTL)
}

// endPast ends b if its time has come and gone, and reports whether it did.
func endPast(b *Booking, now time.Time) bool {
	switch {
	case b.State == StateMatched && now.After(b.End()):
		b.State = StateDone
	case b.State == StateSearching && b.Kind == KindScheduled && now.After(b.Start):
		b.State, b.Note = StateCancelled, "no partner was found in time"
	case b.State == StateSearching && b.Kind == KindNow && now.After(b.Start.Add(nowSearchTTL)):
		b.State, b.Note = StateCancelled, "nobody was free right now"
	default:
		return false
	}
	return true
}

// expire stores the end of booking id if its time has passed; if that
// fails, the booking stays as it was and the next check retries.
func (s *Service) expire(id string, now time.Time) {
	_, err := s.update(id, func(b *Booking) (*Booking, error) {
		if b == nil || !endPast(b, now) {
			return nil, nil
		}
		return b, nil
	})
	if err != nil {
		s.log.Error("ending a past booking", "booking", id, "err", err)
	}
}

// validateGossip is the topic validator: reject what is malformed or forged,
// ignore what is merely stale or over the sender's rate.
func (s *Service) validateGossip(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	s.validated.Add(1)
	now := s.now()
	author := msg.GetFrom()
	// Our own records are never rate limited: pubsub validates local
	// publishes too, and a node that cancels and rebooks in quick
	// succession (or announces all its open offers when its first peer
	// appears) must not drop its own withdrawals and announcements.
	if author != s.h.ID() && !s.limit.allow(author, now) {
		return pubsub.ValidationIgnore
	}
	o, err := s.openGossipOffer(msg.GetData(), now, author)
	if err != nil {
		var stale errStale
		if errors.As(err, &stale) {
			return pubsub.ValidationIgnore
		}
		s.refuseOffer(author, err)
		return pubsub.ValidationReject
	}
	msg.ValidatorData = o
	return pubsub.ValidationAccept
}

// refreshShare: a re-announcement that changes nothing comes soon if the
// record it renews has been on the board for less than 1/refreshShare of
// the new record's lifetime. Honest owners re-announce after at least 4/5
// of an interval whose record lives three (reannounceEvery, offerTTL),
// that is after 4/15 of the lifetime; 1/6 leaves room for clock skew. An
// honest node may send one soon for other reasons (its booking settling
// in a lane, its first peer appearing), so one is taken, and only a
// second in a row is needless.
const refreshShare = 6

// soonRefresh reports whether o, a refresh of prev (board.refreshOf),
// comes soon after it (refreshShare).
func soonRefresh(o *pb.Offer, prev heldRecord, now time.Time) bool {
	life := time.Unix(o.GetExpiresUnix(), 0).Sub(now)
	return elapsed(now, prev.seen) < life/refreshShare
}

// needlessRefresh reports whether gossip message data, published by
// author on topic, is a re-announcement of a record this node holds (and
// took from that topic) that changes nothing and comes soon after it,
// where that record itself came soon after the one before (soon). Such a
// message is dropped (GossipGate) before its signature is checked, and so
// not relayed:
// a stranger that re-signs its records every few seconds (the ground-ID
// attack test does) otherwise costs every node of the shard a signature
// check and a board write per record, for nothing. The record on the
// board stays as it was, and nothing of the unchecked message is used but
// to decide this. On a topic the record never came on (the lane a booking
// just moved to) the refresh is news and is checked and relayed as usual.
// It runs on gossipsub's event loop (GossipGate), so it takes no lock but
// the board's: a hard backoff from the offer (forgetBackoff) is not ended
// by a refresh it ignores, only by its own end or a record that changed.
func (s *Service) needlessRefresh(data []byte, author peer.ID, topic string, now time.Time) bool {
	o, ok := peekRecord(data)
	if !ok || peer.ID(o.GetOwner()) != author {
		return false
	}
	old, ok := s.board.refreshOf(o, author, topic)
	if !ok || !old.soon || !soonRefresh(o, old, now) {
		return false
	}
	s.needless.Add(1)
	return true
}

// NeedlessRefreshes is how many re-announcements from peers this node
// ignored without checking them: records it held, unchanged, sent again
// sooner than an honest owner does (needlessRefresh).
func (s *Service) NeedlessRefreshes() uint64 { return s.needless.Load() }

// RefusedOffers is how many offer records from peers this node refused for
// their content (malformed, forged, or text that breaks the usertext rules).
func (s *Service) RefusedOffers() uint64 { return s.refused.Load() }

// Silences is how many proposals of this node an offer owner took and left
// unanswered past the reply timeout, each putting the owner out of plans
// for a while (reach.go). Honest owners answer at once, so a count that
// grows under load says the node or its peers are starved, not attacked.
func (s *Service) Silences() uint64 { return s.silences.Load() }

// refuseOffer counts a refused offer record and says why: every one at
// debug, and at info at most once a minute (a peer whose name breaks the
// rules is invisible to everyone, so its user needs to be able to find out
// why; a flood of forged records must not flood the log).
func (s *Service) refuseOffer(from peer.ID, err error) {
	n := s.refused.Add(1)
	s.log.Debug("refusing offer", "from", from, "err", err)
	s.refusedLog.Do(func() {
		since := n - s.refusedLogged.Swap(n)
		s.log.Info("refusing offer", "from", from, "err", err, "refused_since_last_line", since, "refused_total", n)
	})
}

func (s *Service) readGossip(ctx context.Context, sub *pubsub.Subscription) {
	defer sub.Cancel()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		o, ok := msg.ValidatorData.(*pb.Offer)
		if !ok || msg.GetFrom() == s.h.ID() {
			continue
		}
		s.addOffer(o, msg.GetFrom(), msg.GetData(), OfferGossip)
		s.board.tookOn(msg.GetFrom(), o.GetBookingId(), msg.GetTopic())
	}
}

// addOffer puts a checked record that came from its owner (by gossip or
// a push) on the board.
func (s *Service) addOffer(o *pb.Offer, owner peer.ID, env []byte, src OfferSource) {
	if owner == s.h.ID() {
		return
	}
	now := s.now()
	// A re-announcement changes no plan: it wakes the matcher only if it
	// ends a backoff. The matcher plans the record's whole class on every
	// wake, and a stranger can re-sign its records as often as gossip lets
	// it (the ground-ID attack test re-announces 1000 offers every 3 s).
	prev, refresh := s.board.refreshOf(o, owner, "")
	if s.board.admit(o, owner, env, now, s.admitRank(owner, now, s.booksIn(classKeyOf(o))), owner) {
		if refresh && soonRefresh(o, prev, now) {
			s.board.markSoon(owner, o.GetBookingId(), o.GetSeq())
		}
		s.observe(o, owner, src)
		forgot := s.forgetBackoff(owner, o.GetBookingId())
		s.learnAddrs(o, owner)
		s.cfg.OnBoard()
		if !refresh || forgot {
			s.wake()
		}
	}
}

// learnAddrs keeps an offer owner's signed addresses so we can dial it to
// negotiate even when we are not directly connected.
func (s *Service) learnAddrs(o *pb.Offer, owner peer.ID) {
	if addrs := offerAddrs(o); len(addrs) > 0 {
		s.h.Peerstore().AddAddrs(owner, addrs, peerstore.TempAddrTTL*10)
	}
}

// joinPullGap: a peer joining a shard is not pulled from when a pull of
// that shard completed this recently. A node that has a fresh board gains
// nothing from another copy, and every connection made to negotiate a
// match would otherwise cost both sides a board.
const joinPullGap = 10 * time.Second

// watchPeers pulls the shard's board from every peer that joins its topic
// (unless a pull of the shard completed in the last joinPullGap; after
// the first pull, only what the peer took since the last one), and
// pushes it the node's own open offers there (pushOwnTo). Waiting for the
// topic join, not just the connection, closes the gap where an offer
// published before the peer's subscription was known would reach nobody
// until the next re-announcement: the pull covers offers the node did not
// have when it learned of the peer, the push those the peer did not.
func (s *Service) watchPeers(ctx context.Context, st *shardTopic, events *pubsub.TopicEventHandler) {
	defer events.Cancel()
	for {
		ev, err := events.NextPeerEvent(ctx)
		if err != nil {
			return
		}
		if ev.Type != pubsub.PeerJoin {
			if len(st.topic.ListPeers()) == 0 {
				st.connected.Store(false)
			}
			continue
		}
		if !st.connected.Swap(true) {
			// The shard's first peer after a join (or after losing every
			// peer): announce its open offers now rather than at the next
			// re-announcement, since gossip reached nobody until now.
			s.shardEvent(st.key.Topic(), "ready")
			s.goRun(func() { s.announceOpen(ctx, st.key) })
		}
		s.goRun(func() { s.joinPull(ctx, ev.Peer, st) })
		s.goRun(func() { s.pushOwnTo(ctx, ev.Peer, st.key) })
	}
}

// joinPull pulls shard st's board from p, which has just joined its
// topic: the whole board the first time, then, unless a pull completed in
// the last joinPullGap, what p took since the last pull (and a gap's worth
// before it). The board was whole after the first pull; a whole board at
// every join made every member of a busy shard pull one every
// joinPullGap.
func (s *Service) joinPull(ctx context.Context, p peer.ID, st *shardTopic) {
	switch last := st.lastPull.Load(); {
	case last == nil:
		s.syncBoard(ctx, p, st)
	case elapsed(s.now(), *last) >= joinPullGap:
		s.pullBoard(ctx, p, st, elapsed(s.now(), *last)+joinPullGap)
	}
}

// watchIdentified re-checks the matches held with every peer that
// connects (once identify says it speaks the match protocol) and re-sends
// Cancels it has not acknowledged. It also lets a version 1 peer bring
// the node onto version 1's topic (V1Auto).
func (s *Service) watchIdentified(ctx context.Context, sub event.Subscription) {
	defer sub.Close()
	for {
		var p peer.ID
		var listens []multiaddr.Multiaddr
		identified := false
		select {
		case <-ctx.Done():
			return
		case ev := <-sub.Out():
			switch e := ev.(type) {
			case event.EvtPeerIdentificationCompleted:
				p, identified, listens = e.Peer, true, e.ListenAddrs
				if e.Conn != nil && s.restarted(p, e.Conn) {
					s.wake()
				}
			case event.EvtPeerProtocolsUpdated:
				p = e.Peer
			}
		}
		if ok, err := s.h.Peerstore().SupportsProtocols(p, MatchProtocol); err != nil || len(ok) == 0 {
			continue
		}
		if identified && s.h.Network().Connectedness(p) == network.Limited && s.searching() {
			// Reached only through a relay: gossip will not bring its
			// offers, so pull them now rather than at the next relayed
			// pull (push.go).
			s.goRun(func() { s.syncBoard(ctx, p, nil) })
		}
		if identified && s.awaitedPeers()[p] {
			// The invited peer of a private booking of ours: its offer
			// and ours go straight over this connection (private.go).
			s.goRun(func() { s.pushPrivateTo(ctx, p) })
		}
		if s.cfg.V1 == V1Auto && isV1Peer(s.h, p) && s.joinedTopic(shard.V1Key) == nil {
			s.goRun(func() { s.syncShards(ctx) })
		}
		s.goRun(func() {
			if len(listens) > 0 {
				s.refreshPartnerAddrs(p, listens)
			}
			s.reconcile(ctx, p, true)
			s.resendCancels(ctx, s.now(), true, p.String())
		})
	}
}

// refreshPartnerAddrs stores listens, where partner p now says it
// listens (identify), with each match and owed Cancel kept with p, when
// they are not what is stored. A node that restarts listens on new ports
// (the daemon's listen addresses are port 0): the addresses kept when
// the match was made then lead nowhere, and if the other side restarts
// in turn, it finds nobody to re-check the match with or send its
// Cancel to. The partner's re-check after its own restart reaches us and
// tells us its new addresses; kept, they let our next restart reach it.
func (s *Service) refreshPartnerAddrs(p peer.ID, listens []multiaddr.Multiaddr) {
	var addrs []string
	for _, a := range dialOrder(listens) {
		if len(addrs) == maxOfferAddrs {
			break
		}
		addrs = append(addrs, a.String())
	}
	stale := func(b *Booking) bool {
		if b == nil || b.Partner != p.String() || !(b.State == StateMatched || b.CancelUnsent) {
			return false
		}
		kept := slices.Clone(b.PartnerAddrs)
		slices.Sort(kept)
		now := slices.Clone(addrs)
		slices.Sort(now)
		return !slices.Equal(kept, now)
	}
	var ids []string
	s.mu.Lock()
	for _, b := range s.bookings {
		if stale(b) {
			ids = append(ids, b.ID)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		_, err := s.update(id, func(b *Booking) (*Booking, error) {
			if !stale(b) {
				return nil, nil
			}
			b.PartnerAddrs = addrs
			return b, nil
		})
		if err != nil {
			s.log.Error("keeping the partner's new addresses", "booking", id, "err", err)
		}
	}
}
