package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

func circlesOf(t *testing.T, dir string) []apiv1.Circle {
	t.Helper()
	out, errOut, code := run(t, "circle", "list", "--json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("circle list: %s", errOut)
	}
	var cs []apiv1.Circle
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("circle list --json: %v\n%s", err, out)
	}
	return cs
}

// The invite round trip as users run it: `circle create` on one node
// prints a code and a link, `circle join LINK` on another joins, both
// list the circle and, once they have met on its topic, each other; a
// booking for the circle only matches inside it; `circle leave` forgets it.
func TestCircleCLI(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	startUp(t, dirA)
	addrA := loopbackTCPAddr(t, dirA)
	startUp(t, dirB, append(localOnlyUp(dirB)[1:], "--peer", addrA)...)

	out, errOut, code := run(t, "circle", "create", "Night owls", "--data-dir", dirA)
	if code != 0 {
		t.Fatalf("circle create: %s", errOut)
	}
	link := regexp.MustCompile(`(?m)^Invite link: (\S+)$`).FindStringSubmatch(out)
	code1 := regexp.MustCompile(`(?m)^Invite code: (tc1-\S+)$`).FindStringSubmatch(out)
	if link == nil || code1 == nil {
		t.Fatalf("circle create printed no invite:\n%s", out)
	}
	if _, errOut, code := run(t, "circle", "join", "tc1-typo", "--data-dir", dirB); code == 0 || !strings.Contains(errOut, "invite") {
		t.Fatalf("joining with a bad invite: code %d, %q", code, errOut)
	}
	if out, errOut, code := run(t, "circle", "join", link[1], "--data-dir", dirB); code != 0 || !strings.Contains(out, `"Night owls"`) {
		t.Fatalf("circle join: %s %s", out, errOut)
	}
	nodetest.WaitFor(t, 20*time.Second, func() bool {
		a, b := circlesOf(t, dirA), circlesOf(t, dirB)
		return len(a) == 1 && len(b) == 1 && a[0].ID == b[0].ID && len(a[0].Members) == 1 && len(b[0].Members) == 1
	}, "both nodes to list the circle with the other as a member")

	at := time.Now().Add(3 * time.Hour).Truncate(15 * time.Minute).Format(time.RFC3339)
	for _, dir := range []string{dirA, dirB} {
		if _, errOut, code := run(t, "book", "--at", at, "--duration", "25", "--scope", "circle", "--circle", "Night owls", "--data-dir", dir); code != 0 {
			t.Fatalf("book --scope circle: %s", errOut)
		}
	}
	nodetest.WaitFor(t, 30*time.Second, func() bool {
		for _, dir := range []string{dirA, dirB} {
			bs := bookingsOf(t, dir)
			if len(bs) != 1 || bs[0].State != "matched" || bs[0].Scope != "circle" {
				return false
			}
		}
		return true
	}, "the circle bookings to match")

	if out, errOut, code := run(t, "circle", "leave", "Night owls", "--data-dir", dirB); code == 0 {
		t.Fatalf("leaving with a live booking for the circle succeeded: %s", out)
	} else if !strings.Contains(errOut, "cancel it first") {
		t.Fatalf("circle leave: %s", errOut)
	}
	id := bookingsOf(t, dirB)[0].ID
	if _, errOut, code := run(t, "cancel", id, "--data-dir", dirB); code != 0 {
		t.Fatalf("cancel: %s", errOut)
	}
	if _, errOut, code := run(t, "circle", "leave", "Night owls", "--data-dir", dirB); code != 0 {
		t.Fatalf("circle leave: %s", errOut)
	}
	if cs := circlesOf(t, dirB); len(cs) != 0 {
		t.Fatalf("after leaving: %+v", cs)
	}
}
