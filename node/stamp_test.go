package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// TestStartWhileStampMints: a new identity's stamp is minted in the
// background, so the first start of a node does not wait for it. At 32
// bits (hours of hashing; the protocol's 24 take seconds to minutes) Start
// returns, the API answers and says the identity is being prepared, a
// booking can be made and is listed as searching, and Stop ends the mint
// instead of waiting for it.
func TestStartWhileStampMints(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.Matchmaking.StampBits = 32
	n, err := node.New(cfg, nodetest.Logger(t, cfg.LogLevel))
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- n.Start() }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a bound, not a goal: it takes milliseconds
		t.Fatal("Start has not returned after a minute: it waits for the identity stamp")
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			n.Stop()
		}
	})

	ctx := context.Background()
	c := client.New(n.APIURL(), n.Token())
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Identity.Ready || !strings.HasPrefix(st.Identity.Text, "preparing identity (one-time, a few seconds)") {
		t.Errorf("status identity = %+v, want preparing", st.Identity)
	}
	at := time.Now().Add(time.Hour).Truncate(15 * time.Minute)
	b, err := c.Book(ctx, apiv1.BookRequest{Kind: "scheduled", At: at, DurationMin: 50})
	if err != nil {
		t.Fatalf("booking while the stamp is minted: %v", err)
	}
	bs, err := c.Bookings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].ID != b.ID || bs[0].State != "searching" {
		t.Errorf("bookings = %+v, want %s searching", bs, b.ID)
	}

	done := make(chan error, 1)
	go func() { done <- n.Stop() }()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Stop has not returned after a minute: it waits for the identity stamp")
	}
}
