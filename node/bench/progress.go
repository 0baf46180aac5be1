package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line progress bar (on a terminal, redrawn in
// place; elsewhere a line every few seconds). A nil *progress draws
// nothing.
type progress struct {
	w      io.Writer
	tty    bool
	start  time.Time
	status func() string // extra live numbers, may be nil

	mu          sync.Mutex
	phase       string
	done, total float64
	last        time.Time

	outMu sync.Mutex // serialises writes to w
	width int        // of the last line drawn (guarded by outMu)

	stop chan struct{}
	wg   sync.WaitGroup
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	p := &progress{w: w, start: time.Now(), stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.wg.Go(p.loop)
	return p
}

func (p *progress) loop() {
	every := 200 * time.Millisecond
	if !p.tty {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.draw(false)
		}
	}
}

// set names the phase and how far it is (total 0: no bar).
func (p *progress) set(phase string, done, total float64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	changed := phase != p.phase
	p.phase, p.done, p.total = phase, done, total
	p.mu.Unlock()
	if changed {
		p.draw(true)
	}
}

func (p *progress) setStatus(f func() string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.status = f
	p.mu.Unlock()
}

// draw prints the bar. The status callback runs outside p.mu: it reads
// every node, and a node busy for seconds (stopping under a saturated
// CPU) must not hold up set, which the workload's dispatcher calls.
func (p *progress) draw(newPhase bool) {
	p.mu.Lock()
	if !p.tty && !newPhase && time.Since(p.last) < 4*time.Second {
		p.mu.Unlock()
		return
	}
	p.last = time.Now()
	phase, done, total, status := p.phase, p.done, p.total, p.status
	p.mu.Unlock()
	var b strings.Builder
	if total > 0 {
		f := min(max(done/total, 0), 1)
		const w = 24
		n := int(f * w)
		fmt.Fprintf(&b, "[%s%s] %3.0f%% ", strings.Repeat("=", n), strings.Repeat(" ", w-n), 100*f)
	}
	fmt.Fprintf(&b, "%-10s", phase)
	if status != nil {
		b.WriteString("  " + status())
	}
	fmt.Fprintf(&b, "  (%s)", time.Since(p.start).Truncate(time.Second))
	line := b.String()
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if p.tty {
		pad := max(p.width-len(line), 0)
		p.width = len(line)
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// finish stops the bar and leaves the last line in place.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.draw(true)
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
