package matchmaking

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/circle"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// Private circles (docs/protocol.md, Circles).
//
// A circle is a group of peers that share a secret (package circle). Each
// member subscribes to the circle's own gossipsub topic, whose name is an
// opaque hash of the secret, and publishes there, sealed with the
// circle's key: the signed offer records of its bookings (the same
// envelopes as on the public offers topic) and a presence beacon with its
// display name. Offers that arrive on a circle topic go on the circle
// board, never on the public board, so a board sync with a peer outside
// the circle never hands them on.
//
// A booking's Scope says who may match it: anyone (the default), members
// of its circle only, or members first and anyone once OpenAfterMin
// minutes have passed since it was booked. While a booking is restricted
// to its circle its offer goes only to the circle topic, the proposer
// proposes only to members, and the acceptor refuses proposals from peers
// it has not seen on the circle's topic ("not available"). Every other
// rule of matching is unchanged.

// Scope says who a booking may be matched with.
type Scope string

const (
	// ScopeAnyone: any compatible peer (the default).
	ScopeAnyone Scope = "anyone"
	// ScopeCircle: members of the booking's circle only.
	ScopeCircle Scope = "circle"
	// ScopeCircleFirst: members only for the first OpenAfterMin minutes
	// after booking, then anyone.
	ScopeCircleFirst Scope = "circle-first"
)

// DefaultOpenAfterMin is how long a "circle first" booking waits for a
// member before it opens to anyone, unless told otherwise.
const DefaultOpenAfterMin = 10

// maxCircles bounds how many circles a node is in: each costs a topic.
const maxCircles = 32

// Messages inside a circle's seal: a kind byte and its body.
const (
	circleMsgOffer    = 1 // a signed offer envelope, as on the public topic
	circleMsgPresence = 2 // the member's display name
)

// Circle is a circle the node is in, as the API shows it.
type Circle struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Code and Link are the invite, to share with new members.
	Code     string    `json:"code"`
	Link     string    `json:"link"`
	JoinedAt time.Time `json:"joined_at"`
	// Members are the peers this node has seen on the circle's topic.
	Members []CircleMember `json:"members"`
}

// CircleMember is a peer seen on a circle's topic.
type CircleMember struct {
	ID       string    `json:"id"`
	Name     string    `json:"name,omitempty"`
	LastSeen time.Time `json:"last_seen"`
}

// storedCircle is a circle as kept in the store.
type storedCircle struct {
	Name     string    `json:"name"`
	Secret   []byte    `json:"secret"`
	JoinedAt time.Time `json:"joined_at"`
}

const circlePrefix = "mm/circle/"

// circleState is one circle the node is in.
type circleState struct {
	stored  storedCircle
	secret  circle.Secret
	keys    circle.Keys
	members map[peer.ID]CircleMember
	// Set while the topic is joined (Start .. leave or Close); wg holds
	// the goroutines that use the topic.
	topic *pubsub.Topic
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// view is the circle as the API shows it (s.circMu held: members change).
func (cs *circleState) view() Circle {
	c := Circle{
		ID: cs.keys.ID, Name: cs.stored.Name, Code: circle.Code(cs.secret), Link: circle.Link(cs.stored.Name, cs.secret),
		JoinedAt: cs.stored.JoinedAt, Members: []CircleMember{},
	}
	for _, m := range cs.members {
		c.Members = append(c.Members, m)
	}
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].ID < c.Members[j].ID })
	return c
}

// loadCircles reads the stored circles (New).
func (s *Service) loadCircles() error {
	all, err := loadAll[storedCircle](s.db, circlePrefix)
	if err != nil {
		return fmt.Errorf("loading circles: %w", err)
	}
	for _, sc := range all {
		cs, err := newCircleState(sc)
		if err != nil {
			s.log.Warn("skipping a stored circle", "err", err)
			continue
		}
		s.circles[cs.keys.ID] = cs
	}
	return nil
}

func newCircleState(sc storedCircle) (*circleState, error) {
	if len(sc.Secret) != circle.SecretLen {
		return nil, fmt.Errorf("circle %q: secret of %d bytes", sc.Name, len(sc.Secret))
	}
	cs := &circleState{stored: sc, members: map[peer.ID]CircleMember{}}
	copy(cs.secret[:], sc.Secret)
	keys, err := circle.Derive(cs.secret)
	if err != nil {
		return nil, err
	}
	cs.keys = keys
	return cs, nil
}

