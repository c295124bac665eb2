package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit/redistest"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// testEpoch is where fake clocks start: in the future, so that quota keys'
// EXPIREAT in Redis (computed from the fake clock) is not in the past, and
// half a day before the end of a 31-day month.
var testEpoch = time.Date(2040, time.January, 31, 12, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock { return &fakeClock{t: testEpoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// env makes Limiters on one backend that share its state (one Redis, or
// one bbolt file) and one fake clock.
type env struct {
	t       testing.TB
	backend string
	clock   *fakeClock
	redis   *redistest.Server
	prefix  string // Redis key prefix, unique per env
	dbPath  string
	db      *bolt.DB
}

var envSeq atomic.Int64

// forEachBackend runs body once per backend: memory (quotas in a bbolt
// file) and Redis (a real redis-server on loopback).
func forEachBackend(t *testing.T, body func(t *testing.T, e *env)) {
	t.Run("memory", func(t *testing.T) {
		body(t, newEnv(t, BackendMemory, nil))
	})
	t.Run("redis", func(t *testing.T) {
		body(t, newEnv(t, BackendRedis, redistest.StartT(t)))
	})
}

func newEnv(t *testing.T, backend string, srv *redistest.Server) *env {
	e := &env{
		t: t, backend: backend, clock: newFakeClock(), redis: srv,
		prefix: fmt.Sprintf("test%d:", envSeq.Add(1)),
		dbPath: filepath.Join(t.TempDir(), "state.db"),
	}
	e.openDB()
	t.Cleanup(func() {
		if e.db != nil {
			e.db.Close()
		}
	})
	return e
}

func (e *env) openDB() {
	db, err := bolt.Open(e.dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
}

// reopenDB closes and opens the bbolt file, as a restart does.
func (e *env) reopenDB() {
	e.db.Close()
	e.openDB()
}

// config returns cfg pointed at the env's backend.
func (e *env) config(cfg Config) Config {
	cfg.Backend = e.backend
	if e.redis != nil {
		cfg.Redis.Addr = e.redis.Addr
		cfg.Redis.KeyPrefix = e.prefix
		cfg.Redis.ReadTimeout = time.Second // -race on a shared machine
		cfg.Redis.WriteTimeout = time.Second
	}
	return cfg
}

// limiter returns a Limiter for cfg on the env's backend and clock,
// closed when the test ends.
func (e *env) limiter(cfg Config) *Limiter {
	e.t.Helper()
	opts := Options{DB: e.db}
	if e.clock != nil {
		opts.Now = e.clock.Now
	}
	l, err := New(e.config(cfg), opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	return l
}

// baseConfig is Default with every limit off, for tests to turn on the one
// they look at.
func baseConfig() Config {
	c := Default()
	c.Requests = Rate{}
	c.Elements = Rate{}
	c.MaxConcurrent = 0
	return c
}

func principal(id string) *pipeline.Principal { return &pipeline.Principal{ID: id} }

// admit calls Admit and releases at once.
func admit(l *Limiter, p *pipeline.Principal, model string) error {
	release, err := l.Admit(context.Background(), p, model)
	release()
	return err
}

// wantRefused checks that err is an *apierr.Error of kind, with msg and
// RetryAfter retry (any positive value when retry < 0).
func wantRefused(t *testing.T, err error, kind apierr.Kind, msg string, retry time.Duration) {
	t.Helper()
	var e *apierr.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v, want an *apierr.Error (%s)", err, kind)
	}
	if e.Kind != kind || e.Msg != msg {
		t.Errorf("got %s %q, want %s %q", e.Kind, e.Msg, kind, msg)
	}
	switch {
	case retry < 0 && e.RetryAfter <= 0:
		t.Errorf("got RetryAfter %s, want positive", e.RetryAfter)
	case retry >= 0 && e.RetryAfter != retry:
		t.Errorf("got RetryAfter %s, want %s", e.RetryAfter, retry)
	}
}
