package ratelimit

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// concurrency counts each principal's requests in flight on this replica.
// A principal with none has no entry, so the state is bounded by the
// number of requests in flight.
type concurrency struct {
	max    int32
	seed   maphash.Seed
	shards [memShards]concShard
}

type concShard struct {
	mu sync.Mutex
	n  map[string]int32 // requests in flight per principal; guarded by mu
	_  [48]byte
}

func newConcurrency(max int) *concurrency {
	c := &concurrency{max: int32(max), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].n = make(map[string]int32)
	}
	return c
}

func (c *concurrency) shard(principal string) *concShard {
	return &c.shards[maphash.String(c.seed, principal)&(memShards-1)]
}

// acquire takes a slot for principal, reporting false when it has max in
// flight already.
func (c *concurrency) acquire(principal string) bool {
	sh := c.shard(principal)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.n[principal]
	if n >= c.max {
		return false
	}
	sh.n[principal] = n + 1
	return true
}

func (c *concurrency) release(principal string) {
	sh := c.shard(principal)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.n[principal]; n > 1 {
		sh.n[principal] = n - 1
	} else {
		delete(sh.n, principal)
	}
}

// inFlight returns principal's requests in flight.
func (c *concurrency) inFlight(principal string) int {
	sh := c.shard(principal)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.n[principal])
}

// releaser returns the function that gives principal's slot back; calls
// after the first do nothing.
func (c *concurrency) releaser(principal string) func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			c.release(principal)
		}
	}
}
