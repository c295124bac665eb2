package audit

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// aioSync makes a file's written data durable like fdatasync(2), but
// without holding a Go processor while the disk works: it submits the
// flush through Linux native AIO (IOCB_CMD_FDSYNC, run by a kernel worker)
// and waits for its completion on an eventfd through the runtime's network
// poller, which parks the goroutine. Other goroutines keep running during
// the flush, so requests that finish meanwhile join the next batch, and
// group commit batches even with GOMAXPROCS 1, where a blocking fdatasync
// would stop the whole process for its duration.
//
// One aioSync serves one leader at a time (the audit log's flushes are
// serialised).
type aioSync struct {
	ctx uintptr  // aio_context_t
	efd *os.File // eventfd, non-blocking, read through the poller
}

// iocb is the kernel's struct iocb (linux/aio_abi.h), little-endian.
type iocb struct {
	data     uint64
	key      uint32
	rwFlags  uint32
	opcode   uint16
	reqprio  int16
	fildes   uint32
	buf      uint64
	nbytes   uint64
	offset   int64
	reserved uint64
	flags    uint32
	resfd    uint32
}

// ioEvent is the kernel's struct io_event.
type ioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

const (
	iocbCmdFdsync = 3
	iocbFlagResfd = 1
)

// newAIOSync sets up an AIO context and its eventfd, or returns an error
// where native AIO is unavailable (then fdatasync is used).
func newAIOSync() (*aioSync, error) {
	var ctx uintptr
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return nil, fmt.Errorf("io_setup: %w", e)
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		syscall.Syscall(syscall.SYS_IO_DESTROY, ctx, 0, 0)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &aioSync{ctx: ctx, efd: os.NewFile(uintptr(fd), "audit-aio-eventfd")}, nil
}

// errAIOUnsupported means the kernel refused an FDSYNC request: the caller
// falls back to fdatasync for good.
var errAIOUnsupported = errors.New("native AIO fdsync unsupported")

// sync makes f's written data durable.
func (a *aioSync) sync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cb iocb
	if err := rc.Control(func(fd uintptr) {
		cb = iocb{opcode: iocbCmdFdsync, fildes: uint32(fd), flags: iocbFlagResfd, resfd: uint32(a.efd.Fd())}
	}); err != nil {
		return err
	}
	cbs := [1]*iocb{&cb}
	for {
		n, _, e := syscall.Syscall(syscall.SYS_IO_SUBMIT, a.ctx, 1, uintptr(unsafe.Pointer(&cbs[0])))
		if e == syscall.EINTR || e == syscall.EAGAIN {
			continue
		}
		if e == syscall.EINVAL || e == syscall.ENOSYS || e == syscall.EOPNOTSUPP {
			return errAIOUnsupported
		}
		if e != 0 {
			return &os.PathError{Op: "io_submit fdsync", Path: f.Name(), Err: e}
		}
		if n != 1 {
			return fmt.Errorf("io_submit fdsync %s: submitted %d", f.Name(), n)
		}
		break
	}
	// Wait for the completion without holding a processor: the eventfd
	// is read through the poller.
	var cnt [8]byte
	for {
		if _, err := a.efd.Read(cnt[:]); err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return fmt.Errorf("aio completion: %w", err)
		}
		break
	}
	var ev ioEvent
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, a.ctx, 1, 1, uintptr(unsafe.Pointer(&ev)), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return &os.PathError{Op: "io_getevents", Path: f.Name(), Err: e}
		}
		if n != 1 {
			continue
		}
		break
	}
	runtime.KeepAlive(&cb)
	if ev.res < 0 {
		errno := syscall.Errno(-ev.res)
		if errno == syscall.EINVAL || errno == syscall.EOPNOTSUPP {
			return errAIOUnsupported
		}
		return &os.PathError{Op: "fdatasync (aio)", Path: f.Name(), Err: errno}
	}
	return nil
}

// close releases the context and the eventfd.
func (a *aioSync) close() {
	syscall.Syscall(syscall.SYS_IO_DESTROY, a.ctx, 0, 0)
	a.efd.Close()
}
