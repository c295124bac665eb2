package audit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxFileBytes       = 64 << 20
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
	DefaultRetryInterval      = time.Second
)

// Config configures a Log.
type Config struct {
	// Path is the active file ("/var/log/aegis/audit.log"). Rotated files
	// go beside it (see Files); <Path>.lock is the lock file.
	Path string
	// Durable makes Write return only after the record is on stable
	// storage (fdatasync), with group commit. Otherwise Write returns once
	// the record is handed to the kernel (write(2) done): it survives the
	// process being killed, not the machine losing power.
	Durable bool
	// Siblings, in durable mode, reports how many requests are in flight
	// that will write a record (the caller included). A commit leader that
	// sees more of them than its batch holds waits for them to join it, at
	// most about as long as an fsync takes, so that one fsync covers them
	// all, also when the process has a single processor (GOMAXPROCS 1),
	// where the blocking fsync would otherwise keep every other request
	// from reaching Write. Nil never waits.
	Siblings func() int
	// MaxFileBytes is the size past which the active file is rotated.
	// Zero means DefaultMaxFileBytes.
	MaxFileBytes int64
	// CheckpointEvery is the most records between two checkpoints. Zero
	// means DefaultCheckpointEvery.
	CheckpointEvery int
	// CheckpointInterval is the longest a record waits for a checkpoint.
	// Zero means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// RetryInterval is how often an unwritable log retries by itself.
	// Zero means DefaultRetryInterval.
	RetryInterval time.Duration
	// SigningKey signs checkpoints (LoadSigningKey reads one). Required.
	SigningKey ed25519.PrivateKey
	// Logger receives failures and recoveries, never record contents. Nil
	// discards.
	Logger *slog.Logger
}

