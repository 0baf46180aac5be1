package matchmaking

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/tandem-cowork/tandem/matchmaking/box"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
	stranger "github.com/tandem-cowork/tandem/matchmaking/sybil"
)

// sealedParts builds a sealed record by hand, so a test can get any part
// of it wrong: inner is the plaintext of the box (nil: the padded
// envelope of o), to the peer it is sealed to, and edit changes the outer
// record before key signs it.
type sealedParts struct {
	o     *pb.Offer
	key   crypto.PrivKey // signs the inner offer
	outer crypto.PrivKey // signs the record (nil: key)
	to    peer.ID
	inner []byte
	edit  func(*pb.SealedOffer)
	// untagged: a record of an older owner, without a tag.
	untagged bool
}

func (p sealedParts) build(t testing.TB) []byte {
	t.Helper()
	outer := p.outer
	if outer == nil {
		outer = p.key
	}
	author, _ := peer.IDFromPrivateKey(outer)
	plain := p.inner
	if plain == nil {
		env, err := sealOffer(p.o, p.key)
		if err != nil {
			t.Fatal(err)
		}
		plain = padOffer(env)
	}
	sh := shardOfOffer(p.o).Topic()
	sealed, err := box.SealTo(p.to, plain, sealedAD(author, sh))
	if err != nil {
		t.Fatal(err)
	}
	so := &pb.SealedOffer{Version: sealedVersion, Shard: sh, Handle: bytes.Repeat([]byte{7}, sealedHandleLen),
		Seq: p.o.GetSeq(), ExpiresUnix: p.o.GetExpiresUnix(), Stamp: mintStamp(author, testStampBits), Box: sealed}
	if !p.untagged {
		self, err := box.NewOpener(outer)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := self.PairKey(p.to)
		if err != nil {
			t.Fatal(err)
		}
		so.Tag = sealedTag(pair, sh, author, so.Handle)
	}
	if p.edit != nil {
		p.edit(so)
	}
	env, err := record.Seal(&sealedRecord{so: so}, outer)
	if err != nil {
		t.Fatal(err)
	}
	out, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// privateOffer is a valid private offer of owner for peer with.
func privateOffer(owner, with peer.ID, now time.Time, booking string) *pb.Offer {
	o := validOffer(owner, now)
	o.BookingId, o.With = booking, []byte(with)
	return o
}

// gossipMsg is a gossip message from author as a validator sees it.
func gossipMsg(author peer.ID, data []byte) *pubsub.Message {
	return &pubsub.Message{Message: &pubsubpb.Message{From: []byte(author), Data: data}}
}

// Sealed records that are garbage, tampered with, forged, or sealed to us
// with a bad inside are refused with an error that says what is wrong,
// and change nothing: neither board takes them, by gossip or board sync.
// Whoever could have seen the fault (any relay: signature, fields, shard,
// stamp) is penalised by gossip (reject); a bad inside only the invited
// peer sees is ignored, so relays that forwarded it in good faith are
// not, and counted against its author.
func TestSealedRecordsRefused(t *testing.T) {
	logs := &syncLog{}
	v := newTestNode(t, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	v.view()
	now := v.svc.now()
	xKey, x := mustKey(t)
	yKey, y := mustKey(t)
	good := privateOffer(x, v.id(), now, "x-private")
	k := shardOfOffer(good)
	other := k
	other.DurationMin = 25
	flip := func(b []byte) []byte {
		out := bytes.Clone(b)
		out[len(out)/2] ^= 0x40
		return out
	}
	goodRec := sealedParts{o: good, key: xKey, to: v.id()}.build(t)
	cases := []struct {
		name   string
		author peer.ID
		data   []byte
		want   pubsub.ValidationResult
		err    string // in the refusal
	}{
		{"garbage", x, []byte("not a sealed offer"), pubsub.ValidationReject, "opening sealed offer envelope"},
		{"altered in transit", x, flip(goodRec), pubsub.ValidationReject, "opening sealed offer envelope"},
		{"a plain offer on the sealed topic", x, mustSeal(t, good, xKey), pubsub.ValidationReject, "opening sealed offer envelope"},
		{"published by another author", y, goodRec, pubsub.ValidationReject, "published by"},
		{"version 2", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Version = 2 }}.build(t), pubsub.ValidationReject, "version 2 not supported"},
		{"short handle", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Handle = so.Handle[:4] }}.build(t), pubsub.ValidationReject, "handle of 4 bytes"},
		{"no shard", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Shard = shard.V1Topic }}.build(t), pubsub.ValidationReject, "not a version 2 shard"},
		{"on another shard's topic", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Shard = other.Topic() }}.build(t), pubsub.ValidationReject, "published on"},
		{"unpadded box", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Box = so.Box[:len(so.Box)-1] }}.build(t), pubsub.ValidationReject, "not a padded box"},
		{"unpaid stamp", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Stamp = unpaidStamp(x) }}.build(t), pubsub.ValidationReject, "stamp"},
		{"expiry a day ahead", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.ExpiresUnix = now.Add(24 * time.Hour).Unix() }}.build(t), pubsub.ValidationReject, "expiry too far ahead"},
		{"expired", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.ExpiresUnix = now.Add(-time.Hour).Unix() }}.build(t), pubsub.ValidationIgnore, ""},
		{"a tag of 5 bytes", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Tag = so.Tag[:5] }}.build(t), pubsub.ValidationReject, "tag of 5 bytes"},
		// Tagged for v (only x or v can compute that), bad inside.
		{"tagged for us, a box that does not open", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Box = stranger.RandomBox(2) }}.build(t), pubsub.ValidationIgnore, "tagged for us does not open"},
		// Sealed to v, fine outside, bad inside.
		{"garbage inside", x, sealedParts{o: good, key: xKey, to: v.id(), inner: bytes.Repeat([]byte{0xff}, sealedPad)}.build(t), pubsub.ValidationIgnore, "an envelope of 65535 bytes"},
		{"a forged offer inside", x, sealedParts{o: good, key: xKey, to: v.id(), inner: padOffer(breakSignature(t, mustSeal(t, good, xKey)))}.build(t), pubsub.ValidationIgnore, "sealed offer: opening offer envelope"},
		{"another owner's offer inside", x, sealedParts{o: privateOffer(y, v.id(), now, "y"), key: yKey, outer: xKey, to: v.id()}.build(t), pubsub.ValidationIgnore, "carries an offer of " + y.String()},
		{"naming another peer in with", x, sealedParts{o: privateOffer(x, y, now, "x-for-y"), key: xKey, to: v.id()}.build(t), pubsub.ValidationIgnore, "names another peer in with"},
		{"a public offer inside", x, sealedParts{o: validOffer(x, now), key: xKey, to: v.id()}.build(t), pubsub.ValidationIgnore, "names another peer in with"},
		{"another seq outside", x, sealedParts{o: good, key: xKey, to: v.id(), edit: func(so *pb.SealedOffer) { so.Seq++ }}.build(t), pubsub.ValidationIgnore, "disagrees with the offer inside"},
	}
	// Fine in a board sync: the fault is only where gossip brought them.
	syncOK := map[string]bool{"published by another author": true, "on another shard's topic": true}
	boards := func() (int, int) { return len(v.svc.board.all()), len(v.svc.sealedBoard.all()) }
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, logged := v.svc.RefusedOffers(), len(logs.String())
			msg := gossipMsg(c.author, c.data)
			if got := v.svc.validateSealed(k, msg); got != c.want {
				t.Fatalf("validator said %v, want %v", got, c.want)
			}
			if c.err != "" {
				if v.svc.RefusedOffers() != before+1 {
					t.Fatalf("refused %d, want one more than %d", v.svc.RefusedOffers(), before)
				}
				if out := logs.String()[logged:]; !strings.Contains(out, c.err) {
					t.Fatalf("the refusal does not say %q:\n%s", c.err, out)
				}
			}
			// Nor does a board sync take it.
			if added, _ := v.svc.mergeSealed([][]byte{c.data}, y); added != 0 && !syncOK[c.name] {
				t.Fatalf("a board sync took it")
			}
			if syncOK[c.name] {
				clearBoards(v.svc)
			}
			if pub, sealed := boards(); pub != 0 || sealed != 0 {
				t.Fatalf("boards hold %d offers and %d sealed records", pub, sealed)
			}
		})
	}
	// The good one passes, and is opened.
	msg := gossipMsg(x, goodRec)
	if got := v.svc.validateSealed(k, msg); got != pubsub.ValidationAccept {
		t.Fatalf("a good sealed record: %v", got)
	}
	in := msg.ValidatorData.(sealedIn)
	if in.offer == nil || in.offer.GetBookingId() != "x-private" {
		t.Fatalf("a good sealed record opened as %+v", in.offer)
	}
	// A record sealed to us is taken by the validator itself, which
	// cannot drop it as a full subscription buffer can.
	if v.svc.board.get(x, "x-private") == nil || len(v.svc.sealedBoard.all()) != 1 {
		t.Fatal("the validator did not take a good record sealed to us")
	}
	clearBoards(v.svc)

	// By gossip, from a peer: what is rejected is never stored; the
	// good record after them is.
	a := newAttacker(t)
	sealedTopic, err := a.ps.Join(k.SealedTopic())
	if err != nil {
		t.Fatal(err)
	}
	a.connect(v)
	waitFor(t, 5*time.Second, "the attacker on the sealed topic", func() bool {
		for _, p := range sealedTopic.ListPeers() {
			if p == v.id() {
				return true
			}
		}
		return false
	})
	// A fresh author: x has spent its gossip rate above.
	zKey, z := mustKey(t)
	zGood := sealedParts{o: privateOffer(z, v.id(), now, "z-private"), key: zKey, to: v.id()}.build(t)
	refusedBefore := v.svc.RefusedOffers()
	for _, data := range [][]byte{[]byte("not a sealed offer"), flip(zGood), sealedParts{o: privateOffer(z, y, now, "z-for-y"), key: zKey, to: v.id()}.build(t), zGood} {
		if err := sealedTopic.Publish(a.ctx, data, pubsub.WithSecretKeyAndPeerId(zKey, z)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the good record stored and opened", func() bool { return v.svc.board.get(z, "z-private") != nil })
	if got := v.svc.RefusedOffers() - refusedBefore; got != 3 {
		t.Fatalf("refused %d of the 3 bad records", got)
	}
	if pub, sealed := boards(); pub != 1 || sealed != 1 {
		t.Fatalf("boards hold %d offers and %d sealed records, want the good one on each", pub, sealed)
	}
	// What v serves on: the sealed record, never the offer inside.
	envs, _, err := a.pullBoard(v.id(), protoVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		if o, ok := peekRecord(e); ok && o.GetBookingId() == "z-private" {
			t.Fatal("the invited peer serves the private offer in the clear")
		}
	}
}

// clearBoards empties a node's boards (between cases of a test).
func clearBoards(s *Service) {
	s.board.keepOnly(func(shard.Key, peer.ID) bool { return false })
	s.sealedBoard.keepOnly(func(shard.Key, peer.ID) bool { return false })
}

// A stranger that proposes to a private booking hears "not available", as
// if the booking did not exist: it learns nothing from its ID.
func TestStrangerProposalToPrivateBooking(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	a, c := nodes[0], nodes[1]
	_, invited := mustKey(t)
	slot := nextSlot(4 * time.Hour)
	ba := a.book(t, BookRequest{At: slot, DurationMin: 25, With: invited.String()})
	bc := c.book(t, BookRequest{At: slot, DurationMin: 25})
	reply := roundTripRaw(t, c.h, a.id(), &pb.MatchMessage{Body: &pb.MatchMessage_Propose{Propose: &pb.Propose{
		FromBooking: bc.ID, ToBooking: ba.ID, StartUnix: slot.Unix(), DurationMin: 25,
		Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "stranger",
		Offer: c.sealedOffer(t, bc),
	}}})
	if reply.GetReject().GetReason() != reasonUnavailable {
		t.Fatalf("a answered the stranger with %v, want reject %q", reply, reasonUnavailable)
	}
	if got := a.booking(ba.ID); got.State != StateSearching {
		t.Fatalf("a's booking is %s", got.State)
	}
}

// An invited peer that comes online after the offer was published gets it
// from a board sync with a third node, which stored the sealed record
// without reading it, and the pair matches without ever being connected.
func TestLateInviteeGetsSealedOfferBySync(t *testing.T) {
	a, c := newTestNode(t, nil), newTestNode(t, nil)
	connect(t, a, c)
	c.view()
	bKey, bID := mustKey(t)
	ba := a.book(t, BookRequest{At: nextSlot(9 * time.Hour), DurationMin: 75, With: bID.String()})
	waitFor(t, 10*time.Second, "the third node to store the sealed record", func() bool {
		for _, e := range c.svc.sealedBoard.all() {
			if e.owner == a.id() {
				return true
			}
		}
		return false
	})
	if c.svc.board.get(a.id(), ba.ID) != nil {
		t.Fatal("the third node opened a record not sealed to it")
	}
	var mu sync.Mutex
	var firstSource OfferSource
	b := &testNode{t: t, key: bKey, dir: t.TempDir(), tune: func(cfg *Config) {
		cfg.OnOffer = func(e OfferEvent) {
			mu.Lock()
			defer mu.Unlock()
			if e.Owner == a.id() && e.BookingID == ba.ID && firstSource == "" {
				firstSource = e.Source
			}
		}
	}}
	b.start()
	t.Cleanup(b.stop)
	connect(t, b, c) // not to a
	bb := b.book(t, BookRequest{At: ba.Start, DurationMin: 75, With: a.id().String()})
	waitFor(t, 10*time.Second, "the invited peer to have the private offer", func() bool { return b.svc.board.get(a.id(), ba.ID) != nil })
	mu.Lock()
	src := firstSource
	mu.Unlock()
	if src != OfferSync {
		t.Fatalf("the invited peer first got the offer by %q, want a board sync", src)
	}
	waitFor(t, 20*time.Second, "the private pair to match", func() bool {
		return a.booking(ba.ID).Confirmed && b.booking(bb.ID).Confirmed
	})
	if c.svc.board.get(b.id(), bb.ID) != nil {
		t.Fatal("the third node opened b's private offer")
	}
}

// A version 2 node (no sealed records) invited to a version 3 node's
// private booking still matches it, whichever proposes: it gets the offer
// in the clear from the owner's board sync, on a stream no one else
// reads. It refuses nothing the new node sends (so it never penalises
// it), and a version 2 bystander does not get the offer.
func TestV2InviteeMatchesPrivateOffer(t *testing.T) {
	for _, v2Lower := range []bool{true, false} {
		t.Run(map[bool]string{true: "v2 proposes", false: "v3 proposes"}[v2Lower], func(t *testing.T) {
			k1, id1 := mustKey(t)
			k2, id2 := mustKey(t)
			if (id1 < id2) != v2Lower {
				k1, k2 = k2, k1
			}
			old := &testNode{t: t, key: k1, dir: t.TempDir(), v2: true}
			old.start()
			t.Cleanup(old.stop)
			cur := &testNode{t: t, key: k2, dir: t.TempDir()}
			cur.start()
			t.Cleanup(cur.stop)
			bystander := &testNode{t: t, key: func() crypto.PrivKey { k, _ := mustKey(t); return k }(), dir: t.TempDir(), v2: true}
			bystander.start()
			t.Cleanup(bystander.stop)
			connect(t, old, cur)
			connect(t, bystander, cur)
			connect(t, bystander, old)
			bystander.view()
			slot := nextSlot(10 * time.Hour)
			bc := cur.book(t, BookRequest{At: slot, DurationMin: 25, With: old.id().String()})
			bo := old.book(t, BookRequest{At: slot, DurationMin: 25, With: cur.id().String()})
			waitFor(t, 20*time.Second, "the version 2 and 3 nodes to match", func() bool {
				return old.booking(bo.ID).Confirmed && cur.booking(bc.ID).Confirmed
			})
			if n := old.svc.RefusedOffers(); n != 0 {
				t.Fatalf("the version 2 node refused %d records", n)
			}
			bystander.svc.syncBoard(context.Background(), cur.id(), nil)
			if bystander.svc.board.get(cur.id(), bc.ID) != nil {
				t.Fatal("a version 2 bystander got the private offer")
			}
		})
	}
}

// Fuzz targets of the sealed record decoder: the outside, then the box.

func FuzzSealedOffer(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, self := mustKey(f)
	xKey, x := mustKey(f)
	opener, err := box.NewOpener(key)
	if err != nil {
		f.Fatal(err)
	}
	good := privateOffer(x, self, now, "b1")
	f.Add(sealedParts{o: good, key: xKey, to: self}.build(f))
	f.Add(sealedParts{o: good, key: xKey, to: x}.build(f))
	f.Add(sealedParts{o: good, key: xKey, to: self, untagged: true}.build(f))
	f.Add(sealedParts{o: good, key: xKey, to: self, edit: func(so *pb.SealedOffer) { so.Tag = so.Tag[:3] }}.build(f))
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if owner, handle, _, _, ok := peekSealed(data); ok && (owner == "" || len(handle)%2 != 0) {
			t.Fatal("peek read a record without an owner")
		}
		so, owner, k, err := openSealed(data, now)
		if err != nil {
			return
		}
		if _, err := checkSealed(so, now); err != nil || k.Topic() != so.GetShard() {
			t.Fatalf("accepted a sealed record that fails its own checks: %v", err)
		}
		o, inner, err := openPrivate(opener, self, so, owner, now, testStampBits, len(data)%2 == 0)
		if err != nil {
			return
		}
		if peer.ID(o.GetOwner()) != owner || peer.ID(o.GetWith()) != self || shardOfOffer(o) != k || len(inner) == 0 {
			t.Fatalf("opened an offer that does not fit its record: %v", o)
		}
	})
}

