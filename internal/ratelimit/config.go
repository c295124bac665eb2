package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// Backends.
const (
	BackendMemory = "memory" // state in this process; quotas persisted in bbolt
	BackendRedis  = "redis"  // state in Redis, shared by every replica
)

// What to do when the state store fails (Config.OnStoreError).
const (
	StoreErrorDeny  = "deny"  // refuse with 503 (fail closed)
	StoreErrorAllow = "allow" // admit, logging the failure (fail open)
)

// Config configures a Limiter and a Shedder. Start from Default; a zero
// rate or quota means no limit of that kind.
type Config struct {
	// Requests is each principal's request rate over all models that have
	// no requests override.
	Requests Rate `yaml:"requests"`
	// Elements is each principal's rate of batch elements (the first
	// dimension of a request's inputs) over all models that have no
	// elements override. A request whose batch exceeds the burst is always
	// refused.
	Elements Rate `yaml:"elements"`
	// Models overrides limits per model name: a model with a requests or
	// elements override gets its own bucket per principal at that rate,
	// instead of sharing the default one. Its quotas count in addition to
	// the principal's quotas over all models.
	Models map[string]ModelLimits `yaml:"models"`

	// MaxConcurrent is how many requests one principal may have in flight
	// on this replica; 0 means no limit. It is kept per replica, also with
	// the Redis backend (docs/ratelimit.md says why).
	MaxConcurrent int `yaml:"max_concurrent"`
	// DailyRequests and MonthlyRequests are each principal's request
	// budgets over all models per UTC day and per UTC calendar month; 0
	// means no quota.
	DailyRequests   int64 `yaml:"daily_requests"`
	MonthlyRequests int64 `yaml:"monthly_requests"`

	// Backend is "memory" (the default) or "redis".
	Backend string `yaml:"backend"`
	// Redis is the Redis store, for Backend "redis".
	Redis Redis `yaml:"redis"`
	// OnStoreError is "deny" (the default: refuse with 503) or "allow"
	// (admit and log) when the store cannot be reached or is full.
	OnStoreError string `yaml:"on_store_error"`
	// QuotaFlushInterval is how often the memory backend writes quota
	// counters to bbolt (one transaction, one fsync); a crash loses at most
	// the requests counted in the last interval.
	QuotaFlushInterval time.Duration `yaml:"quota_flush_interval"`
	// MaxKeys bounds the memory backend's state (buckets and quota
	// counters); past it, keys that hold no debt are forgotten, and if that
	// is not enough, new keys are refused as a store failure.
	MaxKeys int `yaml:"max_keys"`

	// Shed is the global admission gate.
	Shed Shed `yaml:"shed"`
}

// Rate is a token bucket: PerSecond units a second, up to Burst at once.
type Rate struct {
	PerSecond float64 `yaml:"per_second"` // 0: no limit
	Burst     int64   `yaml:"burst"`      // ≥ 1 when PerSecond > 0
}

// ModelLimits overrides the limits of one model. A nil rate keeps the
// default (shared) bucket; a rate with PerSecond 0 lifts the limit for the
// model.
type ModelLimits struct {
	Requests *Rate `yaml:"requests"`
	Elements *Rate `yaml:"elements"`
	// DailyRequests and MonthlyRequests are budgets per principal for
	// this model alone; 0 means none.
	DailyRequests   int64 `yaml:"daily_requests"`
	MonthlyRequests int64 `yaml:"monthly_requests"`
}

