package ratelimit

import (
	"context"
	"errors"
)

// Bucket kinds: what a GCRA key counts.
const (
	kindRequests uint8 = iota + 1 // requests, per principal and model group
	kindElements                  // batch elements, per principal and model group
	kindScope                     // requests, per principal over all models (max_rate scope)
)

// Quota periods.
const (
	periodDay uint8 = iota + 1
	periodMonth
)

const (
	maxBuckets = 3 // a request bucket, the scope bucket and an elements bucket
	maxQuotas  = 4 // daily and monthly, for the principal and for the model
)

// checks are everything one decision asks of a store, for one principal.
// It is passed by value so that building it does not allocate.
type checks struct {
	principal string
	buckets   [maxBuckets]bucketCheck
	nb        int
	quotas    [maxQuotas]quotaCheck
	nq        int
}

// bucketCheck asks for cost units of one GCRA key.
type bucketCheck struct {
	kind      uint8
	group     string // "" for the default bucket, else the model with an override
	interval  int64  // ns per unit
	tolerance int64  // ns
	cost      int64
}

// quotaCheck counts one request against one budget, in the period (day
// or month) the store's clock is in.
type quotaCheck struct {
	period uint8
	model  string // "" for the principal's budget over all models
	limit  int64
}

func (c *checks) addBucket(b bucketCheck) {
	c.buckets[c.nb] = b
	c.nb++
}

func (c *checks) addQuota(q quotaCheck) {
	c.quotas[c.nq] = q
	c.nq++
}

// verdict is a store's answer. When a check fails, failed is its index
// (buckets first, then quotas) and wait the longest time until every
// failing check would pass.
type verdict struct {
	ok     bool
	failed int
	wait   int64 // ns
}

// store keeps limiter state. take applies every check atomically, at a
// time the store reads from its clock once it holds whatever serializes
// decisions (so that decisions on one key are judged in the order they
// are made): either all pass and are recorded, or none is recorded. An
// error means the store could not decide; the caller applies
// on_store_error.
type store interface {
	take(ctx context.Context, c checks) (verdict, error)
	close() error
}

// errStoreFull is the memory store's error when max_keys is reached.
var errStoreFull = errors.New("rate limit state full (max_keys)")
