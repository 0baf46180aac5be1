package matchmaking

// The sealed-record flood: the attack of TestAttackSybilFlood on a shard's
// sealed topic (docs/protocol.md section 2.5 and its threat model), where
// a relay stores records it cannot read for an invited peer that comes
// later.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
	stranger "github.com/tandem-cowork/tandem/matchmaking/sybil"
)

// sealedAttacker is a bare host on one shard's topic and sealed topic,
// written against the sybil package (docs/protocol.md alone): it publishes
// sealed records as any identity it holds and answers every board sync
// with a reply chosen by the test.
type sealedAttacker struct {
	h       host.Host
	ctx     context.Context
	plain   *pubsub.Topic
	sealed  *pubsub.Topic
	reply   atomic.Pointer[pb.BoardResponse]
	pulled  atomic.Int64 // board syncs answered
	publish func(id *stranger.Identity, data []byte) error
}

func newSealedAttacker(t *testing.T, k shard.Key) *sealedAttacker {
	t.Helper()
	key, _ := mustKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); h.Close() })
	// A large outbound queue: the attacker wants every record to arrive.
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true), pubsub.WithPeerOutboundQueueSize(4096))
	if err != nil {
		t.Fatal(err)
	}
	a := &sealedAttacker{h: h, ctx: ctx}
	if a.plain, err = ps.Join(k.Topic()); err != nil {
		t.Fatal(err)
	}
	if a.sealed, err = ps.Join(k.SealedTopic()); err != nil {
		t.Fatal(err)
	}
	// On both topics, as a peer of the shard (victims pull its board),
	// reading nothing.
	for _, tp := range []*pubsub.Topic{a.plain, a.sealed} {
		if _, err := tp.Relay(); err != nil {
			t.Fatal(err)
		}
	}
	a.publish = func(id *stranger.Identity, data []byte) error {
		return a.sealed.Publish(ctx, data, pubsub.WithSecretKeyAndPeerId(id.Key, id.ID))
	}
	serve := func(st network.Stream) {
		defer st.Close()
		a.pulled.Add(1)
		resp := a.reply.Load()
		if resp == nil {
			resp = &pb.BoardResponse{}
		}
		protodelim.MarshalTo(st, resp)
	}
	// Both versions: the victims take it for a version 2 node (so they
	// stay off version 1's topic) and pull from it as from any peer.
	h.SetStreamHandler(BoardProtocolV2, serve)
	h.SetStreamHandler(BoardProtocol, serve)
	return a
}

// join connects the attacker to n.
func (a *sealedAttacker) join(t *testing.T, n *testNode) {
	t.Helper()
	connect(t, &testNode{h: a.h}, n)
}

// waitOn waits until the attacker sees n on the sealed topic: gossip
// goes to no one before.
func (a *sealedAttacker) waitOn(t *testing.T, n *testNode) {
	t.Helper()
	waitFor(t, 5*time.Second, "the attacker to see a victim on the sealed topic", func() bool {
		for _, p := range a.sealed.ListPeers() {
			if p == n.id() {
				return true
			}
		}
		return false
	})
}

// sealedIDs makes k identities that pay their stamp at the tests'
// difficulty.
func sealedIDs(t *testing.T, k int) []*stranger.Identity {
	t.Helper()
	out := make([]*stranger.Identity, k)
	for i := range out {
		id, err := stranger.NewIdentity(testStampBits)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = id
	}
	return out
}

