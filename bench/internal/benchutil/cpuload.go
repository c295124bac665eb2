package benchutil

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// UserHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const UserHZ = 100

// CPUSnap is a reading of the machine's busy CPU time and of the time the
// benchmark's own processes used, so a run can say how much of the machine
// other work took while it measured (the machines are shared).
type CPUSnap struct {
	at   time.Time
	busy uint64 // all CPUs: user, nice, system and steal, in 1/UserHZ s
	ours uint64 // the given processes, in 1/UserHZ s
	ok   bool
}

// TakeCPUSnap reads /proc/stat and the CPU time of this process and of the
// processes pids.
func TakeCPUSnap(pids ...int) CPUSnap {
	s := CPUSnap{at: time.Now()}
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
	ours, ok := procTicks("self")
	for _, pid := range pids {
		t, ok2 := ProcTicks(pid)
		ours, ok = ours+t, ok && ok2
	}
	s.ours, s.ok = ours, ok
	return s
}

// ProcTicks returns the CPU time (utime+stime) process pid has used, in
// 1/UserHZ s.
func ProcTicks(pid int) (uint64, bool) { return procTicks(strconv.Itoa(pid)) }

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
	// After the command: utime and stime are fields 14 and 15 of stat.
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, true
}

// OthersSince returns how many CPUs, on average since s, were busy with
// work other than the benchmark's (other processes, or time stolen by the
// hypervisor); -1 if unknown.
func (s CPUSnap) OthersSince(now CPUSnap) float64 {
	if !s.ok || !now.ok {
		return -1
	}
	secs := now.at.Sub(s.at).Seconds()
	if secs <= 0 {
		return -1
	}
	other := float64(now.busy-s.busy) - float64(now.ours-s.ours)
	return max(0, other/UserHZ/secs)
}
