package media

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// The loss-based controller: the cap starts at RelayStartBitrate on a
// relayed path, falls to what got through when the partner reports heavy
// loss, pauses video below MinVideoBitrate, tries it again after
// AudioOnlyHold, and climbs by 8% while there is almost no loss.
func TestAdapterController(t *testing.T) {
	var a adapter
	now := time.Unix(1_800_000_000, 0)
	ssrcs := map[uint32]bool{7: true}
	report := func(lost float64) {
		a.noteReport(&rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{{SSRC: 7, FractionLost: uint8(lost * 256)}, {SSRC: 9, FractionLost: 255}}}, ssrcs)
	}
	send := func(bps int) { a.sent = uint64(bps / 8 * int(AdaptInterval/time.Second)) }
	step := func() bool { now = now.Add(AdaptInterval); return a.tick(now) }

	if !a.allowVideo(1 << 20) {
		t.Fatal("adaptation off: video refused")
	}
	// Turning on (the path is relayed).
	func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.on, a.lastTick = true, now
		a.setLimitLocked(RelayStartBitrate)
	}()
	if a.limit != RelayStartBitrate {
		t.Fatalf("start: %d", a.limit)
	}
	// No report: nothing known, nothing changes.
	send(RelayStartBitrate)
	step()
	if a.limit != RelayStartBitrate {
		t.Fatalf("without a report the cap moved to %d", a.limit)
	}
	// Half lost: down to what got through.
	send(RelayStartBitrate)
	report(0.5)
	step()
	if a.limit > RelayStartBitrate/2+1000 || a.limit < RelayStartBitrate/2-10_000 {
		t.Fatalf("after 50%% loss at %d bit/s: cap %d, want about half", RelayStartBitrate, a.limit)
	}
	// Heavy loss again and again: audio only.
	for i := 0; !a.audioOnly; i++ {
		if i > 10 {
			t.Fatalf("still sending video at %d bit/s after 10 rounds of 60%% loss", a.limit)
		}
		send(a.limit)
		report(0.6)
		step()
	}
	if a.allowVideo(100) {
		t.Fatal("audio only, yet video allowed")
	}
	// Video is tried again after the hold, at twice the minimum.
	resumed := false
	for start := now; now.Sub(start) < AudioOnlyHold+AdaptInterval; {
		if step() {
			resumed = true
		}
	}
	if !resumed || a.audioOnly || a.limit != 2*MinVideoBitrate {
		t.Fatalf("after the hold: resumed %v audioOnly %v cap %d", resumed, a.audioOnly, a.limit)
	}
	// Clean rounds: up by 8% each, never beyond RelayMaxBitrate.
	prev := a.limit
	send(prev)
	report(0)
	step()
	if a.limit != prev*108/100 {
		t.Fatalf("after a clean round: %d, want %d", a.limit, prev*108/100)
	}
	for range 100 {
		report(0.01)
		step()
	}
	if a.limit != RelayMaxBitrate {
		t.Fatalf("cap after many clean rounds: %d, want %d", a.limit, RelayMaxBitrate)
	}
}

// A camera that sends more than the cap (it ignores REMB, or its encoder
// overshoots): the packets the cap drops show up in the partner's reports
// as lost, but they are not the path's loss, and the cap must hold, not
// fall to audio only. Before pathLoss it fell from 800 to 428 kbit/s in
// the first round of a 1.5 Mbit/s camera on a clean path, and on to audio
// only (the NAT lab's TANDEM_NATLAB_MEDIA_LOAD run over TURN).
func TestAdapterOwnDropsAreNotPathLoss(t *testing.T) {
	var a adapter
	now := time.Unix(1_800_000_000, 0)
	ssrcs := map[uint32]bool{7: true}
	a.on, a.lastTick = true, now
	a.setLimitLocked(RelayStartBitrate)
	const pkt = 1250
	for round := range 10 {
		// Over one interval the camera offers 1.5 Mbit/s; the cap lets
		// a.limit through and drops the rest.
		offered := 1_500_000 / 8 * int(AdaptInterval/time.Second) / pkt
		allowed := min(a.limit/8*int(AdaptInterval/time.Second)/pkt, offered)
		a.sent, a.sentPkts, a.droppedPkts = uint64(allowed*pkt), uint64(allowed), uint64(offered-allowed)
		// A clean path: the partner lost exactly what we dropped.
		lost := float64(offered-allowed) / float64(offered)
		a.noteReport(&rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{{SSRC: 7, FractionLost: uint8(lost * 256)}}}, ssrcs)
		now = now.Add(AdaptInterval)
		a.tick(now)
		if a.audioOnly || a.limit < RelayStartBitrate {
			t.Fatalf("round %d: cap %d bit/s, audio only %v: our own drops were taken for the path's loss", round, a.limit, a.audioOnly)
		}
	}
	// Real loss on top of our drops still brings the cap down.
	prev := a.limit
	allowed := a.limit / 8 * int(AdaptInterval/time.Second) / pkt
	offered := 1_500_000 / 8 * int(AdaptInterval/time.Second) / pkt
	a.sent, a.sentPkts, a.droppedPkts = uint64(allowed*pkt), uint64(allowed), uint64(offered-allowed)
	// Of what we sent, the path lost 30%.
	got := float64(allowed) * 0.7
	lost := 1 - got/float64(offered)
	a.noteReport(&rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{{SSRC: 7, FractionLost: uint8(lost * 256)}}}, ssrcs)
	now = now.Add(AdaptInterval)
	a.tick(now)
	if a.limit >= prev {
		t.Fatalf("30%% path loss on top of our drops: cap %d, was %d", a.limit, prev)
	}
}
