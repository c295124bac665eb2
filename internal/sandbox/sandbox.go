//go:build linux && amd64

// Package sandbox confines the serving process: it sets no_new_privs and
// installs a seccomp filter, on every thread, that refuses system calls a
// model server never makes but an attacker who took it over would want:
// running programs, debugging or reading other processes, loading kernel
// code, changing mounts and namespaces, and raw kernel interfaces (bpf,
// perf, io_uring, keyrings, userfaultfd). Refused calls fail with EPERM.
//
// It is applied once, by `aegis serve --sandbox`, before any model is
// decrypted; it cannot be undone for the life of the process.
package sandbox

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Denied lists the refused system calls.
var Denied = map[string]uint32{
	"execve": unix.SYS_EXECVE, "execveat": unix.SYS_EXECVEAT,
	"ptrace": unix.SYS_PTRACE, "process_vm_readv": unix.SYS_PROCESS_VM_READV, "process_vm_writev": unix.SYS_PROCESS_VM_WRITEV,
	"kexec_load": unix.SYS_KEXEC_LOAD, "kexec_file_load": unix.SYS_KEXEC_FILE_LOAD,
	"init_module": unix.SYS_INIT_MODULE, "finit_module": unix.SYS_FINIT_MODULE, "delete_module": unix.SYS_DELETE_MODULE,
	"mount": unix.SYS_MOUNT, "umount2": unix.SYS_UMOUNT2, "pivot_root": unix.SYS_PIVOT_ROOT, "chroot": unix.SYS_CHROOT,
	"unshare": unix.SYS_UNSHARE, "setns": unix.SYS_SETNS,
	"bpf": unix.SYS_BPF, "perf_event_open": unix.SYS_PERF_EVENT_OPEN, "userfaultfd": unix.SYS_USERFAULTFD,
	"io_uring_setup": unix.SYS_IO_URING_SETUP, "io_uring_enter": unix.SYS_IO_URING_ENTER, "io_uring_register": unix.SYS_IO_URING_REGISTER,
	"keyctl": unix.SYS_KEYCTL, "add_key": unix.SYS_ADD_KEY, "request_key": unix.SYS_REQUEST_KEY,
	"open_by_handle_at": unix.SYS_OPEN_BY_HANDLE_AT, "name_to_handle_at": unix.SYS_NAME_TO_HANDLE_AT,
	"swapon": unix.SYS_SWAPON, "swapoff": unix.SYS_SWAPOFF, "reboot": unix.SYS_REBOOT, "acct": unix.SYS_ACCT,
	"quotactl": unix.SYS_QUOTACTL, "settimeofday": unix.SYS_SETTIMEOFDAY, "clock_settime": unix.SYS_CLOCK_SETTIME,
	"syslog": unix.SYS_SYSLOG, "uselib": unix.SYS_USELIB, "personality": unix.SYS_PERSONALITY,
}

var (
	once     sync.Once
	applyErr error
)

// Apply sets no_new_privs and installs the filter on all threads. Later
// calls return the first call's result.
func Apply() error {
	once.Do(func() { applyErr = apply() })
	return applyErr
}

// offsets in struct seccomp_data
const (
	offNR   = 0
	offArch = 4
)

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// program builds the BPF filter: kill on a foreign architecture (a 32-bit
// syscall table would bypass the numbers below), EPERM on a denied call,
// allow the rest.
func program() []unix.SockFilter {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	nrs := make([]uint32, 0, len(Denied))
	for _, nr := range Denied {
		nrs = append(nrs, nr)
	}
	p := []unix.SockFilter{
		stmt(ld, offArch),
		jump(jeq, unix.AUDIT_ARCH_X86_64, 1, 0),
		stmt(ret, unix.SECCOMP_RET_KILL_PROCESS),
		stmt(ld, offNR),
		// x32 system calls have bit 30 set: refuse them all.
		jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, 0x40000000, uint8(len(nrs)+1), 0),
	}
	for i, nr := range nrs {
		// On a match, jump to the EPERM return after the list.
		p = append(p, jump(jeq, nr, uint8(len(nrs)-i), 0))
	}
	p = append(p,
		stmt(ret, unix.SECCOMP_RET_ALLOW),
		stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM)),
	)
	return p
}

func apply() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	prog := program()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// TSYNC applies the filter to every thread of the process, the Go
	// runtime's and ONNX Runtime's included.
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	return nil
}
