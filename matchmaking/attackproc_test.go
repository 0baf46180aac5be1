package matchmaking

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// An attacker in a process of its own. On the open internet an attacker
// signs, publishes and collects its garbage on its own machine; run in
// the test's process, the ground-ID attacker (it re-signs and publishes
// 1000 offers on two topics every 3 s) spent as much CPU in the victims'
// process as the victims spent checking what it sent, and its allocations
// set their garbage collector off (a traced slow match: 7-17 ms of the
// attacker's publishing and 8-12 ms of GC marking in a 10-25 ms match).
// As a child process of the test binary it still shares this machine's
// two cores with its victims, as the loopback tests share everything, but
// not their heap and scheduler: what the victims' timing measures is then
// what the attack costs them.

// attackProcEnv carries an attackSpec to the child; the child is the test
// binary itself, run for TestAttackerProcess only.
const attackProcEnv = "TANDEM_ATTACKER_SPEC"

// attackReady is the line the child prints once it is connected to its
// targets and publishing.
const attackReady = "attacker ready"

// attackSpec is what a child attacker is to do.
type attackSpec struct {
	Kind    string          // "ground-id"
	Targets []peer.AddrInfo // the victims, connected to in this order
	// ground-id: identities ground to sort between P and Q in the class
	// of a 25-minute scheduled slot at SlotUnix, K of them, publishing on
	// version 1's topic or (OnClassTopic) the class's topic and its day
	// shard.
	P, Q         peer.ID
	SlotUnix     int64
	K            int
	OnClassTopic bool
}

// TestAttackerProcess is the child side of startAttacker; run by itself it
// skips.
func TestAttackerProcess(t *testing.T) {
	raw := os.Getenv(attackProcEnv)
	if raw == "" {
		t.Skip("only as the child process of an attack test")
	}
	var spec attackSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	// The parent closes our stdin when the attack is over (or dies); a
	// child never outlives its test by more than this bound either.
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	bound := time.NewTimer(10 * time.Minute)
	defer bound.Stop()
	done := make(chan struct{})
	go func() {
		select {
		case <-stop:
		case <-bound.C:
		}
		close(done)
	}()
	switch spec.Kind {
	case "ground-id":
		groundIDAttacker(t, spec, done)
	default:
		t.Fatalf("unknown attack %q", spec.Kind)
	}
}

// attackProc is a running child attacker.
type attackProc struct {
	stop func() // ends the attack (the child exits)
	mu   sync.Mutex
	said map[string]chan struct{}
}

// saidLine returns a channel closed once the child printed line.
func (a *attackProc) saidLine(line string) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.said[line]
	if !ok {
		c = make(chan struct{})
		a.said[line] = c
	}
	return c
}

// waitLine waits until the child printed line.
func (a *attackProc) waitLine(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	select {
	case <-a.saidLine(line):
	case <-time.After(deadline(timeout)):
		t.Fatalf("attacker did not say %q within %v", line, timeout)
	}
}

// startAttacker runs spec in a child process and returns once it says it is
// ready. The child stops when the test ends, or earlier when stop is
// called; what it logged is shown if it failed.
func startAttacker(t *testing.T, spec attackSpec) *attackProc {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), attackProcEnv+"="+string(raw))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stdoutLines []string // the scanner's, read once the child exited
	proc := &attackProc{said: map[string]chan struct{}{}}
	ready := proc.saidLine(attackReady)
	exited := make(chan struct{})
	var waitErr error
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			stdoutLines = append(stdoutLines, line)
			c := proc.saidLine(line)
			select {
			case <-c:
			default:
				close(c)
			}
		}
		waitErr = cmd.Wait()
	}()
	var once sync.Once
	proc.stop = func() { once.Do(func() { stdin.Close() }) }
	t.Cleanup(func() {
		proc.stop()
		<-exited
		if waitErr != nil {
			t.Errorf("attacker process: %v\n%s\n%s", waitErr, strings.Join(stdoutLines, "\n"), stderr.String())
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatal("attacker process ended before it was ready")
	case <-time.After(deadline(60 * time.Second)):
		cmd.Process.Kill()
		t.Fatal("attacker process not ready within 60 s")
	}
	return proc
}
