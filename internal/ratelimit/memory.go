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

// quotaKey names one quota counter.
type quotaKey struct {
	principal string
	model     string
	period    uint8
}

// memStore keeps state in this process, in shards chosen by principal:
// one record per principal holds all its GCRA keys and quota counters, so
// that a decision is one map lookup under one lock. Quota counters are
// written to bbolt by a flusher.
type memStore struct {
	seed        maphash.Seed
	shards      [memShards]memShard
	maxPerShard int      // GCRA keys and counters per shard
	db          *bolt.DB // nil: quotas are not persisted (none configured)
	log         *slog.Logger
	now         func() int64

	flushMu     sync.Mutex // serializes flushes
	prunedDay   int32      // periods whose predecessors flush has deleted; guarded by flushMu
	prunedMonth int32

	stop chan struct{} // closed by close
	done chan struct{} // closed when maintain returns
}

var _ store = (*memStore)(nil)

type memShard struct {
	mu         sync.Mutex
	principals map[string]*principalState // guarded by mu
	keys       int                        // GCRA keys and counters in principals; guarded by mu
	dirty      []*principalState          // principals with a dirty counter; guarded by mu
	periods    periods                    // guarded by mu
	_          [8]byte
}

// principalState is everything kept about one principal; guarded by its
// shard's mu. The slices are short: one entry per kind of bucket and per
// model with an override.
type principalState struct {
	id      string
	buckets []bucketState
	quotas  []quotaState
	dirty   bool // in its shard's dirty list
}

type bucketState struct {
	kind  uint8
	group string
	tat   int64 // theoretical arrival time, ns
}

type quotaState struct {
	period uint8
	model  string
	index  int32 // the period counted
	n      int64
	dirty  bool // changed since it was last written to bbolt
}

// periods caches the current day and month, so that decisions need no
// calendar arithmetic.
type periods struct {
	dayStart, dayEnd     int64
	monthStart, monthEnd int64
	day, month           int32
}

// at returns the index and end of the period of kind p containing now.
func (c *periods) at(p uint8, now int64) (int32, int64) {
	if p == periodDay {
		if now < c.dayStart || now >= c.dayEnd {
			c.day, c.dayEnd = periodIndex(periodDay, now)
			c.dayStart = c.dayEnd - nsPerDay
		}
		return c.day, c.dayEnd
	}
	if now < c.monthStart || now >= c.monthEnd {
		c.month, c.monthEnd = periodIndex(periodMonth, now)
		t := time.Unix(0, now).UTC()
		c.monthStart = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).UnixNano()
	}
	return c.month, c.monthEnd
}

// newMemStore returns a memory store holding at most maxKeys GCRA keys and
// counters, loading the current periods' quota counters from db (if not
// nil) and writing them back every flushEvery.
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
		m.shards[i].principals = make(map[string]*principalState)
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
			ps := sh.principals[e.key.principal]
			if ps == nil {
				ps = &principalState{id: e.key.principal}
				sh.principals[ps.id] = ps
			}
			ps.quotas = append(ps.quotas, quotaState{period: e.key.period, model: e.key.model, index: e.index, n: e.n})
			sh.keys++
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

func (m *memStore) take(_ context.Context, c checks) (verdict, error) {
	sh := m.shard(c.principal)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Read the clock under the lock: a time read before it could be
	// older than one a later decision on the same key already recorded.
	return sh.takeLocked(&c, m.now(), m.maxPerShard)
}

func (v *verdict) refuse(i int, wait int64) {
	if v.ok {
		v.ok = false
		v.failed = i
	}
	v.wait = max(v.wait, wait)
}