// CreateCircle makes a new circle named name and joins it; the returned
// Circle carries its invite.
func (s *Service) CreateCircle(name string) (Circle, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return Circle{}, invalidf("a circle needs a name")
	}
	if err := checkText(usertext.Name, name); err != nil {
		return Circle{}, err
	}
	secret, err := circle.NewSecret()
	if err != nil {
		return Circle{}, err
	}
	return s.joinCircle(name, secret)
}

// JoinCircle joins the circle of an invite (a code or a link). name, if
// not empty, names the circle here instead of the invite's name.
func (s *Service) JoinCircle(invite, name string) (Circle, error) {
	linkName, secret, err := circle.ParseInvite(invite)
	if err != nil {
		return Circle{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if name = strings.TrimSpace(name); name == "" {
		name = usertext.Name.Clean(linkName)
	}
	if err := checkText(usertext.Name, name); err != nil {
		return Circle{}, err
	}
	return s.joinCircle(name, secret)
}

func (s *Service) joinCircle(name string, secret circle.Secret) (Circle, error) {
	cs, err := newCircleState(storedCircle{Name: name, Secret: secret[:], JoinedAt: s.now()})
	if err != nil {
		return Circle{}, err
	}
	if cs.stored.Name == "" {
		cs.stored.Name = "circle " + cs.keys.ID[:6]
	}
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	s.circMu.Lock()
	old, dup := s.circles[cs.keys.ID]
	n := len(s.circles)
	s.circMu.Unlock()
	if dup {
		return Circle{}, fmt.Errorf("%w: already in this circle (%q)", ErrConflict, old.stored.Name)
	}
	if n >= maxCircles {
		return Circle{}, fmt.Errorf("%w: in %d circles already, the most a node can be in", ErrConflict, maxCircles)
	}
	if err := s.db.put(circlePrefix+cs.keys.ID, cs.stored); err != nil {
		return Circle{}, fmt.Errorf("saving circle: %w", err)
	}
	if s.ctx != nil {
		if err := s.openCircle(cs); err != nil {
			s.db.del(circlePrefix + cs.keys.ID)
			return Circle{}, err
		}
	}
	s.circMu.Lock()
	s.circles[cs.keys.ID] = cs
	view := cs.view()
	s.circMu.Unlock()
	// Open offers go to the new circle at once.
	if s.ctx != nil {
		s.goRun(func() { s.announceOpen(s.ctx, anyShard) })
	}
	return view, nil
}

// findCircleLocked finds a circle by ID or name (s.circMu held).
func (s *Service) findCircleLocked(ref string) (*circleState, error) {
	if cs, ok := s.circles[ref]; ok {
		return cs, nil
	}
	var found *circleState
	for _, cs := range s.circles {
		if strings.EqualFold(cs.stored.Name, ref) {
			if found != nil {
				return nil, fmt.Errorf("%w: two circles are named %q; use the ID", ErrInvalid, ref)
			}
			found = cs
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no circle %q", ErrNotFound, ref)
	}
	return found, nil
}

// LeaveCircle leaves a circle (by ID or name) and forgets its secret. A
// live booking for that circle alone must be cancelled first.
func (s *Service) LeaveCircle(ref string) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	s.circMu.Lock()
	cs, err := s.findCircleLocked(ref)
	s.circMu.Unlock()
	if err != nil {
		return err
	}
	for _, b := range s.Bookings() {
		if b.Live() && b.Circle == cs.keys.ID && b.Scope != ScopeAnyone && b.Scope != "" {
			return fmt.Errorf("%w: booking %s at %s is for this circle; cancel it first", ErrConflict, b.ID, b.Start.Local().Format("Mon 15:04"))
		}
	}
	if err := s.db.del(circlePrefix + cs.keys.ID); err != nil {
		return fmt.Errorf("forgetting circle: %w", err)
	}
	s.circMu.Lock()
	delete(s.circles, cs.keys.ID)
	s.circMu.Unlock()
	s.closeCircle(cs)
	members := s.circleMembers()
	s.circleBoard.dropUnless(func(p peer.ID) bool { return members[p] })
	s.cfg.OnBoard()
	return nil
}

// dropUnless removes the entries whose owner keep refuses.
func (b *board) dropUnless(keep func(peer.ID) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.entries {
		if !keep(e.owner) {
			b.removeLocked(k, e) // keeps the admission counts (boardadmit.go) true
		}
	}
}

// Circles lists the circles the node is in, with the members it has seen.
func (s *Service) Circles() []Circle {
	s.circMu.Lock()
	defer s.circMu.Unlock()
	out := []Circle{}
	for _, cs := range s.circles {
		out = append(out, cs.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CircleRendezvous lists the DHT namespaces of the node's circles, under
// which discovery advertises and looks for fellow members.
func (s *Service) CircleRendezvous() []string {
	s.circMu.Lock()
	defer s.circMu.Unlock()
	var out []string
	for _, cs := range s.circles {
		out = append(out, cs.keys.Rendezvous)
	}
	sort.Strings(out)
	return out
}

// circleMembers is every peer seen in any circle.
func (s *Service) circleMembers() map[peer.ID]bool {
	s.circMu.Lock()
	defer s.circMu.Unlock()
	out := map[peer.ID]bool{}
	for _, cs := range s.circles {
		for id := range cs.members {
			out[id] = true
		}
	}
	return out
}

// openCircles joins the topics of the stored circles (Start).
func (s *Service) openCircles() error {
	s.circMu.Lock()
	all := make([]*circleState, 0, len(s.circles))
	for _, cs := range s.circles {
		all = append(all, cs)
	}
	s.circMu.Unlock()
	for _, cs := range all {
		if err := s.openCircle(cs); err != nil {
			return err
		}
	}
	return nil
}

// openCircle joins a circle's topic: validator, subscription, reader,
// and the presence beacon.
func (s *Service) openCircle(cs *circleState) error {
	keys := cs.keys
	if err := s.cfg.PubSub.RegisterTopicValidator(keys.Topic, func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		return s.validateCircle(keys, msg)
	}); err != nil {
		return fmt.Errorf("registering circle validator: %w", err)
	}
	topic, err := s.cfg.PubSub.Join(keys.Topic)
	if err != nil {
		s.cfg.PubSub.UnregisterTopicValidator(keys.Topic)
		return fmt.Errorf("joining circle topic: %w", err)
	}
	s.scoreTopic(topic)
	sub, err := topic.Subscribe(pubsub.WithBufferSize(256))
	if err != nil {
		topic.Close()
		s.cfg.PubSub.UnregisterTopicValidator(keys.Topic)
		return fmt.Errorf("subscribing to circle topic: %w", err)
	}
	events, err := topic.EventHandler()
	if err != nil {
		sub.Cancel()
		topic.Close()
		s.cfg.PubSub.UnregisterTopicValidator(keys.Topic)
		return fmt.Errorf("watching circle topic peers: %w", err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	cs.topic, cs.stop = topic, cancel
	run := func(f func()) {
		cs.wg.Add(1)
		if !s.goRun(func() {
			defer cs.wg.Done()
			f()
		}) {
			cs.wg.Done()
		}
	}
	run(func() { s.readCircle(ctx, cs, sub) })
	run(func() { s.circlePeers(ctx, cs, events) })
	run(func() {
		s.sayPresence(ctx, cs)
		s.clk.every(ctx, s.cfg.AnnounceInterval, func() { s.sayPresence(ctx, cs) })
	})
	return nil
}

// closeCircle leaves a circle's topic.
func (s *Service) closeCircle(cs *circleState) {
	if cs.stop == nil {
		return
	}
	cs.stop() // ends the reader, which cancels the subscription
	// The topic closes once nothing uses it: pubsub's event loop reads
	// the topic's handlers unlocked while Cancel removes one.
	cs.wg.Wait()
	if err := cs.topic.Close(); err != nil {
		s.log.Debug("closing circle topic", "err", err)
	}
	s.cfg.PubSub.UnregisterTopicValidator(cs.keys.Topic)
}

// circleMsg is a message from a circle's topic, opened and checked.
type circleMsg struct {
	offer    *pb.Offer
	envelope []byte
	name     string // presence
}

// openCircleMessage opens a sealed message from author on a circle's
// topic and checks what it carries as the public topic would.
func openCircleMessage(keys circle.Keys, data []byte, author peer.ID, now time.Time) (circleMsg, error) {
	plain, err := keys.Open([]byte(author), data)
	if err != nil {
		return circleMsg{}, err
	}
	if len(plain) == 0 {
		return circleMsg{}, errors.New("empty circle message")
	}
	body := plain[1:]
	switch plain[0] {
	case circleMsgOffer:
		o, err := openGossipOffer(body, now, author)
		if err != nil {
			return circleMsg{}, err
		}
		return circleMsg{offer: o, envelope: body, name: o.GetName()}, nil
	case circleMsgPresence:
		if err := usertext.Name.Check(string(body)); err != nil {
			return circleMsg{}, fmt.Errorf("presence name: %w", err)
		}
		return circleMsg{name: string(body)}, nil
	}
	return circleMsg{}, fmt.Errorf("circle message of unknown kind %d", plain[0])
}

// validateCircle is a circle topic's validator: what does not open with
// the circle's key, or carries a bad offer, is rejected.
func (s *Service) validateCircle(keys circle.Keys, msg *pubsub.Message) pubsub.ValidationResult {
	now := s.now()
	author := msg.GetFrom()
	if author != s.h.ID() && !s.limit.allow(author, now) {
		return pubsub.ValidationIgnore
	}
	m, err := openCircleMessage(keys, msg.GetData(), author, now)
	if err != nil {
		var stale errStale
		if errors.As(err, &stale) {
			return pubsub.ValidationIgnore
		}
		s.refuseOffer(author, fmt.Errorf("on a circle topic: %w", err))
		return pubsub.ValidationReject
	}
	msg.ValidatorData = m
	return pubsub.ValidationAccept
}

// readCircle takes in a circle's messages: it notes the member, and puts
// offers on the circle board.
func (s *Service) readCircle(ctx context.Context, cs *circleState, sub *pubsub.Subscription) {
	defer sub.Cancel()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		m, ok := msg.ValidatorData.(circleMsg)
		author := msg.GetFrom()
		if !ok || author == s.h.ID() {
			continue
		}
		now := s.now()
		s.circMu.Lock()
		mem := cs.members[author]
		if mem.ID == "" && len(cs.members) >= maxBoard {
			s.circMu.Unlock()
			continue
		}
		changed := mem.ID == "" || (m.name != "" && m.name != mem.Name)
		mem.ID, mem.LastSeen = author.String(), now
		if m.name != "" {
			mem.Name = m.name
		}
		cs.members[author] = mem
		s.circMu.Unlock()
		if m.offer != nil && s.circleBoard.put(m.offer, author, m.envelope, now) {
			s.forgetBackoff(author, m.offer.GetBookingId())
			s.learnAddrs(m.offer, author)
			s.wake()
			changed = true
		}
		// Not for every beacon: the UI reloads its board on this event.
		if changed {
			s.cfg.OnBoard()
		}
	}
}

// circlePeers greets every peer that joins a circle's topic: presence
// and open offers go out at once rather than at the next beacon.
func (s *Service) circlePeers(ctx context.Context, cs *circleState, events *pubsub.TopicEventHandler) {
	defer events.Cancel()
	for {
		ev, err := events.NextPeerEvent(ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin {
			s.sayPresence(ctx, cs)
			s.announceOpen(ctx, anyShard)
		}
	}
}

// sayPresence publishes the node's name on a circle's topic.
func (s *Service) sayPresence(ctx context.Context, cs *circleState) {
	s.publishCircle(ctx, cs, append([]byte{circleMsgPresence}, s.Name()...))
}

func (s *Service) publishCircle(ctx context.Context, cs *circleState, msg []byte) {
	sealed, err := cs.keys.Seal([]byte(s.h.ID()), msg)
	if err != nil {
		s.log.Error("sealing circle message", "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.StreamTimeout) // real time: a publish bound (clock.go)
	defer cancel()
	if err := cs.topic.Publish(pctx, sealed); err != nil && ctx.Err() == nil {
		s.log.Debug("publishing on circle topic", "err", err)
	}
}

// announceInCircles publishes an offer envelope (or withdrawal) of
// booking b on the topics of b's circles: its own circle, or every
// circle when it names none.
func (s *Service) announceInCircles(ctx context.Context, b Booking, env []byte) {
	var to []*circleState
	s.circMu.Lock()
	for id, cs := range s.circles {
		if cs.topic != nil && (b.Circle == "" || b.Circle == id) {
			to = append(to, cs)
		}
	}
	s.circMu.Unlock()
	for _, cs := range to {
		s.publishCircle(ctx, cs, append([]byte{circleMsgOffer}, env...))
	}
}

// restricted reports whether booking b may only match members of its
// circle at time now.
func restricted(b *Booking, now time.Time) bool {
	switch b.Scope {
	case ScopeCircle:
		return true
	case ScopeCircleFirst:
		return now.Before(b.CreatedAt.Add(time.Duration(b.OpenAfterMin) * time.Minute))
	}
	return false
}

// scopeAllowsLocked reports whether booking b may match peer p now: any
// peer, unless b is restricted to its circle, whose members this node
// has seen (s.mu held; takes s.circMu).
func (s *Service) scopeAllowsLocked(b *Booking, p peer.ID, now time.Time) bool {
	if !restricted(b, now) {
		return true
	}
	s.circMu.Lock()
	defer s.circMu.Unlock()
	for id, cs := range s.circles {
		if b.Circle != "" && b.Circle != id {
			continue
		}
		if _, ok := cs.members[p]; ok {
			return true
		}
	}
	return false
}

// checkScope validates and completes a booking request's scope.
func (s *Service) checkScope(req *BookRequest) error {
	if req.Scope == "" {
		req.Scope = s.cfg.DefaultScope
	}
	switch req.Scope {
	case "", ScopeAnyone:
		req.Scope, req.Circle, req.OpenAfterMin = ScopeAnyone, "", 0
		return nil
	case ScopeCircle, ScopeCircleFirst:
	default:
		return invalidf("scope must be anyone, circle or circle-first, not %q", req.Scope)
	}
	s.circMu.Lock()
	defer s.circMu.Unlock()
	if len(s.circles) == 0 {
		return invalidf("scope %s: you are in no circle (tandem circle create NAME, or circle join INVITE)", req.Scope)
	}
	if req.Circle != "" {
		cs, err := s.findCircleLocked(req.Circle)
		if err != nil {
			return fmt.Errorf("%w: scope %s: %w", ErrInvalid, req.Scope, err)
		}
		req.Circle = cs.keys.ID
	}
	if req.Scope == ScopeCircle {
		req.OpenAfterMin = 0
		return nil
	}
	if req.OpenAfterMin == 0 {
		req.OpenAfterMin = s.cfg.DefaultOpenAfterMin
	}
	if req.OpenAfterMin < 1 || req.OpenAfterMin > 14*24*60 {
		return invalidf("open_after_min must be between 1 and %d minutes, not %d", 14*24*60, req.OpenAfterMin)
	}
	return nil
}

// circleNames names the circles p has been seen in.
func (s *Service) circleNames(p peer.ID) []string {
	s.circMu.Lock()
	defer s.circMu.Unlock()
	var out []string
	for _, cs := range s.circles {
		if _, ok := cs.members[p]; ok {
			out = append(out, cs.stored.Name)
		}
	}
	sort.Strings(out)
	return out
}

// classOf is the open offers of b's slot class on the public board and
// the circle board, one record per offer (the newer).
func (s *Service) classOf(b *Booking, now time.Time) []*boardEntry {
	c := classOfBooking(b)
	out := s.board.class(c, now)
	circ := s.circleBoard.class(c, now)
	if len(circ) == 0 {
		// Most classes: no index of a class that may hold thousands,
		// built on every plan only to be thrown away.
		return out
	}
	idx := map[boardKey]int{}
	for i, e := range out {
		idx[boardKey{e.owner, e.offer.GetBookingId()}] = i
	}
	for _, e := range circ {
		k := boardKey{e.owner, e.offer.GetBookingId()}
		if i, ok := idx[k]; ok {
			if e.seq > out[i].seq {
				out[i] = e
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, e)
	}
	return out
}