// Validate names the first field that is wrong.
func (c *Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("audit: path: must be set")
	case len(c.SigningKey) != ed25519.PrivateKeySize:
		return fmt.Errorf("audit: signing_key: %d bytes, want an Ed25519 private key", len(c.SigningKey))
	case c.MaxFileBytes < 0:
		return fmt.Errorf("audit: max_file_bytes: %d is negative", c.MaxFileBytes)
	case c.CheckpointEvery < 0:
		return fmt.Errorf("audit: checkpoint_every: %d is negative", c.CheckpointEvery)
	case c.CheckpointInterval < 0:
		return fmt.Errorf("audit: checkpoint_interval: %v is negative", c.CheckpointInterval)
	case c.RetryInterval < 0:
		return fmt.Errorf("audit: retry_interval: %v is negative", c.RetryInterval)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxFileBytes == 0 {
		c.MaxFileBytes = DefaultMaxFileBytes
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// ErrUnavailable reports that the log cannot be written: Write failed, or
// Healthy reports a failure not yet recovered from. The request must be
// refused (503).
var ErrUnavailable = errors.New("audit log unavailable")

// ErrClosed reports a Write after Close. The error Write returns wraps
// ErrUnavailable too.
var ErrClosed = errors.New("audit log closed")

var errClosed = fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)

// Stats are a Log's counters since Open, for metrics.
type Stats struct {
	Records       uint64 // lines written, of every type
	Checkpoints   uint64 // checkpoints written
	Batches       uint64 // write(2) calls that wrote records (group commits in durable mode)
	WriteFailures uint64 // failed batch writes
	Lost          uint64 // request records refused because the log could not be written
	Rotations     uint64
	Failing       bool // the log cannot be written now
	Seq           uint64
}

// Log is an append-only, hash-chained, signed audit log. Its methods are
// safe for concurrent use.
type Log struct {
	cfg    Config
	logger *slog.Logger
	keyID  string
	now    func() time.Time
	lockf  *os.File
	stop   chan struct{}
	done   chan struct{}

	health                                                      atomic.Pointer[error] // nil when healthy
	nRecords, nCheckpoints, nBatches, nFailures, nLost, nRotate atomic.Uint64
	failing                                                     atomic.Bool
	lastSeq                                                     atomic.Uint64
	syncAvg                                                     atomic.Int64 // moving average of fdatasync, ns

	// mu guards the fields below it; cond (on mu) is signalled when a batch
	// is done or a leader stops flushing.
	mu       sync.Mutex
	cond     sync.Cond
	closed   bool
	flushing bool   // a leader is writing a batch
	pending  *batch // lines appended, not yet taken by a leader
	spare    []byte // a written batch's buffer, for reuse
	tip      chain  // after the last line appended
	good     chain  // after the last line written: what a failure rewinds to
	out      *outageState
	// joined, while a durable leader gathers its batch, is signalled by
	// each request that joins it.
	joined chan struct{}
	// appendTimer writes what Append queued if no Write has within
	// AppendDelay; appendArmed while it is set.
	appendTimer *time.Timer
	appendArmed bool
	// aio syncs durable batches without holding a processor; nil where
	// native AIO is unavailable (fdatasync then). Leader only.
	aio *aioSync

	// Owned by the leader (the goroutine that set flushing), or by whoever
	// holds mu while no one is flushing.
	f        *os.File // active file; nil until reopened after a failed rotation
	size     int64    // bytes of f that hold written lines
	firstSeq uint64   // seq of the first line in f; 0 while f is empty
	repair   bool     // f may end in part of a failed batch: truncate to size first
	// noRotateUntil delays the next rotation attempt after one failed.
	noRotateUntil time.Time
}

// Open opens the log at cfg.Path, creating it if missing, and continues
// its chain. It locks the log against other writers, checks the active
// file (chain, signatures, link to the last rotated file) and refuses a
// file that does not verify: nothing is appended on top of a record it
// cannot vouch for. A torn last line (the writer was killed mid-write: the
// record was never acknowledged) is cut off and a recovery record says how
// many bytes, with their SHA-256. Open then writes a checkpoint (reason
// "open") and syncs.
func Open(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	lockf, err := lockLog(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{
		cfg:    cfg,
		logger: cfg.Logger,
		keyID:  KeyID(cfg.SigningKey.Public().(ed25519.PublicKey)),
		now:    time.Now,
		lockf:  lockf,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	l.cond.L = &l.mu
	if cfg.Durable {
		if a, err := newAIOSync(); err == nil {
			l.aio = a
		} else {
			l.logger.Info("audit log: native AIO unavailable; durable syncs block a processor", "err", err)
		}
	}
	if err := l.recover(); err != nil {
		if l.aio != nil {
			l.aio.close()
		}
		if l.f != nil {
			l.f.Close()
		}
		lockf.Close()
		return nil, fmt.Errorf("audit: open %s: %w", cfg.Path, err)
	}
	go l.run()
	return l, nil
}

// recover finds where the chain stands, repairs a torn tail and writes the
// open checkpoint.
func (l *Log) recover() error {
	pub := l.cfg.SigningKey.Public().(ed25519.PublicKey)
	v := newVerifier(pub, VerifyOptions{AllowTornTail: true, AllowMidChainStart: true})
	rotated, err := rotatedFiles(l.cfg.Path)
	if err != nil {
		return err
	}
	if len(rotated) > 0 {
		// The active file continues the last rotated file, which ends with
		// its rotation checkpoint.
		prev := rotated[len(rotated)-1]
		last, err := lastLine(prev)
		if err != nil {
			return err
		}
		if err := v.line(prev, 0, last); err != nil {
			return err
		}
		if e, _ := parseEntry(last); e.Type != TypeCheckpoint || e.Reason != ReasonRotate {
			return fmt.Errorf("%s: last line is not a rotation checkpoint", prev)
		}
	}
	f, _, err := openActive(l.cfg.Path)
	if err != nil {
		return err
	}
	l.f = f
	seqBefore := v.seq
	if err := v.file(l.cfg.Path, io.NewSectionReader(f, 0, 1<<62), true); err != nil {
		return fmt.Errorf("%w (run aegis audit verify; move the file aside to start a new file)", err)
	}
	if v.rep.Records > 0 {
		if err := v.finish(); err != nil {
			return err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	l.size = fi.Size() - v.rep.TornBytes
	if v.seq > seqBefore {
		l.firstSeq = v.firstOfFile
	}
	if v.started {
		l.tip = chain{seq: v.seq, head: v.head, sinceCP: int(v.rep.Unsigned)}
	} else {
		l.tip = chain{head: Genesis}
	}
	l.good = l.tip
	l.lastSeq.Store(l.tip.seq)
	l.pending = &batch{}

	l.mu.Lock()
	defer l.mu.Unlock()
	if v.rep.TornBytes > 0 {
		if err := f.Truncate(l.size); err != nil {
			return fmt.Errorf("cut torn last line: %w", err)
		}
		l.logger.Warn("audit log: removed a torn last line left by a crash", "path", l.cfg.Path, "bytes", v.rep.TornBytes)
		l.appendRecoveryLocked(v.rep.TornBytes, v.rep.tornSHA256)
	}
	l.appendCheckpointLocked(ReasonOpen)
	b := l.pending
	b.sync = true
	return l.waitLocked(b)
}

// Write appends r to the log, assigning r.Seq and r.Prev (and r.Time when
// zero). It returns once the record is written (default mode: write(2)
// done) or durable (Durable: fdatasync done), and an error wrapping
// ErrUnavailable if it could not be: the request must then be refused.
// r must not be used by another goroutine during the call.
func (l *Log) Write(r *Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := l.queueLocked(r)
	if err != nil {
		return err
	}
	return l.waitLocked(b)
}

// queueLocked chains r onto the pending batch and returns the batch; l.mu
// is held.
func (l *Log) queueLocked(r *Record) (*batch, error) {
	if !r.Time.IsZero() {
		if err := checkTime(r.Time); err != nil {
			return nil, err
		}
	}
	if l.closed {
		return nil, errClosed
	}
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	l.beginLocked()
	b := l.pending
	r.Seq = l.tip.seq + 1
	r.Prev = l.tip.head
	start := len(b.buf)
	b.buf = appendRequest(b.buf, r)
	l.endLineLocked(start)
	b.requests++
	l.countLocked()
	if l.joined != nil && b == l.pending {
		select {
		case l.joined <- struct{}{}:
		default:
		}
	}
	return b, nil
}

// AppendDelay is the longest a record given to Append waits for a write:
// until then it goes out with the batch of the next Write, if one comes.
const AppendDelay = 2 * time.Millisecond

// Append is Write for a record nobody waits on: a refusal, whose answer
// discloses nothing whether or not its record is written. It chains r
// and queues it in the pending batch at once (so its place in the log is
// fixed), then returns without waiting; the record is written with the
// next Write's batch or, at the latest, AppendDelay later. A process that
// dies in between loses it (Write's records are lost only with the
// machine, or not at all when durable). Under a flood of refusals this
// writes one batch per AppendDelay instead of one per record. The error is
// ErrClosed, or the log's health error while it cannot write (the record
// is still queued: it is written, after the outage record, when the log
// recovers, or counted as lost with the others).
func (l *Log) Append(r *Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.queueLocked(r); err != nil {
		return err
	}
	if !l.appendArmed {
		l.appendArmed = true
		if l.appendTimer == nil {
			l.appendTimer = time.AfterFunc(AppendDelay, l.flushAppended)
		} else {
			l.appendTimer.Reset(AppendDelay)
		}
	}
	return l.Healthy()
}

// flushAppended writes the pending batch, which holds records Append
// queued, unless the log is closed (Close writes it).
func (l *Log) flushAppended() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.appendArmed = false
	if l.closed || l.pending.lines == 0 {
		return
	}
	_ = l.waitLocked(l.pending)
}

// Event appends an event record (an alarm, a block), chained and later
// signed like every record, and returns once it is written as Write does.
func (l *Log) Event(e *Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Kind, e.Principal, e.Detail = clampString(e.Kind), clampString(e.Principal), clampString(e.Detail)
	l.beginLocked()
	b := l.pending
	e.Seq = l.tip.seq + 1
	e.Prev = l.tip.head
	start := len(b.buf)
	b.buf = appendEvent(b.buf, e)
	l.endLineLocked(start)
	l.countLocked()
	return l.waitLocked(b)
}

// Healthy returns nil if the log can be written, else an error wrapping
// ErrUnavailable and the cause (ErrClosed after Close). While it fails the
// server refuses requests; the log retries by itself every RetryInterval (and on every
// Write) and recovers without help once the cause is gone.
func (l *Log) Healthy() error {
	if p := l.health.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Records:       l.nRecords.Load(),
		Checkpoints:   l.nCheckpoints.Load(),
		Batches:       l.nBatches.Load(),
		WriteFailures: l.nFailures.Load(),
		Lost:          l.nLost.Load(),
		Rotations:     l.nRotate.Load(),
		Failing:       l.failing.Load(),
		Seq:           l.lastSeq.Load(),
	}
}

// Close writes a checkpoint (reason "close"), syncs and closes the file,
// and releases the lock. Writes after Close return ErrClosed. The error is
// the checkpoint's or the sync's, if the log could not be written.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done

	l.mu.Lock()
	l.beginLocked()
	l.appendCheckpointLocked(ReasonClose)
	b := l.pending
	b.sync = true
	err := l.waitLocked(b)
	for l.flushing {
		l.cond.Wait()
	}
	f := l.f
	l.f = nil
	l.mu.Unlock()
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	l.lockf.Close()
	if l.aio != nil {
		l.aio.close()
	}
	l.health.Store(&errClosed)
	return err
}

// run checkpoints every CheckpointInterval and retries an unwritable log
// every RetryInterval, until Close.
func (l *Log) run() {
	defer close(l.done)
	t := time.NewTicker(min(l.cfg.CheckpointInterval, l.cfg.RetryInterval))
	defer t.Stop()
	var lastRetry time.Time
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		now := l.now()
		l.mu.Lock()
		switch {
		case l.closed:
		case l.out != nil:
			if !l.flushing && l.pending.lines == 0 && now.Sub(lastRetry) >= l.cfg.RetryInterval {
				lastRetry = now
				l.beginLocked()
				_ = l.waitLocked(l.pending)
			}
		case l.tip.sinceCP > 0 && now.Sub(l.tip.lastCP) >= l.cfg.CheckpointInterval:
			l.appendCheckpointLocked(ReasonInterval)
			_ = l.waitLocked(l.pending)
		}
		l.mu.Unlock()
	}
}