// junkSealed is a sealed record of id's on shard k around a box of noise
// (1 to 3 padded blocks), with a tag of noise: what a relay cannot tell
// from a real one.
func junkSealed(t *testing.T, id *stranger.Identity, k shard.Key, i int) []byte {
	t.Helper()
	env, err := junkSealedErr(id, k, i)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func junkSealedErr(id *stranger.Identity, k shard.Key, i int) ([]byte, error) {
	handle := make([]byte, stranger.HandleLen)
	rand.Read(handle)
	tag := make([]byte, stranger.TagLen)
	rand.Read(tag)
	return id.TaggedRecord(k.Topic(), handle, 1, time.Now().Add(time.Hour).Unix(), stranger.RandomBox(1+i%3), tag)
}

// checkSealedBoard fails t unless n's sealed board is within its bounds
// and holds none of the bad records, nor any of the owner that did not
// pay its stamp (what n serves is verified in full by the caller). It returns the board's size in records and in bytes
// of envelopes.
func checkSealedBoard(t *testing.T, name string, n *testNode, forwarder, unpaid peer.ID, bad [][]byte) (int, int) {
	t.Helper()
	sb := n.svc.sealedBoard
	entries := sb.all()
	held := 0
	for _, e := range entries {
		held += len(e.envelope)
	}
	if len(entries) > maxBoard {
		t.Errorf("%s's sealed board holds %d records, more than %d", name, len(entries), maxBoard)
	}
	perOwner := map[peer.ID]int{}
	for _, e := range entries {
		perOwner[e.owner]++
		for _, b := range bad {
			if bytes.Equal(e.envelope, b) || e.owner == unpaid {
				t.Errorf("%s stored a sealed record with a bad signature, undecodable or unstamped", name)
			}
		}
	}
	for o, c := range perOwner {
		if c > maxPerOwner {
			t.Errorf("%s's sealed board holds %d records of %s, more than %d", name, c, o, maxPerOwner)
		}
	}
	sb.mu.Lock()
	via := sb.viaCount[forwarder]
	sb.mu.Unlock()
	if via > maxPerForwarder {
		t.Errorf("%s's sealed board holds %d records the attacker's board sync brought, more than %d", name, via, maxPerForwarder)
	}
	return len(entries), held
}

// Sealed flood: K stamped identities flood a shard's sealed topic with
// records no one can read, a hostile peer on the shard answers every board
// sync with 1 MiB of them (over the per-owner quota, with forged,
// undecodable and unstamped ones among them), and meanwhile a private pair
// matches: the owner A, on the shard through the flood, and the invited
// peer B, which joins the shard only when it books, as in
// TestLateInviteeGetsSealedOfferBySync. The two have met before: each
// knows where the other listens, so each dials the other when it books
// and they exchange their offers directly (private.go); otherwise B is
// connected only to the relay C, which is on the shard and holds A's
// sealed record (TANDEM_SEALED_UNMET=1: they have not met, and B learns
// A's addresses from that record).
// Asserted: the pair matches within 3x its no-attack time (+
// attackFloor), measured in this test the same way; every sealed board
// stays within its bounds (5000 records, 32 per owner, 1250 per board
// sync forwarder) and holds only records that verify, of owners that
// paid their stamp; the relay keeps A's record through the flood and lets
// B's in; nothing forged, undecodable or unstamped is stored or served.
func TestAttackSealedFlood(t *testing.T) {
	perID := 20 // one gossip burst per identity (docs/protocol.md: burst 20)
	if raceSlowdown > 1 {
		// Under the race detector a signature check is some 30 times
		// slower: the flood took 150 s, and a tenth of it 100 s. The code
		// it runs is under -race in TestSealedRecordsRefused,
		// TestSealedBoardQuotas and the tests below.
		t.Skip("a flood of signed records: too slow under the race detector")
	}
	ids := sealedIDs(t, attackSize(300, 300))
	total := len(ids) * perID

	// TANDEM_SEALED_STEADY=1 books the invitee once the burst below is
	// checked (by default it books during the burst's tail, while the
	// owner and the relay still check up to 512 of its records each).
	// TANDEM_ATTACK_TRACE=1 logs when each node gets each offer, and how,
	// its proposals and notes; TANDEM_ATTACK_PROF=file writes a CPU
	// profile of the attacked match (from the invitee's booking on).
	t0 := time.Now()
	trace := func(name string) func(*Config) {
		if os.Getenv("TANDEM_ATTACK_TRACE") == "" {
			return nil
		}
		return func(cfg *Config) {
			cfg.OnOffer = func(e OfferEvent) {
				t.Logf("%v: %s got an offer of %s by %s", time.Since(t0), name, e.Owner, e.Source)
			}
			cfg.OnProposal = func(e ProposalEvent) {
				t.Logf("%v: %s proposed to %s: %s after %v", time.Since(t0), name, e.Owner, e.Outcome, e.Took)
			}
			cfg.OnNote = func(e NoteEvent) {
				t.Logf("%v: %s note %s %s %s", time.Since(t0), name, e.What, e.Peer, e.Note)
			}
			cfg.OnShard = func(e ShardEvent) {
				t.Logf("%v: %s shard %+v", time.Since(t0), name, e)
			}
		}
	}
	a, c := newTestNode(t, trace("a")), newTestNode(t, nil)
	connect(t, a, c)
	c.view() // the relay: on the shards of the coming week
	bKey, bID := mustKey(t)
	b := &testNode{t: t, key: bKey, dir: t.TempDir(), tune: trace("b")}
	startTestNode(b)
	connect(t, b, c) // not to a
	// The pair has met before (a private booking names someone one
	// knows): each has the other's addresses, so each dials the other
	// when it books (private.go). TANDEM_SEALED_UNMET=1 measures a pair
	// that has not: the invitee learns the owner's addresses from the
	// sealed record the relay holds, in both rounds.
	met := os.Getenv("TANDEM_SEALED_UNMET") == ""
	if met {
		a.h.Peerstore().AddAddrs(b.id(), b.h.Addrs(), time.Hour)
		b.h.Peerstore().AddAddrs(a.id(), a.h.Addrs(), time.Hour)
	}

	// lateInvitee books a private booking of a's for b at slot, waits
	// until the relay holds its sealed record, then (after attack, if
	// set) b books, and returns how long b took to match from its booking.
	lateInvitee := func(slot time.Time, dur int, attack func(aRec boardKey)) time.Duration {
		t.Helper()
		ba := a.book(t, BookRequest{At: slot, DurationMin: dur, With: bID.String()})
		aRec := boardKey{owner: a.id()}
		waitFor(t, 10*time.Second, "the relay to store a's sealed record", func() bool {
			for _, e := range c.svc.sealedBoard.all() {
				if e.owner == a.id() && e.shard == ShardOf(ba) {
					aRec.booking = hexHandle(a.svc.privateHandle(ba.ID))
					return true
				}
			}
			return false
		})
		if attack != nil {
			attack(aRec)
		}
		start := time.Now()
		if os.Getenv("TANDEM_ATTACK_TRACE") != "" {
			t.Logf("%v: b books (a %s, b %s)", time.Since(t0), a.id(), b.id())
		}
		if f := os.Getenv("TANDEM_ATTACK_PROF"); f != "" && attack != nil {
			pf, _ := os.Create(f)
			pprof.StartCPUProfile(pf)
			defer pprof.StopCPUProfile()
		}
		bb := b.book(t, BookRequest{At: slot, DurationMin: dur, With: a.id().String()})
		waitFor(t, 60*time.Second, "the private pair to match", func() bool {
			return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
		})
		took := matchedAt(a, b, ba.ID, bb.ID).Sub(start)
		if got := b.booking(bb.ID).Partner; got != a.id().String() {
			t.Fatalf("b matched %s, not a", got)
		}
		return took
	}
	base := lateInvitee(nextSlot(2*time.Hour), 25, nil)
	// Negotiating connected a and b: cut that (a met b dials it again
	// when it books; one that has not reaches it through the relay).
	a.h.Network().ClosePeer(b.id())
	waitFor(t, 5*time.Second, "a and b apart", func() bool { return a.h.Network().Connectedness(b.id()) != network.Connected })
	if !met {
		a.h.Peerstore().ClearAddrs(b.id())
		b.h.Peerstore().ClearAddrs(a.id())
	}

	// The attack's shard: one b has never been on (another duration).
	slot := nextSlot(5 * time.Hour)
	k := shard.Scheduled(slot, 50)
	at := newSealedAttacker(t, k)
	forger := newSealedAttacker(t, k) // bad records by gossip cost their forwarder its score: a host of their own
	for _, n := range []*testNode{a, b, c} {
		at.join(t, n)
		forger.join(t, n)
	}

	// Bad records: a forged signature, undecodable bytes, a record of an
	// identity that did not pay its stamp.
	badKeyID := ids[0]
	unpaid := *sealedIDs(t, 1)[0]
	unpaid.Stamp = unpaidStamp(unpaid.ID)
	bad := [][]byte{
		breakSignature(t, junkSealed(t, badKeyID, k, 0)),
		[]byte("not a sealed record"),
		junkSealed(t, &unpaid, k, 1)[:200],
		junkSealed(t, &unpaid, k, 2),
	}
	// The hostile board sync: the bad records first, then 1 MiB of junk
	// from 40 identities, 48 records each (over the quota of 32).
	reply := &pb.BoardResponse{Sealed: append([][]byte(nil), bad...)}
	size := 0
	syncIDs := sealedIDs(t, 40)
	for i := 0; ; i++ {
		e := junkSealed(t, syncIDs[(i/48)%len(syncIDs)], k, i)
		if size+len(e)+8 > MaxBoardResponse-4096 {
			break
		}
		size += len(e) + 8
		reply.Sealed = append(reply.Sealed, e)
	}
	at.reply.Store(reply)

	var ms0, ms1 runtime.MemStats
	var flooded atomic.Int64
	floodCtx, stopFlood := context.WithCancel(at.ctx)
	defer stopFlood()
	took := lateInvitee(slot, 50, func(aRec boardKey) {
		for _, n := range []*testNode{a, c} {
			at.waitOn(t, n)
			forger.waitOn(t, n)
		}
		runtime.ReadMemStats(&ms0)
		for i, data := range bad {
			id := badKeyID
			if i >= 2 {
				id = &unpaid
			}
			if err := forger.publish(id, data); err != nil {
				t.Fatal(err)
			}
		}
		// The flood by gossip, paced so that no victim's validation
		// queue (1024 here) overflows: every record reaches a and c.
		validated := func() uint64 { return min(a.svc.validated.Load(), c.svc.validated.Load()) }
		v0 := validated()
		sent := 0
		for i := range perID {
			for _, id := range ids {
				if err := at.publish(id, junkSealed(t, id, k, i)); err != nil {
					t.Fatal(err)
				}
				if sent++; sent%256 == 0 {
					waitFor(t, 30*time.Second, "the victims to validate the flood", func() bool {
						return validated()+512 >= v0+uint64(sent)
					})
				}
			}
		}
		flooded.Store(int64(sent))
		waitFor(t, 30*time.Second, "the relay's sealed board full", func() bool {
			return len(c.svc.sealedBoard.all()) >= maxBoard
		})
		waitFor(t, 30*time.Second, "a hostile board sync answered", func() bool { return at.pulled.Load() > 0 })
		if os.Getenv("TANDEM_SEALED_STEADY") != "" {
			// The steady flood rather than its burst's tail: the
			// invitee books once the owner and the relay have checked
			// the whole burst (the flood below still goes on).
			// Checked means no record validated for 200 ms (a few
			// records of the burst may never reach a node: gossip
			// drops, a graylisted forwarder), nothing else being sent.
			last, since := validated(), time.Now()
			waitFor(t, 60*time.Second, "the victims to check the whole burst", func() bool {
				if v := validated(); v != last {
					last, since = v, time.Now()
				}
				return time.Since(since) >= 200*time.Millisecond
			})
		}
		runtime.ReadMemStats(&ms1)
		if c.svc.sealedBoard.get(aRec.owner, aRec.booking) == nil {
			t.Fatal("the flood pushed a's sealed record off the relay's board")
		}
		// The flood goes on while b books and matches: each identity at
		// under its gossip rate (2 a second).
		background(t, func() {
			tick := time.NewTicker(10 * time.Millisecond) // attack pace, not a wait
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-floodCtx.Done():
					return
				case <-tick.C:
				}
				id := ids[i%len(ids)]
				if env, err := junkSealedErr(id, k, i); err == nil && at.publish(id, env) == nil {
					flooded.Add(1)
				}
			}
		})
	})

	stopFlood() // the checks below cost enough CPU of their own
	sizes, held := map[string]int{}, map[string]int{}
	for name, n := range map[string]*testNode{"a": a, "b": b, "c": c} {
		sizes[name], held[name] = checkSealedBoard(t, name, n, at.h.ID(), unpaid.ID, bad)
		// What n serves, sealed, is none of the bad records, and what the
		// relay serves verifies (each check costs a signature: the
		// relay's reply stands for the three).
		ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
		resp, err := stranger.PullSealed(ctx, forger.h, n.id(), []string{k.Topic()})
		cancel()
		if err != nil {
			t.Fatalf("pulling %s's board: %v", name, err)
		}
		for _, e := range resp.GetSealed() {
			if _, _, _, err := n.svc.openSealed(e, n.svc.now()); n == c && err != nil {
				t.Errorf("%s served a sealed record that does not verify: %v", name, err)
			}
			for _, x := range bad {
				if bytes.Equal(e, x) {
					t.Errorf("%s served a bad sealed record", name)
				}
			}
		}
	}
	bRec := false
	for _, e := range c.svc.sealedBoard.all() {
		bRec = bRec || e.owner == b.id()
	}
	if !bRec {
		t.Error("the relay's full sealed board did not take b's sealed record")
	}
	t.Logf("%d sealed records from %d identities by gossip (%d in all by the end), hostile board sync of %d records (%d KiB) answered %d times; "+
		"sealed boards a %d, b %d, c %d records (c: %d KiB of envelopes); heap %d -> %d MB (whole test process); the late invitee matched in %v, %v without the attack (%.1fx)",
		total, len(ids), flooded.Load(), len(reply.GetSealed()), size>>10, at.pulled.Load(), sizes["a"], sizes["b"], sizes["c"], held["c"]>>10,
		ms0.HeapAlloc>>20, ms1.HeapAlloc>>20, took, base, float64(took)/float64(base))
	if limit := 3*base + attackFloor; took > limit {
		t.Fatalf("under the sealed flood the late invitee took %v, more than %v (3x %v + %v)", took, limit, base, attackFloor)
	}
}

