package ratelimit

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

const memShards = 64 // a power of two

// memKey names one GCRA key.
type memKey struct {
	principal string
	group     string
	kind      uint8
}

// quotaKey names one quota counter.
type quotaKey struct {
	principal string
	model     string
	period    uint8
}

// quotaCount is a counter of one period.
type quotaCount struct {
	index int32 // the period counted
	n     int64
	dirty bool // changed since it was last written to bbolt
}

// memStore keeps state in this process: GCRA keys and quota counters in
// shards chosen by principal, so that every key of one decision is under
// one lock. Quota counters are written to bbolt by a flusher.
type memStore struct {
	seed        maphash.Seed
	shards      [memShards]memShard
	maxPerShard int
	db          *bolt.DB // nil: quotas are not persisted (no quotas configured)
	log         *slog.Logger
	now         func() int64

	flushMu     sync.Mutex // serializes flushes
	prunedDay   int32      // periods whose predecessors flush has deleted; guarded by flushMu
	prunedMonth int32

	stop chan struct{} // closed by close
	done chan struct{} // closed when maintain returns
}

type memShard struct {
	mu     sync.Mutex
	tats   map[memKey]int64        // theoretical arrival times (ns); guarded by mu
	counts map[quotaKey]quotaCount // guarded by mu
	dirty  []quotaKey              // counters with dirty set; guarded by mu
	_      [16]byte                // keep shards' locks on separate cache lines
}

// newMemStore returns a memory store holding at most maxKeys keys, loading
// the current periods' quota counters from db (if not nil) and writing
// them back every flushEvery.
func newMemStore(db *bolt.DB, maxKeys int, flushEvery time.Duration, now func() int64, log *slog.Logger) (*memStore, error) {
	m := &memStore{
		seed:        maphash.MakeSeed(),
		maxPerShard: max(maxKeys/memShards, 16),
		db:          db,
		log:         log,
		now:         now,
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].tats = make(map[memKey]int64)
		m.shards[i].counts = make(map[quotaKey]quotaCount)
	}
	if db != nil {
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketQuotas)
			return err
		}); err != nil {
			return nil, err
		}
		t := now()
		day, _ := periodIndex(periodDay, t)
		month, _ := periodIndex(periodMonth, t)
		if err := loadQuotas(db, day, month, func(e quotaEntry) {
			sh := m.shard(e.key.principal)
			sh.counts[e.key] = quotaCount{index: e.index, n: e.n}
		}); err != nil {
			return nil, err
		}
	}
	go m.maintain(flushEvery)
	return m, nil
}

func (m *memStore) shard(principal string) *memShard {
	return &m.shards[maphash.String(m.seed, principal)&(memShards-1)]
}

func (m *memStore) take(_ context.Context, c checks, now int64) (verdict, error) {
	sh := m.shard(c.principal)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.takeLocked(&c, now, m.maxPerShard)
}

func (v *verdict) refuse(i int, wait int64) {
	if v.ok {
		v.ok = false
		v.failed = i
	}
	v.wait = max(v.wait, wait)
}

func (sh *memShard) takeLocked(c *checks, now int64, maxKeys int) (verdict, error) {
	v := verdict{ok: true}
	var tats [maxBuckets]int64
	fresh := 0 // keys this decision would add
	for i := 0; i < c.nb; i++ {
		b := &c.buckets[i]
		tat, found := sh.tats[memKey{c.principal, b.group, b.kind}]
		if !found {
			fresh++
		}
		nt, wait, ok := conform(tat, now, b.interval, b.tolerance, b.cost)
		if !ok {
			v.refuse(i, wait)
		}
		tats[i] = nt
	}
	var counts [maxQuotas]quotaCount
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		e, found := sh.counts[quotaKey{c.principal, q.model, q.period}]
		if !found {
			fresh++
		}
		switch {
		case e.index < q.index: // a new period (or a new key)
			e = quotaCount{index: q.index}
		case e.index > q.index: // the clock went back: keep counting the later period
		}
		if e.n >= q.limit {
			v.refuse(c.nb+j, q.reset-now)
		}
		counts[j] = e
	}
	if !v.ok {
		return v, nil
	}
	if fresh > 0 && len(sh.tats)+len(sh.counts)+fresh > maxKeys {
		sh.sweepLocked(now)
		if len(sh.tats)+len(sh.counts)+fresh > maxKeys {
			return verdict{}, errStoreFull
		}
	}
	for i := 0; i < c.nb; i++ {
		b := &c.buckets[i]
		sh.tats[memKey{c.principal, b.group, b.kind}] = tats[i]
	}
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		e := counts[j]
		e.n++
		k := quotaKey{c.principal, q.model, q.period}
		if !e.dirty {
			e.dirty = true
			sh.dirty = append(sh.dirty, k)
		}
		sh.counts[k] = e
	}
	return v, nil
}

// sweepLocked forgets keys that no longer change any decision: GCRA keys
// whose theoretical arrival time has passed (a fresh key is the same), and
// counters of ended periods.
func (sh *memShard) sweepLocked(now int64) {
	for k, tat := range sh.tats {
		if tat <= now {
			delete(sh.tats, k)
		}
	}
	day, _ := periodIndex(periodDay, now)
	month, _ := periodIndex(periodMonth, now)
	for k, e := range sh.counts {
		if (k.period == periodDay && e.index < day) || (k.period == periodMonth && e.index < month) {
			delete(sh.counts, k)
		}
	}
}

// sweepEvery is how often maintain sweeps every shard.
const sweepEvery = time.Minute

// maintain flushes quota counters every flushEvery and sweeps the shards
// every sweepEvery, until close.
func (m *memStore) maintain(flushEvery time.Duration) {
	defer close(m.done)
	flush := time.NewTicker(flushEvery)
	defer flush.Stop()
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-flush.C:
			if err := m.flush(); err != nil {
				m.log.Error("ratelimit: writing quota counters", "err", err)
			}
		case <-sweep.C:
			now := m.now()
			for i := range m.shards {
				sh := &m.shards[i]
				sh.mu.Lock()
				sh.sweepLocked(now)
				sh.mu.Unlock()
			}
		}
	}
}

// flush writes the quota counters changed since the last flush to bbolt in
// one transaction. Counters that could not be written stay dirty.
func (m *memStore) flush() error {
	if m.db == nil {
		return nil
	}
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	var batch []quotaEntry
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, k := range sh.dirty {
			if e, ok := sh.counts[k]; ok && e.dirty {
				batch = append(batch, quotaEntry{key: k, index: e.index, n: e.n})
				e.dirty = false
				sh.counts[k] = e
			}
		}
		clear(sh.dirty)
		sh.dirty = sh.dirty[:0]
		sh.mu.Unlock()
	}
	now := m.now()
	day, _ := periodIndex(periodDay, now)
	month, _ := periodIndex(periodMonth, now)
	if len(batch) == 0 && day == m.prunedDay && month == m.prunedMonth {
		return nil // nothing to write: no transaction, no fsync
	}
	if err := writeQuotas(m.db, batch, day, month); err != nil {
		for _, e := range batch {
			sh := m.shard(e.key.principal)
			sh.mu.Lock()
			if cur, ok := sh.counts[e.key]; ok && cur.index == e.index && !cur.dirty {
				cur.dirty = true
				sh.counts[e.key] = cur
				sh.dirty = append(sh.dirty, e.key)
			}
			sh.mu.Unlock()
		}
		return err
	}
	m.prunedDay, m.prunedMonth = day, month
	return nil
}

// close stops the flusher and writes the counters a last time.
func (m *memStore) close() error {
	close(m.stop)
	<-m.done
	return m.flush()
}