// takeLocked decides c at now.
func (sh *memShard) takeLocked(c *checks, now int64, maxKeys int) (verdict, error) {
	ps := sh.principals[c.principal]
	var bi [maxBuckets]int // index in ps.buckets; -1: none yet
	var qi [maxQuotas]int
	var tats [maxBuckets]int64
	var counts [maxQuotas]quotaState
	fresh := 0 // keys this decision would add
	v := verdict{ok: true}
	for i := 0; i < c.nb; i++ {
		b := &c.buckets[i]
		var tat int64
		bi[i] = ps.bucket(b.kind, b.group)
		if bi[i] >= 0 {
			tat = ps.buckets[bi[i]].tat
		} else {
			fresh++
		}
		nt, wait, ok := conform(tat, now, b.interval, b.tolerance, b.cost)
		if !ok {
			v.refuse(i, wait)
		}
		tats[i] = nt
	}
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		index, end := sh.periods.at(q.period, now)
		e := quotaState{period: q.period, model: q.model, index: index}
		qi[j] = ps.quota(q.period, q.model)
		if qi[j] >= 0 {
			cur := ps.quotas[qi[j]]
			// A later period than now's means the clock went back:
			// keep counting it.
			if cur.index >= index {
				e = cur
			} else {
				e.dirty = cur.dirty
			}
		} else {
			fresh++
		}
		if e.n >= q.limit {
			v.refuse(c.nb+j, end-now)
		}
		counts[j] = e
	}
	if !v.ok {
		return v, nil
	}
	if fresh > 0 && sh.keys+fresh > maxKeys {
		sh.sweepLocked(now)
		if sh.keys+fresh > maxKeys {
			return verdict{}, errStoreFull
		}
		ps = sh.principals[c.principal] // the sweep may have dropped it
		for i := 0; i < c.nb; i++ {
			bi[i] = ps.bucket(c.buckets[i].kind, c.buckets[i].group)
		}
		for j := 0; j < c.nq; j++ {
			qi[j] = ps.quota(c.quotas[j].period, c.quotas[j].model)
		}
	}
	if ps == nil {
		ps = &principalState{id: c.principal}
		sh.principals[c.principal] = ps
	}
	for i := 0; i < c.nb; i++ {
		if bi[i] >= 0 {
			ps.buckets[bi[i]].tat = tats[i]
		} else {
			ps.buckets = append(ps.buckets, bucketState{kind: c.buckets[i].kind, group: c.buckets[i].group, tat: tats[i]})
			sh.keys++
		}
	}
	for j := 0; j < c.nq; j++ {
		e := counts[j]
		e.n++
		e.dirty = true
		if qi[j] >= 0 {
			ps.quotas[qi[j]] = e
		} else {
			ps.quotas = append(ps.quotas, e)
			sh.keys++
		}
		if !ps.dirty {
			ps.dirty = true
			sh.dirty = append(sh.dirty, ps)
		}
	}
	return v, nil
}

// bucket returns the index of ps's bucket, or -1.
func (ps *principalState) bucket(kind uint8, group string) int {
	if ps == nil {
		return -1
	}
	for i := range ps.buckets {
		if ps.buckets[i].kind == kind && ps.buckets[i].group == group {
			return i
		}
	}
	return -1
}

// quota returns the index of ps's counter, or -1.
func (ps *principalState) quota(period uint8, model string) int {
	if ps == nil {
		return -1
	}
	for i := range ps.quotas {
		if ps.quotas[i].period == period && ps.quotas[i].model == model {
			return i
		}
	}
	return -1
}

// sweepLocked forgets what no longer changes any decision: GCRA keys
// whose theoretical arrival time has passed (a fresh key is the same), and
// counters of ended periods; then principals left with nothing.
func (sh *memShard) sweepLocked(now int64) {
	day, _ := periodIndex(periodDay, now)
	month, _ := periodIndex(periodMonth, now)
	for id, ps := range sh.principals {
		n := len(ps.buckets) + len(ps.quotas)
		ps.buckets = deleteFunc(ps.buckets, func(b bucketState) bool { return b.tat <= now })
		ps.quotas = deleteFunc(ps.quotas, func(q quotaState) bool {
			return (q.period == periodDay && q.index < day) || (q.period == periodMonth && q.index < month)
		})
		sh.keys -= n - len(ps.buckets) - len(ps.quotas)
		if len(ps.buckets)+len(ps.quotas) == 0 && !ps.dirty {
			delete(sh.principals, id)
		}
	}
}

// deleteFunc is slices.DeleteFunc that releases the slice when it empties.
func deleteFunc[S ~[]E, E any](s S, del func(E) bool) S {
	out := s[:0]
	for _, e := range s {
		if !del(e) {
			out = append(out, e)
		}
	}
	clear(s[len(out):])
	if len(out) == 0 {
		return nil
	}
	return out
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
// one transaction (one fsync). Counters that could not be written stay
// dirty, for the next flush.
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
		for _, ps := range sh.dirty {
			for j := range ps.quotas {
				if q := &ps.quotas[j]; q.dirty {
					batch = append(batch, quotaEntry{key: quotaKey{ps.id, q.model, q.period}, index: q.index, n: q.n})
					q.dirty = false
				}
			}
			ps.dirty = false
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
			if ps := sh.principals[e.key.principal]; ps != nil {
				if j := ps.quota(e.key.period, e.key.model); j >= 0 && ps.quotas[j].index == e.index {
					ps.quotas[j].dirty = true
					if !ps.dirty {
						ps.dirty = true
						sh.dirty = append(sh.dirty, ps)
					}
				}
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