// Redis configures the Redis backend.
type Redis struct {
	// Addr is host:port.
	Addr string `yaml:"addr"`
	// PasswordEnv names an environment variable holding the password
	// (AUTH); empty for none. The variable must be set when named.
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	// PoolSize is how many connections carry decisions, each one script
	// call at a time: decisions that arrive while all are busy go
	// together in the next call. Few connections make big batches, which
	// is what Redis does best (docs/ratelimit.md has figures).
	PoolSize     int           `yaml:"pool_size"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// KeyPrefix starts every key; it may not contain braces (keys carry a
	// {principal} hash tag).
	KeyPrefix string `yaml:"key_prefix"`
	// RetryInterval is how long, after Redis fails, decisions skip it
	// (and follow on_store_error at once) before trying it again.
	RetryInterval time.Duration `yaml:"retry_interval"`
}

// Shed configures the global admission gate.
type Shed struct {
	// Disabled turns shedding off.
	Disabled bool `yaml:"disabled"`
	// MaxInFlight is how many requests may run at once on this replica.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxQueue is how many more may wait for a slot; 0 refuses at once.
	MaxQueue int `yaml:"max_queue"`
	// QueueTimeout is the longest a request waits; past it, 503.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	// RetryAfter is what a shed request is told to wait.
	RetryAfter time.Duration `yaml:"retry_after"`
	// TargetDelay is how long a request may have waited, from its
	// arrival at the host (the kernel's receive timestamp, where the
	// transport knows it) to the gate, once the server is overloaded;
	// later ones are refused. It sees the queue in front of the gate
	// (socket buffers, the run queue, TLS and parsing on busy CPUs). 0
	// turns this off.
	TargetDelay time.Duration `yaml:"target_delay"`
	// Interval is how long arrivals must keep waiting longer than
	// TargetDelay before the gate counts as overloaded (a burst shorter
	// than it is served), and how long it stays so after the last late
	// request it refused.
	Interval time.Duration `yaml:"interval"`
}

// Default returns the default configuration (see the package comment).
func Default() Config {
	procs := runtime.GOMAXPROCS(0)
	return Config{
		Requests:           Rate{PerSecond: 200, Burst: 400},
		Elements:           Rate{PerSecond: 20000, Burst: 20000},
		MaxConcurrent:      32,
		Backend:            BackendMemory,
		OnStoreError:       StoreErrorDeny,
		QuotaFlushInterval: time.Second,
		MaxKeys:            1 << 20,
		Redis: Redis{
			Addr:          "127.0.0.1:6379",
			PoolSize:      2,
			DialTimeout:   250 * time.Millisecond,
			ReadTimeout:   100 * time.Millisecond,
			WriteTimeout:  100 * time.Millisecond,
			KeyPrefix:     "aegis:rl:",
			RetryInterval: 250 * time.Millisecond,
		},
		Shed: Shed{
			MaxInFlight:  procs,
			MaxQueue:     2 * procs,
			QueueTimeout: 10 * time.Millisecond,
			RetryAfter:   time.Second,
			TargetDelay:  2 * time.Millisecond,
			Interval:     50 * time.Millisecond,
		},
	}
}

// modelName is what repository accepts as a model directory name.
var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Validate checks every field and names the first bad one, prefixed by
// prefix (the field's path in the server configuration, e.g.
// "rate_limit").
func (c *Config) Validate(prefix string) error {
	if prefix != "" {
		prefix += "."
	}
	if err := c.Requests.validate(prefix + "requests"); err != nil {
		return err
	}
	if err := c.Elements.validate(prefix + "elements"); err != nil {
		return err
	}
	for name, m := range c.Models {
		p := fmt.Sprintf("%smodels[%s]", prefix, name)
		if !modelName.MatchString(name) {
			return fmt.Errorf("%s: %q is not a model name", p, name)
		}
		if m.Requests != nil {
			if err := m.Requests.validate(p + ".requests"); err != nil {
				return err
			}
		}
		if m.Elements != nil {
			if err := m.Elements.validate(p + ".elements"); err != nil {
				return err
			}
		}
		if m.DailyRequests < 0 {
			return fmt.Errorf("%s.daily_requests: %d is negative", p, m.DailyRequests)
		}
		if m.MonthlyRequests < 0 {
			return fmt.Errorf("%s.monthly_requests: %d is negative", p, m.MonthlyRequests)
		}
	}
	switch {
	case c.MaxConcurrent < 0:
		return fmt.Errorf("%smax_concurrent: %d is negative", prefix, c.MaxConcurrent)
	case c.DailyRequests < 0:
		return fmt.Errorf("%sdaily_requests: %d is negative", prefix, c.DailyRequests)
	case c.MonthlyRequests < 0:
		return fmt.Errorf("%smonthly_requests: %d is negative", prefix, c.MonthlyRequests)
	}
	switch c.OnStoreError {
	case StoreErrorDeny, StoreErrorAllow:
	default:
		return fmt.Errorf("%son_store_error: %q is not deny or allow", prefix, c.OnStoreError)
	}
	switch c.Backend {
	case BackendMemory:
		if c.QuotaFlushInterval < 10*time.Millisecond || c.QuotaFlushInterval > time.Minute {
			return fmt.Errorf("%squota_flush_interval: %s is not within 10ms..1m", prefix, c.QuotaFlushInterval)
		}
		if c.MaxKeys < 1024 {
			return fmt.Errorf("%smax_keys: %d is below 1024", prefix, c.MaxKeys)
		}
	case BackendRedis:
		if err := c.Redis.validate(prefix + "redis"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%sbackend: %q is not memory or redis", prefix, c.Backend)
	}
	return c.Shed.validate(prefix + "shed")
}

// maxTolerance bounds burst/rate, so that burst × interval cannot
// overflow and idle state expires within a day.
const maxTolerance = 24 * time.Hour

func (r Rate) validate(p string) error {
	switch {
	case math.IsNaN(r.PerSecond) || r.PerSecond < 0 || r.PerSecond > 1e9:
		return fmt.Errorf("%s.per_second: %v is not within 0..1e9", p, r.PerSecond)
	case r.PerSecond == 0:
		return nil
	case r.Burst < 1:
		return fmt.Errorf("%s.burst: %d must be at least 1", p, r.Burst)
	case float64(r.Burst)/r.PerSecond > maxTolerance.Seconds():
		return fmt.Errorf("%s.burst: %d at %v/s takes more than %s to refill", p, r.Burst, r.PerSecond, maxTolerance)
	}
	return nil
}

func (r Redis) validate(p string) error {
	switch {
	case r.Addr == "":
		return fmt.Errorf("%s.addr: must be set", p)
	case r.DB < 0:
		return fmt.Errorf("%s.db: %d is negative", p, r.DB)
	case r.PoolSize < 1 || r.PoolSize > 1024:
		return fmt.Errorf("%s.pool_size: %d is not within 1..1024", p, r.PoolSize)
	case r.DialTimeout <= 0:
		return fmt.Errorf("%s.dial_timeout: %s must be positive", p, r.DialTimeout)
	case r.ReadTimeout <= 0:
		return fmt.Errorf("%s.read_timeout: %s must be positive", p, r.ReadTimeout)
	case r.WriteTimeout <= 0:
		return fmt.Errorf("%s.write_timeout: %s must be positive", p, r.WriteTimeout)
	case strings.ContainsAny(r.KeyPrefix, "{}"):
		return fmt.Errorf("%s.key_prefix: %q contains a brace", p, r.KeyPrefix)
	case r.RetryInterval <= 0:
		return fmt.Errorf("%s.retry_interval: %s must be positive", p, r.RetryInterval)
	}
	return nil
}

func (s Shed) validate(p string) error {
	if s.Disabled {
		return nil
	}
	switch {
	case s.MaxInFlight < 1:
		return fmt.Errorf("%s.max_in_flight: %d must be at least 1 (or set disabled)", p, s.MaxInFlight)
	case s.MaxQueue < 0:
		return fmt.Errorf("%s.max_queue: %d is negative", p, s.MaxQueue)
	case s.MaxQueue > 0 && s.QueueTimeout <= 0:
		return fmt.Errorf("%s.queue_timeout: %s must be positive when max_queue is set", p, s.QueueTimeout)
	case s.RetryAfter < 0:
		return fmt.Errorf("%s.retry_after: %s is negative", p, s.RetryAfter)
	case s.TargetDelay < 0:
		return fmt.Errorf("%s.target_delay: %s is negative", p, s.TargetDelay)
	case s.TargetDelay > 0 && s.Interval <= 0:
		return fmt.Errorf("%s.interval: %s must be positive when target_delay is set", p, s.Interval)
	}
	return nil
}

var errNoStore = errors.New("rate limiter not configured")
