package watermark

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultMaxPairs is how many marked pairs are kept per principal unless
// configured: the latest 5,000.
const DefaultMaxPairs = 5000

// DefaultQueue is how many pairs may wait to be written.
const DefaultQueue = 4096

// Bucket layout in the state store:
//
//	watermark-pairs/            one bucket per principal ID
//	  <principal>/
//	    pairs/    8-byte big-endian sequence -> encoded Pair
//	    macs/     the pair's MAC -> its sequence (one pair per input)
//	    count     number of pairs, 8-byte big-endian
var (
	bucketRoot  = []byte("watermark-pairs")
	bucketPairs = []byte("pairs")
	bucketMACs  = []byte("macs")
	keyCount    = []byte("count")
)

// RecorderOptions tunes a Recorder.
type RecorderOptions struct {
	// MaxPairs is how many pairs are kept per principal, the oldest
	// dropped first (DefaultMaxPairs when 0).
	MaxPairs int
	// Queue is how many pairs may wait to be written (DefaultQueue when
	// 0); when it is full further pairs are dropped and counted.
	Queue int
	// Delay is how long the writer lets pairs gather after the first
	// before it commits them together (DefaultDelay when 0, none when
	// negative). A commit syncs the disk, so one per marked answer would
	// cost far more than the marking; a crash loses at most Delay's pairs.
	Delay time.Duration
	// Log receives write failures; nil discards them.
	Log *slog.Logger
}

// DefaultDelay is RecorderOptions.Delay's default.
const DefaultDelay = 100 * time.Millisecond

// Recorder stores marked pairs per principal in the embedded state store.
// Record never blocks: a background writer commits what is queued in one
// transaction at a time, so the request that was marked does not wait for
// the disk (and its latency does not tell it was marked).
type Recorder struct {
	db      *bolt.DB
	max     int
	log     *slog.Logger
	dropped atomic.Uint64
	failed  atomic.Uint64
	done    chan struct{}

	delay time.Duration
	// mu guards closed and sends on queue, so that Close can close it.
	mu     sync.RWMutex
	closed bool
	queue  chan item
	wake   chan struct{} // cuts the writer's Delay short (Flush, Close)
}

type item struct {
	principal string
	pair      Pair
	flushed   chan struct{} // a Flush marker, when not nil
}

// NewRecorder opens the pair buckets in db and starts the writer. Close
// stops it; db stays open.
func NewRecorder(db *bolt.DB, opts RecorderOptions) (*Recorder, error) {
	if opts.MaxPairs <= 0 {
		opts.MaxPairs = DefaultMaxPairs
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRoot)
		return err
	}); err != nil {
		return nil, fmt.Errorf("watermark store: %w", err)
	}
	switch {
	case opts.Delay == 0:
		opts.Delay = DefaultDelay
	case opts.Delay < 0:
		opts.Delay = 0
	}
	r := &Recorder{db: db, max: opts.MaxPairs, log: opts.Log, delay: opts.Delay, done: make(chan struct{}),
		queue: make(chan item, opts.Queue), wake: make(chan struct{}, 1)}
	go r.run()
	return r, nil
}

// Record queues p for principal and reports whether it was queued: false
// when the queue is full or the Recorder closed. p must not share memory
// that the caller will reuse (Service copies the inputs).
func (r *Recorder) Record(principal string, p Pair) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.dropped.Add(1)
		return false
	}
	select {
	case r.queue <- item{principal: principal, pair: p}:
		return true
	default:
		r.dropped.Add(1)
		return false
	}
}

// Flush waits until every pair queued before it is written (or failed).
func (r *Recorder) Flush() {
	ch := make(chan struct{})
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return
	}
	r.queue <- item{flushed: ch} // may wait for room: Flush is not for the request path
	r.mu.RUnlock()
	r.poke()
	<-ch
}

func (r *Recorder) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Dropped returns how many pairs were not recorded because the queue was
// full or the Recorder closed; Failed how many could not be written.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Failed returns how many pairs failed to be written.
func (r *Recorder) Failed() uint64 { return r.failed.Load() }

// Close writes what is queued and stops the writer. It is safe to call
// more than once.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.mu.Unlock()
	r.poke()
	<-r.done
	return nil
}

// maxBatch bounds the pairs written in one transaction.
const maxBatch = 256

