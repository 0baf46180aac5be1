package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// loadAvg reads the machine's 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machineCPU is the machine-wide CPU time from /proc/stat, in clock
// ticks: all of it and the part spent idle (idle + iowait).
type machineCPU struct{ total, idle uint64 }

func machineNow() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user and nice
			break
		}
		m.total += n
		if i == 3 || i == 4 {
			m.idle += n
		}
	}
	return m
}

// busyPct is how busy the whole machine was between a and b, in percent
// of all its cores (this process and everything else on it).
func busyPct(a, b machineCPU) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * float64((b.total-a.total)-(b.idle-a.idle)) / float64(b.total-a.total)
}

// threadCPU is the CPU time of the calling OS thread (Linux
// CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// harnessMeter adds up the CPU the benchmark's own bookkeeping uses
// (checking the bookings while settling, the progress line, memory
// samples): each such piece runs on a locked OS thread, whose CPU time is
// its cost. What it cannot separate is reported as protocol cost: the
// recorders' appends on the nodes' goroutines (a mutex and a slice append
// per event) and the shared garbage collector.
type harnessMeter struct{ ns atomic.Int64 }

func (h *harnessMeter) run(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := threadCPU()
	f()
	h.ns.Add(int64(threadCPU() - t0))
}

func (h *harnessMeter) total() time.Duration { return time.Duration(h.ns.Load()) }

// openFiles is how many file descriptors this process holds (0 where
// /proc is missing).
func openFiles() int64 {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return int64(len(fds))
}

// Open files a node needs beyond its connections (badger's files, the
// listener), and per connection: a TCP connection between two nodes of
// one process holds a descriptor at each end, QUIC connections share the
// node's UDP socket. Measured peaks are in the report (open files).
const (
	filesPerNode    = 12
	filesPerTCPConn = 2
	connsPerNode    = 45 // about what a node holds at the end of a workload
)

// checkOpenFiles refuses a swarm that would run out of file descriptors
// half-way (badger and the listeners fail with "too many open files"),
// and says what to do instead.
func checkOpenFiles(nodes int, transport string) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil
	}
	need := uint64(nodes) * filesPerNode
	if transport == "tcp" {
		need += uint64(nodes) * connsPerNode * filesPerTCPConn
	}
	if need <= lim.Cur {
		return nil
	}
	hint := "raise it (ulimit -n) or use --transport quic"
	if transport != "tcp" {
		hint = "raise it (ulimit -n) or run fewer nodes"
	}
	return fmt.Errorf("%d nodes over %s need about %d open files and this process may hold %d: %s",
		nodes, transport, need, lim.Cur, hint)
}
