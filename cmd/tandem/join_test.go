package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/client"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// `tandem join` runs a whole session in the terminal: chat both ways, the
// chimes as terminal bells, the check-in prompt and the check-in itself.
func TestJoinRunsSessionInTerminal(t *testing.T) {
	clock := &nodetest.Clock{}
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	cfgA.Now, cfgB.Now = clock.Now, clock.Now
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := client.New(a.APIURL(), a.Token()), client.New(b.APIURL(), b.Token())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25, Goal: "write tests"}); err != nil {
		t.Fatal(err)
	}
	bb, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		s, err := cb.Session(ctx, bb.ID)
		return err == nil && s.Connected
	}, "the session to connect")

	stdinR, stdinW := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runJoin(ctx, ca, "", false, stdinR, out) }()
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Session with") }, "the join header")
	// Two nodes on one machine connect directly, and join says so.
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Connected directly.") }, "how the session is connected")

	io.WriteString(stdinW, "hello from the terminal\n")
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, _ := cb.Session(ctx, bb.ID)
		return slices.ContainsFunc(s.Chat, func(l apiv1.ChatLine) bool { return l.Text == "hello from the terminal" })
	}, "B to get the terminal's chat line")
	if _, err := cb.SessionAction(ctx, bb.ID, "chat", apiv1.SessionAction{Text: "hi back"}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "<partner> hi back") }, "A's terminal to show B's chat")

	clock.Advance(25 * time.Minute)
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), bell+"** Time! Check in") }, "the check-in prompt with a bell")
	io.WriteString(stdinW, "/done all green\n")
	if _, err := cb.SessionAction(ctx, bb.ID, "checkin", apiv1.SessionAction{Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("join: %v\n%s", err, out)
		}
	case <-ctx.Done():
		t.Fatalf("join did not end with the session\n%s", out)
	}
	for _, want := range []string{"You checked in: done all green", "Partner checked in: done", "Session over."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("join output lacks %q:\n%s", want, out)
		}
	}
	stdinW.Close()
}

// The partner's node is stopped after the match: 15 s (of the node's
// clock) after the lobby opens, `tandem join` says plainly that the
// partner could not be reached and what was tried, and the session's
// snapshot (GET /api/v1/sessions/{id}) says the same.
func TestJoinSaysWhenPartnerCannotBeReached(t *testing.T) {
	tr := nodetest.StartTrio(t)
	clock, a, b := tr.Clock, tr.A, tr.B
	ca, cb := client.New(a.APIURL(), a.Token()), client.New(b.APIURL(), b.Token())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slot := clock.Now().Add(time.Hour).Truncate(15 * time.Minute)
	ba, err := ca.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Book(ctx, apiv1.BookRequest{At: slot, DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 15*time.Second, func() bool {
		s, err := ca.Session(ctx, ba.ID)
		return err == nil && s.Connect.State == apiv1.ConnectWaiting
	}, "A's session to open, waiting for the lobby")
	b.Stop()

	out := &syncBuffer{}
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	done := make(chan error, 1)
	go func() { done <- runJoin(ctx, ca, ba.ID, false, stdinR, out) }()
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Session with") }, "the join header")

	clock.Advance(slot.Add(-5*time.Minute + time.Second).Sub(clock.Now()))
	var s apiv1.Session
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, err = ca.Session(ctx, ba.ID)
		return err == nil && s.Connect.State == apiv1.ConnectConnecting && !s.Connect.Since.IsZero()
	}, "A to try to connect")
	if strings.Contains(out.String(), "Could not connect") {
		t.Fatalf("could not connect before 15 s:\n%s", out)
	}
	clock.Advance(s.Connect.Since.Add(15 * time.Second).Sub(clock.Now()))
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		s, err = ca.Session(ctx, ba.ID)
		return err == nil && s.Connect.State == apiv1.ConnectCouldNotConnect
	}, "the snapshot to say could-not-connect")
	if s.Connect.PartnerReachable || s.Connect.Libp2pConnected || !strings.Contains(s.Connect.Message, "not connected over libp2p") {
		t.Errorf("connect report = %+v", s.Connect)
	}
	nodetest.WaitFor(t, 10*time.Second, func() bool {
		return strings.Contains(out.String(), "!! Could not connect to your partner") && strings.Contains(out.String(), "/rematch")
	}, "join to say it could not connect")
	t.Logf("join said:\n%s", out)
}

// TestJoinAfterTokenRotate: a token rotation ends the event stream `tandem
// join` watches the session on (the node ends streams opened with the old
// token); join says why and what to do, not that the node went away.
func TestJoinAfterTokenRotate(t *testing.T) {
	cfgA, cfgB := nodetest.Config(t), nodetest.Config(t)
	a := nodetest.Start(t, cfgA)
	nodetest.Link(t, &cfgB, a)
	b := nodetest.Start(t, cfgB)
	ca, cb := client.New(a.APIURL(), a.Token()), client.New(b.APIURL(), b.Token())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ba, err := ca.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Book(ctx, apiv1.BookRequest{Kind: "now", DurationMin: 25}); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		_, err := ca.Session(ctx, ba.ID)
		return err == nil
	}, "A's session")
	stdinR, _ := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runJoin(ctx, client.New(a.APIURL(), a.Token()), "", false, stdinR, out) }()
	nodetest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Session with") }, "the join header")
	if _, err := ca.RotateToken(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "token was rotated") {
			t.Errorf("join after a rotation: %v, want it to say the token was rotated", err)
		}
	case <-ctx.Done():
		t.Fatal("join still runs a minute after the token was rotated")
	}
}
