package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// Limiter enforces each principal's limits: its request rate, its batch
// element rate, its requests in flight and its quotas. It is safe for
// concurrent use. The zero Limiter, and a nil one, refuse everything.
type Limiter struct {
	store    store
	conc     *concurrency // nil: no concurrency limit
	def      modelRules   // models without an override
	models   map[string]*modelRules
	daily    int64 // per principal over all models; 0: none
	monthly  int64
	failOpen bool
	now      func() time.Time
	log      *slog.Logger

	closeOnce sync.Once
	closeErr  error

	lastStoreLog atomic.Int64 // when a store failure was last logged (ns)
	unlogged     atomic.Int64 // store failures since then
}

// modelRules are the limits that apply to one model.
type modelRules struct {
	name      string // the model; "" for the defaults
	requests  rule
	reqGroup  string // bucket group of requests: "" (shared) or name
	elements  rule
	elemGroup string
	daily     int64 // budgets for this model alone; 0: none
	monthly   int64
}

// Options are what New needs besides the configuration.
type Options struct {
	// DB is the bbolt database in which the memory backend keeps quota
	// counters: the server's state store, (*state.Bolt).DB(). Required by
	// the memory backend when any quota is configured.
	DB *bolt.DB
	// Logger receives store failures (at most one line per 10 s) and
	// quota flush failures; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. With the Redis backend and the
	// real clock, GCRA uses Redis's clock (TIME), which all replicas share.
	Now func() time.Time
}

// New returns a Limiter for cfg, which must be valid (Validate). Close it
// to write quota counters a last time and release the Redis connections.
func New(cfg Config, opts Options) (*Limiter, error) {
	if err := cfg.Validate(""); err != nil {
		return nil, err
	}
	l := &Limiter{
		def: modelRules{
			requests: newRule(cfg.Requests.PerSecond, cfg.Requests.Burst),
			elements: newRule(cfg.Elements.PerSecond, cfg.Elements.Burst),
		},
		models:   make(map[string]*modelRules, len(cfg.Models)),
		daily:    cfg.DailyRequests,
		monthly:  cfg.MonthlyRequests,
		failOpen: cfg.OnStoreError == StoreErrorAllow,
		now:      opts.Now,
		log:      opts.Logger,
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	quotas := cfg.DailyRequests > 0 || cfg.MonthlyRequests > 0
	for name, m := range cfg.Models {
		r := l.def
		r.name = name
		if m.Requests != nil {
			r.requests, r.reqGroup = newRule(m.Requests.PerSecond, m.Requests.Burst), name
		}
		if m.Elements != nil {
			r.elements, r.elemGroup = newRule(m.Elements.PerSecond, m.Elements.Burst), name
		}
		r.daily, r.monthly = m.DailyRequests, m.MonthlyRequests
		quotas = quotas || r.daily > 0 || r.monthly > 0
		l.models[name] = &r
	}
	if cfg.MaxConcurrent > 0 {
		l.conc = newConcurrency(cfg.MaxConcurrent)
	}
	nowNS := func() int64 { return l.now().UnixNano() }
	switch cfg.Backend {
	case BackendMemory:
		if quotas && opts.DB == nil {
			return nil, errors.New("ratelimit: quotas with the memory backend need the state database")
		}
		db := opts.DB
		if !quotas {
			db = nil // nothing to persist
		}
		s, err := newMemStore(db, cfg.MaxKeys, cfg.QuotaFlushInterval, nowNS, l.log)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: %w", err)
		}
		l.store = s
	case BackendRedis:
		var clock func() int64 // Redis's clock, shared by the replicas
		if opts.Now != nil {
			clock = nowNS
		}
		s, err := newRedisStore(cfg.Redis, clock, l.log)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: %w", err)
		}
		l.store = s
	}
	return l, nil
}

// Close releases the store: the memory backend writes its quota counters
// a last time, the Redis backend closes its connections. Decisions after
// Close fail as the store failing would. Later calls return the first
// call's result.
func (l *Limiter) Close() error {
	if l == nil || l.store == nil {
		return nil
	}
	l.closeOnce.Do(func() { l.closeErr = l.store.close() })
	return l.closeErr
}

// Anonymous is the principal ID under which requests without a principal
// (authentication disabled) share one set of limits.
const Anonymous = "anonymous"

func principalID(p *pipeline.Principal) string {
	if p == nil || p.ID == "" {
		return Anonymous
	}
	return p.ID
}

func (l *Limiter) rules(model string) *modelRules {
	if r, ok := l.models[model]; ok {
		return r
	}
	return &l.def
}

func noop() {}