func hexHandle(h []byte) string { return fmt.Sprintf("%x", h) }

// fillOpaque puts owners x per records of made-up owners on b, each an
// opaque record of shard k with an envelope of size bytes, as if its
// owner had published it.
func fillOpaque(b *board, k shard.Key, owners, per, size int, now time.Time) {
	for o := range owners {
		owner := peer.ID(fmt.Sprintf("sybil-%d", o))
		for i := range per {
			env := bytes.Repeat([]byte{byte(o), byte(i)}, size/2)
			b.admitEntry(&boardEntry{owner: owner, envelope: env, seq: 1, expires: now.Add(time.Hour).Unix(), shard: k, opaque: true},
				fmt.Sprintf("h%d", i), now, 0, owner)
		}
	}
}

// A full board serves its honest records first: a stranger's single
// record, among 250 flooding identities of 20 records each, is in a
// reply that has room for a sixtieth of the board (before: replies were
// cut at random, and it was in about one reply in sixty).
func TestBoardServesFewRecordOwnersFirst(t *testing.T) {
	now := time.Now()
	k := shard.Scheduled(nextSlot(3*time.Hour), 50)
	b := newBoard()
	fillOpaque(b, k, maxBoard/20, 20, 500, now)
	honest := bytes.Repeat([]byte{0xaa}, 500)
	if !b.admitEntry(&boardEntry{owner: "honest", envelope: honest, seq: 1, expires: now.Add(time.Hour).Unix(), shard: k, opaque: true}, "h", now, 0, "honest") {
		t.Fatal("a full board refused a stranger's only record")
	}
	for range 20 {
		envs := b.envelopes(now, time.Time{}, 40<<10, wantAll)
		if !slices.ContainsFunc(envs, func(e []byte) bool { return bytes.Equal(e, honest) }) {
			t.Fatalf("a reply of %d records left out the stranger's only record", len(envs))
		}
	}
}

