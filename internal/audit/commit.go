package audit

// Appending lines to the pending batch, group commit, failure and
// recovery, and rotation.

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// chain is the state of the chain after some line.
type chain struct {
	seq     uint64
	head    string    // hex SHA-256 of the line: the next prev
	sinceCP int       // lines other than checkpoints since the last checkpoint
	lastCP  time.Time // time of the last checkpoint
}

// outageState is an ongoing failure to write.
type outageState struct {
	since   time.Time
	kind    string // the failure's errno text, for the outage record
	lost    uint64
	inBatch bool // the outage record is in the pending batch
}

// batch is the lines one leader writes with one write(2) (and fdatasync).
type batch struct {
	buf         []byte
	first       uint64 // seq of the first line
	lines       uint64
	requests    uint64
	checkpoints uint64
	end         chain // after the last line
	outage      bool  // it holds the outage record
	sync        bool  // fdatasync after writing
	rotate      bool  // rotate after writing
	done        bool
	err         error
}

// beginLocked starts a line: after a failure the first line of a batch is
// the outage record, so that the log says what it lost.
func (l *Log) beginLocked() {
	if l.out == nil || l.out.inBatch {
		return
	}
	o := outage{Seq: l.tip.seq + 1, Time: l.now(), Since: l.out.since, Lost: l.out.lost, Error: l.out.kind, Prev: l.tip.head}
	b := l.pending
	start := len(b.buf)
	b.buf = appendOutage(b.buf, &o)
	l.endLineLocked(start)
	b.outage = true
	l.out.inBatch = true
	l.countLocked()
}

func (l *Log) appendRecoveryLocked(n int64, sum string) {
	r := recovery{Seq: l.tip.seq + 1, Time: l.now(), DiscardedBytes: n, DiscardedSHA256: sum, Prev: l.tip.head}
	b := l.pending
	start := len(b.buf)
	b.buf = appendRecovery(b.buf, &r)
	l.endLineLocked(start)
	l.countLocked()
}

// appendCheckpointLocked signs the chain head and appends the checkpoint.
func (l *Log) appendCheckpointLocked(reason string) {
	c := checkpoint{Seq: l.tip.seq + 1, Time: l.now(), Reason: reason, Every: l.cfg.CheckpointEvery, KeyID: l.keyID, Prev: l.tip.head}
	c.Sig = hex.EncodeToString(ed25519.Sign(l.cfg.SigningKey, checkpointMessage(&c)))
	b := l.pending
	start := len(b.buf)
	b.buf = appendCheckpoint(b.buf, &c, true)
	l.endLineLocked(start)
	b.checkpoints++
	l.tip.sinceCP = 0
	l.tip.lastCP = c.Time
	if reason != ReasonCount || l.cfg.Durable {
		b.sync = true
	}
	b.end = l.tip
}

// endLineLocked finishes the line appended to the pending batch at start:
// it becomes the chain head.
func (l *Log) endLineLocked(start int) {
	b := l.pending
	sum := sha256.Sum256(b.buf[start:])
	b.buf = append(b.buf, '\n')
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	l.tip.seq++
	l.tip.head = string(h[:])
	if b.lines == 0 {
		b.first = l.tip.seq
	}
	b.lines++
	b.end = l.tip
}

// countLocked counts a line that is not a checkpoint and appends a
// checkpoint when CheckpointEvery are due.
func (l *Log) countLocked() {
	l.tip.sinceCP++
	l.pending.end = l.tip
	if l.tip.sinceCP >= l.cfg.CheckpointEvery {
		l.appendCheckpointLocked(ReasonCount)
	}
}

// waitLocked waits until b is written or has failed, writing it (and what
// else is pending) itself when no one else is: group commit, with the
// first waiter to find no write in progress leading.
func (l *Log) waitLocked(b *batch) error {
	for !b.done {
		if !l.flushing {
			l.flushLocked()
			continue
		}
		l.cond.Wait()
	}
	return b.err
}

// gatherLocked lets requests in flight join the pending batch before a
// durable commit (Config.Siblings): while more requests are in flight than
// the batch holds, the leader waits for them to join, at most as long as a
// sync takes (a moving average, within maxGather), so one fsync covers
// them. The wait releases the processor: with GOMAXPROCS 1 the blocking
// fsync would otherwise keep every other request from reaching Write. It
// drops mu while waiting; the caller is the leader.
func (l *Log) gatherLocked() {
	if !l.cfg.Durable || l.cfg.Siblings == nil || uint64(max(l.cfg.Siblings(), 0)) <= l.pending.requests {
		return
	}
	wait := min(max(time.Duration(l.syncAvg.Load()), minGather), maxGather)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	l.joined = make(chan struct{}, 1)
	defer func() { l.joined = nil }()
	for uint64(max(l.cfg.Siblings(), 0)) > l.pending.requests {
		l.mu.Unlock()
		select {
		case <-l.joined:
			l.mu.Lock()
		case <-timer.C:
			l.mu.Lock()
			return
		}
	}
}

// Bounds on how long a durable commit waits for requests in flight.
const (
	minGather = 20 * time.Microsecond
	maxGather = 2 * time.Millisecond
)