// Public refusals. Each speaks of the caller's own limits only.
const (
	msgRate        = "request rate limit exceeded"
	msgElements    = "batch element rate limit exceeded"
	msgConcurrency = "too many concurrent requests"
	msgDaily       = "daily request quota exhausted"
	msgMonthly     = "monthly request quota exhausted"
	msgModelDaily  = "daily request quota for this model exhausted"
	msgModelMonth  = "monthly request quota for this model exhausted"
	msgStore       = "rate limiting unavailable, retry later"
)

// concurrencyRetry is what a principal over its concurrency limit is told
// to wait: a slot frees when one of its own requests ends.
const concurrencyRetry = time.Second

// Admit decides whether principal p may start a request to model: its
// requests in flight on this replica, its request rate (and its
// credential's max_rate), and its daily and monthly quotas, which count
// the request when it is admitted. A nil p is the Anonymous principal.
//
// On admission it returns the function that ends the request, which must
// be called when the request is done (later calls do nothing). On refusal
// it returns an *apierr.Error: ResourceExhausted with RetryAfter when p is
// over a limit, Unavailable when the store failed and on_store_error is
// deny (or the Limiter is not configured), DeadlineExceeded or Canceled if
// ctx ended; release is then a no-op.
func (l *Limiter) Admit(ctx context.Context, p *pipeline.Principal, model string) (release func(), err error) {
	slot, err := l.admit(ctx, p, model, 0)
	if err != nil || slot == "" {
		return noop, err
	}
	return l.conc.releaser(slot), nil
}

// admit is Admit that also charges elements batch elements (Charge) in the
// same decision, when elements > 0: one round trip to the store, and
// nothing is counted unless everything passes. Rather than a release
// function it returns the principal whose concurrency slot the request
// holds ("" for none), for the caller to give back (l.conc.release).
func (l *Limiter) admit(ctx context.Context, p *pipeline.Principal, model string, elements int64) (slot string, err error) {
	if l == nil || l.store == nil {
		return "", apierr.Wrap(apierr.Unavailable, errNoStore, msgStore)
	}
	r := l.rules(model)
	charge := elements > 0 && r.elements.limited()
	if charge && elements > r.elements.burst {
		return "", elementsOverBurst(elements, r.elements.burst)
	}
	id := principalID(p)
	if l.conc != nil {
		if !l.conc.acquire(id) {
			return "", &apierr.Error{Kind: apierr.ResourceExhausted, Msg: msgConcurrency, RetryAfter: concurrencyRetry}
		}
		slot = id
	}
	release := func() {
		if slot != "" {
			l.conc.release(slot)
		}
	}
	c := checks{principal: id}
	if r.requests.limited() {
		c.addBucket(bucketCheck{kind: kindRequests, group: r.reqGroup, interval: r.requests.interval, tolerance: r.requests.tolerance(), cost: 1})
	}
	if charge {
		c.addBucket(elementsCheck(r, elements))
	}
	if p != nil && (p.Scopes.MaxRate > 0 || math.IsNaN(p.Scopes.MaxRate)) {
		c.addBucket(scopeBucket(p.Scopes.MaxRate, r.requests))
	}
	l.addQuotas(&c, r)
	if c.nb+c.nq == 0 {
		return slot, nil
	}
	v, err := l.store.take(ctx, c)
	if err != nil {
		if err = l.storeFailed(ctx, err); err != nil {
			release()
			return "", err
		}
		return slot, nil
	}
	if !v.ok {
		release()
		return "", refusal(&c, v)
	}
	return slot, nil
}

// minScopeRate is the slowest max_rate honoured: one request a day. A
// slower (or NaN) max_rate gets this one.
const minScopeRate = 1.0 / 86400

// scopeBucket is the bucket of a credential's max_rate scope, over all
// its models: that rate, with a burst of one second's worth (at least 1,
// at most the configured burst).
func scopeBucket(maxRate float64, configured rule) bucketCheck {
	if !(maxRate >= minScopeRate) {
		maxRate = minScopeRate
	}
	burst := int64(math.Ceil(math.Min(maxRate, 1e9)))
	if configured.limited() {
		burst = min(burst, configured.burst)
	}
	r := newRule(maxRate, burst)
	return bucketCheck{kind: kindScope, interval: r.interval, tolerance: r.tolerance(), cost: 1}
}

func (l *Limiter) addQuotas(c *checks, r *modelRules) {
	if l.daily > 0 {
		c.addQuota(quotaCheck{period: periodDay, limit: l.daily})
	}
	if l.monthly > 0 {
		c.addQuota(quotaCheck{period: periodMonth, limit: l.monthly})
	}
	if r.daily > 0 {
		c.addQuota(quotaCheck{period: periodDay, model: r.name, limit: r.daily})
	}
	if r.monthly > 0 {
		c.addQuota(quotaCheck{period: periodMonth, model: r.name, limit: r.monthly})
	}
}