// An invited peer whose boards a flood has filled with one record per
// identity (the flood that needs as many stamps as records, which
// admission cannot stop), brought by the relay it syncs with, still
// opens, from a board sync with that relay, the record of the peer its
// private booking waits for, and puts its offer on the full board;
// others' records stay out unverified (before: that record was skipped
// with them, and the offer, once opened, was refused for the relay's
// quota; the pair waited for the owner's next announcement by gossip).
func TestSealedFloodKeepsAwaitedRecord(t *testing.T) {
	v := newTestNode(t, nil)
	aKey, aID := mustKey(t)
	slot := nextSlot(3 * time.Hour)
	bv := v.book(t, BookRequest{At: slot, DurationMin: 50, With: aID.String()})
	now := v.svc.now()
	k := ShardOf(bv)
	strangerKey, strangerID := mustKey(t)
	_, relay := mustKey(t)
	fillOpaque(v.svc.sealedBoard, k, maxBoard, 1, 500, now)
	// And the public board: full of one record per identity, the relay's
	// quota spent on the flood it brought.
	for i := range maxBoard {
		owner := peer.ID(fmt.Sprintf("public-%d", i))
		via := owner
		if i < maxPerForwarder {
			via = relay
		}
		v.svc.board.admitEntry(&boardEntry{owner: owner, envelope: []byte("x"), seq: 1, expires: now.Add(time.Hour).Unix(), shard: k, opaque: true},
			"b", now, 0, via)
	}
	seal := func(key crypto.PrivKey, owner peer.ID, booking string) []byte {
		o := privateOffer(owner, v.id(), now, booking)
		o.StartUnix, o.DurationMin, o.Activity = slot.Unix(), 50, pb.Activity_ACTIVITY_ANYTHING
		rec, err := sealPrivateOffer(o, key, bytes.Repeat([]byte{1}, sealedHandleLen))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	v.svc.mergeSealed([][]byte{seal(strangerKey, strangerID, "s"), seal(aKey, aID, "a-private")}, relay)
	if v.svc.board.get(aID, "a-private") == nil {
		t.Fatal("the invited peer does not have the offer of the peer it waits for")
	}
	if v.svc.board.get(strangerID, "s") != nil {
		t.Fatal("a record the full sealed board refuses was opened")
	}
}

// A board sync reply to a requester that reads sealed records keeps half
// its room for them: a node whose public board a flood has filled (more
// than a reply holds) still serves the sealed records it relays (before:
// public offers took the whole reply, and a relay served no sealed record
// while the flood lasted).
func TestBoardReplyKeepsRoomForSealed(t *testing.T) {
	v := newTestNode(t, nil)
	now := v.svc.now()
	k := shard.Scheduled(nextSlot(3*time.Hour), 50)
	fillOpaque(v.svc.board, k, maxBoard/20, 20, 600, now) // 3 MB of public records
	fillOpaque(v.svc.sealedBoard, k, 10, 10, 700, now)    // 70 KB of sealed ones
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	connect(t, &testNode{h: h}, v)
	ctx, cancel := context.WithTimeout(context.Background(), deadline(5*time.Second))
	defer cancel()
	resp, err := stranger.PullSealed(ctx, h, v.id(), []string{k.Topic()})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSealed()) != 100 || len(resp.GetEnvelopes()) == 0 {
		t.Fatalf("the reply carries %d public and %d sealed records, want some and all 100", len(resp.GetEnvelopes()), len(resp.GetSealed()))
	}
}

