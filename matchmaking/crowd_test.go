package matchmaking

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// A crowded slot class ("everyone books Monday 9am") does not make a node
// connect to every owner in it: it dials owners until classReach usable
// ones are connected, then stops. Before, it dialled every owner of the
// class, so its connections grew with the slot, that is with the network.
func TestCrowdedClassDialsBounded(t *testing.T) {
	const owners = 3 * classReach
	v := newTestNode(t, nil)
	v.view() // on the slot's shard, so its offers are taken
	slot := nextSlot(3 * time.Hour)
	now := time.Now()
	var envs [][]byte
	var ids []peer.ID
	for i := range owners {
		key, id := mustKey(t)
		h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		o := &pb.Offer{
			Version: protoVersion, Owner: []byte(id), BookingId: fmt.Sprintf("crowd-%d", i),
			StartUnix: slot.Unix(), DurationMin: 25, Kind: pb.Kind_KIND_SCHEDULED,
			Activity: pb.Activity_ACTIVITY_ANYTHING, Name: "owner",
			ExpiresUnix: now.Add(time.Hour).Unix(), Seq: uint64(now.UnixMicro()),
			Stamp: mintStamp(id, testStampBits), Addrs: [][]byte{h.Addrs()[0].Bytes()},
		}
		env, err := sealOffer(o, key)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
		ids = append(ids, id)
	}
	_, relay := mustKey(t)
	if added, bad := v.svc.mergeBoard(envs, relay); added != owners || bad != 0 {
		t.Fatalf("board took %d of %d offers (%d bad)", added, owners, bad)
	}
	// Rounds of the matcher's planning, each after the last one's dials
	// ended (the booking is not stored, so the node's own loop leaves it
	// alone, and nobody answers a proposal).
	b := &Booking{ID: "crowded", Kind: KindScheduled, Start: slot, DurationMin: 25, Activity: ActivityAnything, State: StateSearching}
	for range 5 {
		v.svc.candidates(b, v.svc.now())
		waitFor(t, 20*time.Second, "the round's dials to end", func() bool {
			v.svc.mu.Lock()
			defer v.svc.mu.Unlock()
			return v.svc.reachDials == 0
		})
	}
	connected := 0
	for _, id := range ids {
		if v.h.Network().Connectedness(id) == network.Connected {
			connected++
		}
	}
	if connected != classReach {
		t.Fatalf("connected to %d of the class's %d owners, want classReach (%d)", connected, owners, classReach)
	}
}