func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]item, 0, maxBatch)
	var timer *time.Timer
	for {
		it, ok := <-r.queue
		if !ok {
			return
		}
		batch = append(batch[:0], it)
		if it.flushed == nil && r.delay > 0 {
			// Sleep rather than wait on the queue: a send to a waiting
			// goroutine wakes it, per marked answer.
			if timer == nil {
				timer = time.NewTimer(r.delay)
			} else {
				timer.Reset(r.delay)
			}
			select {
			case <-timer.C:
			case <-r.wake:
				timer.Stop()
			}
		}
		closed := false
	fill:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-r.queue:
				if !ok {
					closed = true
					break fill
				}
				batch = append(batch, it)
			default:
				break fill
			}
		}
		r.write(batch)
		clear(batch) // let the pairs go
		if closed {
			return
		}
	}
}

func (r *Recorder) write(batch []item) {
	n, failed := 0, 0
	for _, it := range batch {
		if it.flushed == nil {
			n++
		}
	}
	if n > 0 {
		// A pair that cannot be stored (a principal ID too long for a
		// bucket name, a pair without a MAC) is skipped, not allowed to
		// take the rest of the batch with it.
		err := r.db.Update(func(tx *bolt.Tx) error {
			failed = 0
			root := tx.Bucket(bucketRoot)
			for _, it := range batch {
				if it.flushed != nil {
					continue
				}
				if err := r.putLocked(root, it.principal, &it.pair); err != nil {
					failed++
					r.log.Error("watermark pair not recorded", "principal", it.principal, "err", err)
				}
			}
			return nil
		})
		if err != nil {
			failed = n
			r.log.Error("watermark pairs not recorded", "pairs", n, "err", err)
		}
		r.failed.Add(uint64(failed))
	}
	for _, it := range batch {
		if it.flushed != nil {
			close(it.flushed)
		}
	}
}

// putLocked stores one pair inside a write transaction (bbolt's writer
// lock held).
func (r *Recorder) putLocked(root *bolt.Bucket, principal string, p *Pair) error {
	if principal == "" {
		principal = "-"
	}
	if len(p.MAC) == 0 {
		return errors.New("pair without a MAC")
	}
	if len(principal) > bolt.MaxKeySize {
		return fmt.Errorf("principal ID of %d bytes", len(principal))
	}
	pb, err := root.CreateBucketIfNotExists([]byte(principal))
	if err != nil {
		return fmt.Errorf("principal %q: %w", principal, err)
	}
	pairs, err := pb.CreateBucketIfNotExists(bucketPairs)
	if err != nil {
		return err
	}
	macs, err := pb.CreateBucketIfNotExists(bucketMACs)
	if err != nil {
		return err
	}
	if macs.Get(p.MAC) != nil {
		return nil // this input is already recorded
	}
	seq, err := pairs.NextSequence()
	if err != nil {
		return err
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	if err := pairs.Put(key[:], encodePair(nil, p)); err != nil {
		return err
	}
	if err := macs.Put(p.MAC, slices.Clone(key[:])); err != nil {
		return err
	}
	count := uint64(0)
	if v := pb.Get(keyCount); len(v) == 8 {
		count = binary.BigEndian.Uint64(v)
	}
	count++
	// Drop the oldest beyond the bound.
	c := pairs.Cursor()
	for k, v := c.First(); k != nil && count > uint64(r.max); k, v = c.First() {
		if old, err := decodePair(v); err == nil {
			if err := macs.Delete(old.MAC); err != nil {
				return err
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
		count--
	}
	var cb [8]byte
	binary.BigEndian.PutUint64(cb[:], count)
	return pb.Put(keyCount, cb[:])
}

// Pairs returns the pairs recorded for principal, oldest first; none if
// the principal has none. It reads a consistent snapshot.
func Pairs(db *bolt.DB, principal string) ([]Pair, error) {
	var out []Pair
	err := db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketRoot)
		if root == nil {
			return nil
		}
		pb := root.Bucket([]byte(principal))
		if pb == nil {
			return nil
		}
		pairs := pb.Bucket(bucketPairs)
		if pairs == nil {
			return nil
		}
		return pairs.ForEach(func(k, v []byte) error {
			p, err := decodePair(slices.Clone(v)) // v is valid only inside the transaction
			if err != nil {
				return fmt.Errorf("principal %q pair %x: %w", principal, k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// Principal is a principal with recorded pairs.
type Principal struct {
	ID    string `json:"principal"`
	Pairs int    `json:"pairs"`
}

// Principals lists the principals with recorded pairs, by ID.
func Principals(db *bolt.DB) ([]Principal, error) {
	var out []Principal
	err := db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketRoot)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(k []byte) error {
			p := Principal{ID: string(k)}
			if v := root.Bucket(k).Get(keyCount); len(v) == 8 {
				p.Pairs = int(binary.BigEndian.Uint64(v))
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}
