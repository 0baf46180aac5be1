package matchmaking

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/matchmaking/box"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
	stranger "github.com/tandem-cowork/tandem/matchmaking/sybil"
)

// The attacker package (written from docs/protocol.md, sharing no code
// with this one) makes offers this package accepts: what the benchmark's
// and the cost tests' attackers send is the real thing.
func TestSybilPackageSpeaksTheProtocol(t *testing.T) {
	id, err := stranger.NewIdentity(testStampBits)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	env, err := id.Seal(&pb.Offer{BookingId: "x", StartUnix: nextSlot(time.Hour).Unix(), DurationMin: 25,
		Kind: pb.Kind_KIND_SCHEDULED, Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "sybil",
		ExpiresUnix: now.Add(time.Minute).Unix(), Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	o, owner, err := openOffer(env, now)
	if err != nil || owner != id.ID {
		t.Fatalf("openOffer: %v (owner %s, want %s)", err, owner, id.ID)
	}
	if err := checkStamp(owner, o.GetStamp(), testStampBits); err != nil {
		t.Fatal(err)
	}
	back, signer, err := stranger.Open(env)
	if err != nil || signer != id.ID || back.GetBookingId() != "x" {
		t.Fatalf("stranger.Open: %v %s %v", back, signer, err)
	}
}

// The attacker package's sealed records (docs/protocol.md section 2.5) are
// the real thing too: any node stores one as a record of its signer, and
// the invited peer opens the box to the offer inside; a box of noise
// passes every check a relay can make.
func TestSybilPackageSealsPrivateOffers(t *testing.T) {
	id, err := stranger.NewIdentity(testStampBits)
	if err != nil {
		t.Fatal(err)
	}
	inviteeKey, invitee := mustKey(t)
	opener, err := box.NewOpener(inviteeKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	o := privateOffer(id.ID, invitee, now, "x")
	o.Stamp = id.Stamp
	k := shardOfOffer(o)
	env, err := id.SealPrivate(o, k.Topic(), bytes.Repeat([]byte{1}, stranger.HandleLen))
	if err != nil {
		t.Fatal(err)
	}
	so, owner, got, err := openSealed(env, now)
	if err != nil || owner != id.ID || got != k {
		t.Fatalf("openSealed: %v (owner %s, shard %v)", err, owner, got)
	}
	in, _, err := openPrivate(opener, invitee, so, owner, now, testStampBits, false)
	if err != nil || in.GetBookingId() != "x" {
		t.Fatalf("the invitee cannot open the attacker's box: %v", err)
	}
	noise, err := id.SealedRecord(k.Topic(), bytes.Repeat([]byte{2}, stranger.HandleLen), 1, now.Add(time.Minute).Unix(), stranger.RandomBox(2))
	if err != nil {
		t.Fatal(err)
	}
	so, _, _, err = openSealed(noise, now)
	if err != nil {
		t.Fatalf("a record with a box of noise: %v", err)
	}
	if _, _, err := openPrivate(opener, invitee, so, id.ID, now, testStampBits, true); !errors.Is(err, errNotForUs) {
		t.Fatalf("a box of noise opened: %v", err)
	}
}