// A board sync reply of a thousand sealed records (relay duty: records
// the node only stores to serve on) does not make the pull that brought
// them check them all: the record of the peer the node's private booking
// waits for is opened at once, the rest queued and checked at
// relayCheckRate in the background, so a node joining a flooded shard
// keeps its CPU for its own match (before: every record was checked as
// the reply came, some 1,300 signature checks per hostile reply, and a
// late invitee under TestAttackSealedFlood matched 5-25x slower than
// without the flood). The queued records still reach the sealed board.
func TestBoardSyncDefersRelayDuty(t *testing.T) {
	v := newTestNode(t, nil)
	aKey, aID := mustKey(t)
	slot := nextSlot(3 * time.Hour)
	bv := v.book(t, BookRequest{At: slot, DurationMin: 50, With: aID.String()})
	k := ShardOf(bv)
	now := v.svc.now()
	o := privateOffer(aID, v.id(), now, "a-private")
	o.StartUnix, o.DurationMin, o.Activity = slot.Unix(), 50, pb.Activity_ACTIVITY_ANYTHING
	aRec, err := sealPrivateOffer(o, aKey, bytes.Repeat([]byte{1}, sealedHandleLen))
	if err != nil {
		t.Fatal(err)
	}
	// The reply: 30 records of each of 40 identities, then a's.
	reply := &pb.BoardResponse{}
	for _, id := range sealedIDs(t, 40) {
		for i := range 30 {
			reply.Sealed = append(reply.Sealed, junkSealed(t, id, k, i))
		}
	}
	reply.Sealed = append(reply.Sealed, aRec)
	at := newSealedAttacker(t, k)
	at.reply.Store(reply)
	at.join(t, v)
	st := v.svc.joinedTopic(k)
	if st == nil {
		t.Fatal("the node is not on its booking's shard")
	}
	v.svc.syncBoard(context.Background(), at.h.ID(), st)
	if at.pulled.Load() == 0 {
		t.Fatal("the board sync did not reach the responder")
	}
	if v.svc.board.get(aID, "a-private") == nil {
		t.Fatal("the pull did not open the awaited peer's record at once")
	}
	// A few may have been checked already, by the background loop.
	if n := len(v.svc.sealedBoard.all()); n > len(reply.Sealed)/4 {
		t.Fatalf("the pull itself checked and stored %d of %d records", n, len(reply.Sealed))
	}
	waitFor(t, 30*time.Second, "the queued records checked and stored", func() bool {
		return v.svc.relayIdle() && len(v.svc.sealedBoard.all()) == len(reply.Sealed)
	})
}

