package seal

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// HardenProcess makes the process non-dumpable (PR_SET_DUMPABLE 0: no core
// dumps, no ptrace attach by same-user processes, /proc/self owned by root)
// and sets RLIMIT_CORE to 0. Aegis calls it before it decrypts any model.
func HardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	return nil
}

// Dumpable reports whether the process is dumpable.
func Dumpable() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	return v != 0, err
}