// Charge counts elements batch elements (pipeline.BatchOf) of principal
// p's request to model against its element rate, once the request is
// decoded. A batch larger than the element burst is always refused. Errors
// are as for Admit.
func (l *Limiter) Charge(ctx context.Context, p *pipeline.Principal, model string, elements int64) error {
	if l == nil || l.store == nil {
		return apierr.Wrap(apierr.Unavailable, errNoStore, msgStore)
	}
	r := l.rules(model)
	if elements <= 0 || !r.elements.limited() {
		return nil
	}
	if elements > r.elements.burst {
		return elementsOverBurst(elements, r.elements.burst)
	}
	c := checks{principal: principalID(p)}
	c.addBucket(elementsCheck(r, elements))
	v, err := l.store.take(ctx, c)
	if err != nil {
		return l.storeFailed(ctx, err)
	}
	if !v.ok {
		return refusal(&c, v)
	}
	return nil
}

// elementsCheck asks the element bucket of r for elements.
func elementsCheck(r *modelRules, elements int64) bucketCheck {
	return bucketCheck{kind: kindElements, group: r.elemGroup, interval: r.elements.interval, tolerance: r.elements.tolerance(), cost: elements}
}

// elementsOverBurst is the refusal of a batch that can never pass.
func elementsOverBurst(elements, burst int64) error {
	return apierr.New(apierr.ResourceExhausted, "batch of %d elements exceeds the limit of %d per request", elements, burst)
}

// refusal is the error for a refused decision.
func refusal(c *checks, v verdict) error {
	msg := msgRate
	if v.failed < c.nb {
		if c.buckets[v.failed].kind == kindElements {
			msg = msgElements
		}
	} else {
		q := c.quotas[v.failed-c.nb]
		switch {
		case q.period == periodDay && q.model == "":
			msg = msgDaily
		case q.period == periodDay:
			msg = msgModelDaily
		case q.model == "":
			msg = msgMonthly
		default:
			msg = msgModelMonth
		}
	}
	return &apierr.Error{Kind: apierr.ResourceExhausted, Msg: msg, RetryAfter: time.Duration(max(v.wait, 1))}
}

// storeRetry is what clients are told to wait when the store failed.
const storeRetry = time.Second

// storeFailed applies on_store_error to a store failure: nil (admit) when
// it is allow, else Unavailable. A request whose context ended is refused
// either way.
func (l *Limiter) storeFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx.Err())
	}
	l.logStoreFailure(err)
	if l.failOpen {
		return nil
	}
	return &apierr.Error{Kind: apierr.Unavailable, Msg: msgStore, Cause: err, RetryAfter: storeRetry}
}

// storeLogEvery bounds how often store failures are logged.
const storeLogEvery = 10 * time.Second

func (l *Limiter) logStoreFailure(err error) {
	now := time.Now().UnixNano()
	last := l.lastStoreLog.Load()
	if now-last < int64(storeLogEvery) || !l.lastStoreLog.CompareAndSwap(last, now) {
		l.unlogged.Add(1)
		return
	}
	action := "refusing requests"
	if l.failOpen {
		action = "admitting requests (on_store_error: allow)"
	}
	l.log.Error("ratelimit: store failed; "+action, "err", err, "failures_not_logged", l.unlogged.Swap(0))
}

// Stage returns the pipeline stage that applies the Limiter to every
// request: Admit for the principal in the context and the request's
// model and Charge for its batch (pipeline.BatchOf), decided together (a
// request refused for its elements does not spend a request token or
// quota), holding the concurrency slot until the rest of the chain
// returns. It runs after the body is decoded; a transport that calls
// Admit before reading the body uses ChargeStage instead.
func (l *Limiter) Stage() pipeline.Stage {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
			slot, err := l.admit(ctx, pipeline.PrincipalFrom(ctx), req.Model, pipeline.BatchOf(req))
			if err != nil {
				return nil, err
			}
			if slot != "" {
				defer l.conc.release(slot)
			}
			return next.Infer(ctx, req)
		})
	}
}

// ChargeStage returns a pipeline stage that only charges each request's
// batch (pipeline.BatchOf) to the principal in the context: for a server
// whose transports call Admit themselves, before reading the body. Use it
// or Stage, not both.
func (l *Limiter) ChargeStage() pipeline.Stage {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
			if err := l.Charge(ctx, pipeline.PrincipalFrom(ctx), req.Model, pipeline.BatchOf(req)); err != nil {
				return nil, err
			}
			return next.Infer(ctx, req)
		})
	}
}