// A flood of fresh identities, one sealed record each (5000 stamps: the
// flood that per-owner quotas cannot stop), on a node's full sealed board
// evicts no record of a peer with standing with the node, nor of a peer a
// private booking of the node waits for, whatever their number of
// records; a stranger's single record stays too. A stranger's extra
// records go first, as on the public board (boardadmit.go). Before: an
// awaited peer's records were admitted to the sealed board at their
// owner's plain standing (a stranger's), and the flood trimmed them to one.
func TestSealedFloodSparesStandingAndAwaited(t *testing.T) {
	v := newTestNode(t, nil)
	_, friend := mustKey(t)
	_, awaited := mustKey(t)
	_, single := mustKey(t)
	_, several := mustKey(t)
	v.svc.AddTrackRecord(friend)
	slot := nextSlot(3 * time.Hour)
	bv := v.book(t, BookRequest{At: slot, DurationMin: 50, With: awaited.String()})
	k := ShardOf(bv)
	now := v.svc.now()
	take := func(owner peer.ID, i int, via peer.ID) {
		handle := make([]byte, sealedHandleLen)
		binary.BigEndian.PutUint32(handle, uint32(i))
		so := &pb.SealedOffer{Version: sealedVersion, Shard: k.Topic(), Handle: handle, Seq: 1, ExpiresUnix: now.Add(time.Hour).Unix()}
		v.svc.takeSealed(sealedIn{so: so, owner: owner, shard: k, env: append([]byte(owner), handle...)}, via, OfferGossip)
	}
	honest := map[peer.ID]int{friend: 3, awaited: 3, single: 1, several: 3}
	for owner, n := range honest {
		for i := range n {
			take(owner, i, owner)
		}
	}
	// One relay brought the awaited peer's third record (its quota is
	// then spent on the flood it relays too).
	_, relay := mustKey(t)
	take(awaited, 3, relay)
	honest[awaited]++
	for i := range maxBoard + 100 {
		take(peer.ID(fmt.Sprintf("fresh-%d", i)), 0, peer.ID(fmt.Sprintf("fresh-%d", i)))
	}
	held := map[peer.ID]int{}
	for _, e := range v.svc.sealedBoard.all() {
		held[e.owner]++
	}
	if n := len(v.svc.sealedBoard.all()); n > maxBoard {
		t.Fatalf("the sealed board holds %d records, more than %d", n, maxBoard)
	}
	for owner, name := range map[peer.ID]string{friend: "a peer with standing", awaited: "the awaited peer", single: "a stranger with one record"} {
		if held[owner] != honest[owner] {
			t.Errorf("the flood left %d of %s's %d sealed records", held[owner], name, honest[owner])
		}
	}
	if held[several] < 1 {
		t.Error("the flood pushed out every record of a stranger with several")
	}
	// On the full board, a new record of a stranger v is connected to
	// takes a fresh identity's place (Service.admitRank); one of a
	// stranger it is not connected to is refused.
	live, far := newSybils(t, 1)[0], newSybils(t, 1)[0]
	if err := live.h.Connect(context.Background(), peer.AddrInfo{ID: v.id(), Addrs: v.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	take(live.id, 0, live.id)
	take(far.id, 0, far.id)
	held = map[peer.ID]int{}
	for _, e := range v.svc.sealedBoard.all() {
		held[e.owner]++
	}
	if held[live.id] != 1 || held[far.id] != 0 {
		t.Errorf("on the full sealed board: the connected stranger's record %d (want 1), the unconnected one's %d (want 0)", held[live.id], held[far.id])
	}
	if n := len(v.svc.sealedBoard.all()); n > maxBoard {
		t.Fatalf("the sealed board holds %d records, more than %d", n, maxBoard)
	}
}
