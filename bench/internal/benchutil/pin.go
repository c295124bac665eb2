package benchutil

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// PinToCPU binds every thread of this process to cpu and sets GOMAXPROCS
// to 1, as if the process had been started under `taskset -c cpu`. Threads
// created later inherit the binding from the thread that creates them.
//
// On the 2-CPU benchmark machines an unpinned client and server land on the
// same or on different CPUs from one cell to the next, and a cross-CPU
// wake-up costs tens of microseconds: more than the overheads measured.
// Pinning the clients to one CPU and the server to the other makes every
// cell pay the same cross-CPU round trip. (bench/serving has its own copy.)
func PinToCPU(cpu int) error {
	var mask [16]uint64 // 1024 CPUs, the kernel's default cpumask size
	if cpu < 0 || cpu >= 64*len(mask) {
		return fmt.Errorf("cpu %d out of range", cpu)
	}
	mask[cpu/64] = 1 << (cpu % 64)
	done := map[int]bool{}
	// A thread started while a pass runs may have inherited the old
	// binding; another pass catches it.
	for range 3 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
			if errno != 0 && errno != syscall.ESRCH {
				return fmt.Errorf("bind thread %d to cpu %d: %w", tid, cpu, errno)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			break
		}
	}
	runtime.GOMAXPROCS(1)
	return nil
}
