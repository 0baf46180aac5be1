package matchmaking

import (
	"testing"
	"time"

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
