package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// cpuSnap is a reading of the machine's busy CPU time and of the time this
// process and the server process used, so a run can say how much of the
// machine other work took while it measured (the machines are shared).
type cpuSnap struct {
	at   time.Time
	busy uint64 // all CPUs: user, nice, system and steal, in 1/userHZ s
	ours uint64 // harness and server process, in 1/userHZ s
	ok   bool
}

func takeCPUSnap(childPID int) cpuSnap {
	s := cpuSnap{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	// user nice system idle iowait irq softirq steal. Interrupt time is
	// left out: loopback traffic's softirq work is the benchmark's own but
	// is not charged to its processes.
	for _, i := range []int{1, 2, 3, 8} {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		s.busy += v
	}
	self, ok1 := procTicks("self")
	child, ok2 := procTicks(strconv.Itoa(childPID))
	s.ours, s.ok = self+child, ok1 && ok2
	return s
}

// procTicks returns utime+stime of /proc/<pid>.
func procTicks(pid string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state is field 3 of stat; utime and stime are
	// fields 14 and 15.
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, true
}

// othersSince returns how many CPUs, on average since s, were busy with
// work other than the benchmark (other processes, or stolen by the
// hypervisor); -1 if unknown.
func (s cpuSnap) othersSince(now cpuSnap) float64 {
	if !s.ok || !now.ok {
		return -1
	}
	secs := now.at.Sub(s.at).Seconds()
	if secs <= 0 {
		return -1
	}
	other := float64(now.busy-s.busy) - float64(now.ours-s.ours)
	return max(0, other/userHZ/secs)
}