// FuzzSealedBox seals whatever the fuzzer makes to the node as the box of
// a well-formed record: the opener must refuse or return a checked offer.
func FuzzSealedBox(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	key, self := mustKey(f)
	xKey, x := mustKey(f)
	opener, _ := box.NewOpener(key)
	env, _ := sealOffer(privateOffer(x, self, now, "b1"), xKey)
	f.Add(padOffer(env))
	f.Add(env)
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) > MaxOfferSize+2 {
			return
		}
		// Pad to the record's rule; the plaintext's own framing is fuzzed.
		padded := append(bytes.Clone(plain), make([]byte, (sealedPad-len(plain)%sealedPad)%sealedPad)...)
		if len(padded) == 0 {
			padded = make([]byte, sealedPad)
		}
		data := sealedParts{o: privateOffer(x, self, now, "b1"), key: xKey, to: self, inner: padded}.build(t)
		so, owner, _, err := openSealed(data, now)
		if err != nil {
			t.Fatalf("a well-formed record: %v", err)
		}
		o, _, err := openPrivate(opener, self, so, owner, now, testStampBits, true)
		if err == nil && (peer.ID(o.GetOwner()) != x || checkOffer(o, now) != nil) {
			t.Fatalf("opened a bad offer: %v", o)
		}
		if errors.Is(err, errNotForUs) {
			t.Fatal("a record sealed to us did not open")
		}
	})
}