// flushLocked writes the pending batch, then, while the file is full, a
// rotation checkpoint and the rotation. It drops mu while writing; the
// caller must not be flushing already.
func (l *Log) flushLocked() {
	l.flushing = true
	for {
		l.gatherLocked()
		b := l.pending
		l.pending = &batch{buf: l.spare[:0]}
		l.spare = nil
		l.mu.Unlock()
		err := l.writeBatch(b)
		var rerr error
		if err == nil && b.rotate {
			rerr = l.rotate()
		}
		l.mu.Lock()
		if err != nil {
			l.failLocked(b, err)
		} else {
			l.succeedLocked(b)
		}
		if l.spare == nil && cap(b.buf) <= 1<<20 {
			l.spare = b.buf[:0]
		}
		b.buf = nil
		l.cond.Broadcast()
		if rerr != nil {
			l.logger.Error("audit log: rotation failed; appending to the active file", "path", l.cfg.Path, "err", rerr)
		}
		if rerr != nil {
			l.noRotateUntil = l.now().Add(l.cfg.RetryInterval)
		}
		if err != nil || b.rotate || l.size < l.cfg.MaxFileBytes || l.now().Before(l.noRotateUntil) {
			break
		}
		// The file is full: end it with a checkpoint, taken with what is
		// pending, and rotate.
		l.beginLocked()
		l.appendCheckpointLocked(ReasonRotate)
		l.pending.rotate = true
	}
	l.flushing = false
	l.cond.Broadcast()
}

// writeBatch appends b to the active file, after repairing what a failed
// batch may have left. On failure it cuts the file back to the last
// written line, or marks it for repair before the next write. Leader only.
func (l *Log) writeBatch(b *batch) error {
	if l.f == nil {
		if err := l.reopen(); err != nil {
			return err
		}
	}
	if l.repair {
		if err := l.f.Truncate(l.size); err != nil {
			return fmt.Errorf("cut back a partial write: %w", err)
		}
		l.repair = false
	}
	_, err := l.f.Write(b.buf)
	if err == nil && (b.sync || l.cfg.Durable) {
		t0 := time.Now()
		err = l.datasync()
		// A moving average of the sync's duration bounds how long the next
		// leader waits for others to join its batch.
		d := time.Since(t0)
		l.syncAvg.Store(int64((7*time.Duration(l.syncAvg.Load()) + d) / 8))
	}
	if err != nil {
		if terr := l.f.Truncate(l.size); terr != nil {
			l.repair = true
		}
		return err
	}
	if l.size == 0 {
		l.firstSeq = b.first
	}
	l.size += int64(len(b.buf))
	return nil
}

// datasync makes the active file's data durable: through native AIO when
// available (the goroutine parks; others run), else fdatasync. Leader only.
func (l *Log) datasync() error {
	if l.aio != nil {
		err := l.aio.sync(l.f)
		if !errors.Is(err, errAIOUnsupported) {
			return err
		}
		l.logger.Info("audit log: the kernel refused an AIO fdsync; using fdatasync", "path", l.cfg.Path)
		l.aio.close()
		l.aio = nil
	}
	return fdatasync(l.f)
}

func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// reopen opens the active file again after a failed rotation. It must
// hold exactly the lines written (or be new and empty after the rename):
// anything else was changed behind the log's back. Leader only.
func (l *Log) reopen() error {
	f, _, err := openActive(l.cfg.Path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if n := fi.Size(); n != l.size && (n < l.size || !l.repair) {
		f.Close()
		return fmt.Errorf("%s is %d bytes, want %d: changed by someone else", l.cfg.Path, n, l.size)
	}
	l.f = f
	return nil
}

// rotate renames the full active file to its rotated name and starts a new
// one. On failure the log goes on appending to whichever file is at Path.
// Leader only.
func (l *Log) rotate() error {
	name := rotatedName(l.cfg.Path, l.firstSeq)
	if _, err := os.Lstat(name); err == nil {
		return fmt.Errorf("%s exists", name)
	}
	if err := os.Rename(l.cfg.Path, name); err != nil {
		return err
	}
	l.f.Close()
	l.f = nil
	l.size, l.firstSeq = 0, 0
	if err := syncDir(filepath.Dir(l.cfg.Path)); err != nil {
		return err
	}
	f, _, err := openActive(l.cfg.Path)
	if err != nil {
		return err
	}
	l.f = f
	l.nRotate.Add(1)
	return nil
}

// succeedLocked accounts for a written batch.
func (l *Log) succeedLocked(b *batch) {
	l.good = b.end
	b.done = true
	l.nRecords.Add(b.lines)
	l.nCheckpoints.Add(b.checkpoints)
	l.nBatches.Add(1)
	l.lastSeq.Store(b.end.seq)
	if l.out != nil && b.outage {
		l.logger.Info("audit log: writable again", "path", l.cfg.Path,
			"lost", l.out.lost, "down_for", l.now().Sub(l.out.since).Round(time.Millisecond))
		l.out = nil
		l.failing.Store(false)
		l.health.Store(nil)
	}
}

// failLocked fails b and everything appended after it (chained on it),
// rewinds the chain to the last written line and marks the log unhealthy.
func (l *Log) failLocked(b *batch, err error) {
	err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	lost := b.requests
	b.err, b.done = err, true
	if p := l.pending; p.lines > 0 {
		lost += p.requests
		p.err, p.done = err, true
		l.pending = &batch{}
	}
	l.tip = l.good
	l.nFailures.Add(1)
	l.nLost.Add(lost)
	if l.out == nil {
		l.out = &outageState{since: l.now(), kind: errKind(err)}
		l.failing.Store(true)
		l.logger.Error("audit log: cannot write; refusing requests until it recovers", "path", l.cfg.Path, "err", err)
	}
	l.health.Store(&err)
	l.out.lost += lost
	l.out.inBatch = false
}

// errKind is the part of a write error fit for the log itself: the errno's
// text, without paths.
func errKind(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return "write failed"
}