// The whole check of a sealed record on a sealed topic, as a node pays it
// for every record (BenchmarkSealedNotForUs) and as the invited peer pays
// it (BenchmarkSealedForUs), beside a plain offer's check.
// go test -run X -bench 'Sealed|PlainOffer' ./matchmaking
func BenchmarkSealedNotForUs(b *testing.B) { benchOpen(b, false) }
func BenchmarkSealedForUs(b *testing.B)    { benchOpen(b, true) }

func benchOpen(b *testing.B, forUs bool) {
	now := time.Now()
	key, self := mustKey(b)
	xKey, x := mustKey(b)
	_, other := mustKey(b)
	opener, _ := box.NewOpener(key)
	to := other
	if forUs {
		to = self
	}
	rec, err := sealPrivateOffer(privateOffer(x, to, now, "b1"), xKey, bytes.Repeat([]byte{1}, sealedHandleLen))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { b.ReportMetric(float64(len(rec)), "record-bytes") }()
	for b.Loop() {
		so, owner, _, err := openSealed(rec, now)
		if err != nil {
			b.Fatal(err)
		}
		if err := checkStamp(owner, so.GetStamp(), testStampBits); err != nil {
			b.Fatal(err)
		}
		o, _, err := openPrivate(opener, self, so, owner, now, testStampBits, true)
		if forUs != (err == nil && o != nil) {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlainOffer(b *testing.B) {
	now := time.Now()
	xKey, x := mustKey(b)
	env, _ := sealOffer(validOffer(x, now), xKey)
	defer func() { b.ReportMetric(float64(len(env)), "record-bytes") }()
	for b.Loop() {
		o, owner, err := openOffer(env, now)
		if err != nil {
			b.Fatal(err)
		}
		if err := checkStamp(owner, o.GetStamp(), testStampBits); err != nil {
			b.Fatal(err)
		}
	}
}

// Sealed records are stored under the board's quotas, like offers: at
// most maxPerOwner per owner, and only of shards the node is on.
func TestSealedBoardQuotas(t *testing.T) {
	v := newTestNode(t, nil)
	v.view()
	now := v.svc.now()
	xKey, x := mustKey(t)
	_, other := mustKey(t)
	var envs [][]byte
	for i := range maxPerOwner + 8 {
		o := privateOffer(x, other, now, fmt.Sprintf("b%d", i))
		rec, err := sealPrivateOffer(o, xKey, bytes.Repeat([]byte{byte(i)}, sealedHandleLen))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, rec)
	}
	// A shard the node is not on: three weeks ahead.
	far := privateOffer(x, other, now, "far")
	far.StartUnix = now.Add(21 * 24 * time.Hour).Truncate(Grid).Unix()
	farRec, err := sealPrivateOffer(far, xKey, bytes.Repeat([]byte{0xee}, sealedHandleLen))
	if err != nil {
		t.Fatal(err)
	}
	_, y := mustKey(t)
	added, bad := v.svc.mergeSealed(append(envs, farRec), y)
	if bad != 0 || added != maxPerOwner {
		t.Fatalf("a board sync of %d records of one owner added %d (bad %d), want %d", len(envs)+1, added, bad, maxPerOwner)
	}
	if n := len(v.svc.sealedBoard.all()); n != maxPerOwner {
		t.Fatalf("the sealed board holds %d records, want %d", n, maxPerOwner)
	}
	if n := len(v.svc.board.all()); n != 0 {
		t.Fatalf("records sealed to another peer put %d offers on the board", n)
	}
	// What it holds it serves, sealed, to a requester that reads them.
	got := v.svc.sealedEnvelopes(v.svc.now(), MaxBoardResponse, wantAll)
	if len(got) != maxPerOwner {
		t.Fatalf("serves %d sealed records, want %d", len(got), maxPerOwner)
	}
}

// A record without a tag (an older owner's, docs/protocol.md section 2.5)
// is tried only if its owner is a peer a private booking of the node waits
// for (or one it has standing with): a stranger's untagged record sealed
// to the node is stored unread, and costs no agreement.
func TestUntaggedRecordsOpenedForAwaitedPeers(t *testing.T) {
	v := newTestNode(t, nil)
	aKey, a := mustKey(t)
	xKey, x := mustKey(t)
	slot := nextSlot(3 * time.Hour)
	v.book(t, BookRequest{At: slot, DurationMin: 50, With: a.String()})
	now := v.svc.now()
	rec := func(key crypto.PrivKey, owner peer.ID, id string) []byte {
		o := privateOffer(owner, v.id(), now, id)
		o.StartUnix, o.DurationMin, o.Activity = slot.Unix(), 50, pb.Activity_ACTIVITY_ANYTHING
		return sealedParts{o: o, key: key, to: v.id(), untagged: true}.build(t)
	}
	_, y := mustKey(t)
	before := v.svc.opener.Agreements()
	v.svc.mergeSealed([][]byte{rec(xKey, x, "x-private")}, y)
	if v.svc.board.get(x, "x-private") != nil || v.svc.opener.Agreements() != before {
		t.Fatalf("a stranger's untagged record was tried (%v, %d agreements)", v.svc.board.get(x, "x-private") != nil, v.svc.opener.Agreements()-before)
	}
	if len(v.svc.sealedBoard.all()) != 1 {
		t.Fatal("a stranger's untagged record was not stored to serve on")
	}
	v.svc.mergeSealed([][]byte{rec(aKey, a, "a-private")}, y)
	if v.svc.board.get(a, "a-private") == nil {
		t.Fatal("the awaited peer's untagged record was not opened")
	}
}

// A node checks a flood of sealed records not sealed to it with one X25519
// agreement per owner, not one per record: each record's tag (noise, as an
// attacker's is) is checked under the pair key of its owner, which the
// node agrees once; untagged records of strangers are not tried at all.
// A record tagged for the node is still opened (before: one agreement per
// record, 20 per identity here, by gossip and by board sync alike).
func TestSealedFloodCostsAnAgreementPerOwner(t *testing.T) {
	v := newTestNode(t, nil)
	v.view()
	now := v.svc.now()
	slot := nextSlot(3 * time.Hour)
	k := shard.Scheduled(slot, 50)
	ids := sealedIDs(t, 10)
	var envs [][]byte
	for _, id := range ids {
		for i := range 19 { // with the untagged one, a gossip burst (20)
			env, err := junkSealedErr(id, k, i) // tagged with noise
			if err != nil {
				t.Fatal(err)
			}
			envs = append(envs, env)
		}
		untagged, err := id.SealedRecord(k.Topic(), bytes.Repeat([]byte{9}, stranger.HandleLen), 1, now.Add(time.Hour).Unix(), stranger.RandomBox(1))
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, untagged)
	}
	before := v.svc.opener.Agreements()
	// Half by gossip, half by board sync.
	half := len(envs) / 2
	for _, env := range envs[:half] {
		author, _, _, _, _ := peekSealed(env)
		if got := v.svc.validateSealed(k, gossipMsg(author, env)); got != pubsub.ValidationAccept {
			t.Fatalf("a record of noise: %v", got)
		}
	}
	_, y := mustKey(t)
	if _, bad := v.svc.mergeSealed(envs[half:], y); bad != 0 {
		t.Fatalf("%d records of noise refused", bad)
	}
	if n := len(v.svc.sealedBoard.all()); n != len(envs)-half {
		t.Fatalf("the sealed board holds %d of the %d records of the board sync", n, len(envs)-half)
	}
	if n := v.svc.opener.Agreements() - before; n > uint64(len(ids)) {
		t.Fatalf("%d records of %d owners cost %d agreements, want at most one per owner", len(envs), len(ids), n)
	}
	// An honest record sealed to v, from one of those owners, opens.
	o := privateOffer(ids[0].ID, v.id(), now, "for-v")
	o.Stamp = ids[0].Stamp
	o.StartUnix, o.DurationMin, o.Activity = slot.Unix(), 50, pb.Activity_ACTIVITY_ANYTHING
	rec, err := ids[0].SealPrivate(o, k.Topic(), bytes.Repeat([]byte{3}, stranger.HandleLen))
	if err != nil {
		t.Fatal(err)
	}
	if added, _ := v.svc.mergeSealed([][]byte{rec}, y); added != 1 || v.svc.board.get(ids[0].ID, "for-v") == nil {
		t.Fatal("a record sealed to v was not opened")
	}
}

// The two peers of a private booking that have met before (each knows
// where the other listens) match with no gossip and no relay between
// them: the invited peer, booking, dials the owner, and each pushes its
// private offer to the other over that connection (private.go). Nothing
// else connects them: no common peer, so neither gossip nor a board sync
// could bring either offer (before: they never matched; under a sealed
// flood, gossip brought the invitee's record to the owner behind the
// flood's validation backlog).
func TestPrivatePairMeetsDirectly(t *testing.T) {
	for _, ownerDials := range []bool{false, true} {
		t.Run(fmt.Sprintf("ownerBooksLast=%v", ownerDials), func(t *testing.T) {
			a, b := newTestNode(t, nil), newTestNode(t, nil)
			// Met before: each knows the other's addresses, neither is
			// connected to anyone.
			a.h.Peerstore().AddAddrs(b.id(), b.h.Addrs(), time.Hour)
			b.h.Peerstore().AddAddrs(a.id(), a.h.Addrs(), time.Hour)
			slot := nextSlot(7 * time.Hour)
			first, last := a, b
			if ownerDials {
				first, last = b, a
			}
			bf := first.book(t, BookRequest{At: slot, DurationMin: 50, With: last.id().String()})
			// The first booker is alone: its dial of the other found
			// nobody booked yet (or, dialled in time, pushed an offer
			// the other was not on the shard for).
			bl := last.book(t, BookRequest{At: slot, DurationMin: 50, With: first.id().String()})
			waitFor(t, 20*time.Second, "the private pair to match", func() bool {
				return first.booking(bf.ID).Confirmed && last.booking(bl.ID).Confirmed
			})
			if got := last.booking(bl.ID).Partner; got != first.id().String() {
				t.Fatalf("matched %s, not the invited peer", got)
			}
		})
	}
}
