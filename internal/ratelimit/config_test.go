package ratelimit

import (
	"math"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate("rate_limit"); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"negative rate", func(c *Config) { c.Requests.PerSecond = -1 }, "rate_limit.requests.per_second: -1"},
		{"NaN rate", func(c *Config) { c.Elements.PerSecond = math.NaN() }, "rate_limit.elements.per_second: NaN"},
		{"zero burst", func(c *Config) { c.Requests.Burst = 0 }, "rate_limit.requests.burst: 0"},
		{"burst too slow to refill", func(c *Config) { c.Requests = Rate{PerSecond: 0.001, Burst: 1000} }, "rate_limit.requests.burst: 1000"},
		{"bad model name", func(c *Config) { c.Models = map[string]ModelLimits{"a}b": {}} }, `rate_limit.models[a}b]: "a}b" is not a model name`},
		{"model rate", func(c *Config) {
			c.Models = map[string]ModelLimits{"big": {Elements: &Rate{PerSecond: 1}}}
		}, "rate_limit.models[big].elements.burst: 0"},
		{"model quota", func(c *Config) { c.Models = map[string]ModelLimits{"big": {DailyRequests: -1}} }, "rate_limit.models[big].daily_requests: -1"},
		{"concurrency", func(c *Config) { c.MaxConcurrent = -1 }, "rate_limit.max_concurrent: -1"},
		{"daily", func(c *Config) { c.DailyRequests = -5 }, "rate_limit.daily_requests: -5"},
		{"monthly", func(c *Config) { c.MonthlyRequests = -5 }, "rate_limit.monthly_requests: -5"},
		{"on_store_error", func(c *Config) { c.OnStoreError = "ignore" }, `rate_limit.on_store_error: "ignore"`},
		{"empty on_store_error", func(c *Config) { c.OnStoreError = "" }, `rate_limit.on_store_error: ""`},
		{"backend", func(c *Config) { c.Backend = "etcd" }, `rate_limit.backend: "etcd"`},
		{"flush interval", func(c *Config) { c.QuotaFlushInterval = 0 }, "rate_limit.quota_flush_interval: 0s"},
		{"max keys", func(c *Config) { c.MaxKeys = 10 }, "rate_limit.max_keys: 10"},
		{"redis addr", func(c *Config) { c.Backend = BackendRedis; c.Redis.Addr = "" }, "rate_limit.redis.addr"},
		{"redis prefix", func(c *Config) { c.Backend = BackendRedis; c.Redis.KeyPrefix = "a{" }, `rate_limit.redis.key_prefix: "a{"`},
		{"redis timeout", func(c *Config) { c.Backend = BackendRedis; c.Redis.ReadTimeout = 0 }, "rate_limit.redis.read_timeout: 0s"},
		{"redis retry", func(c *Config) { c.Backend = BackendRedis; c.Redis.RetryInterval = -1 }, "rate_limit.redis.retry_interval: -1ns"},
		{"shed in flight", func(c *Config) { c.Shed.MaxInFlight = 0 }, "rate_limit.shed.max_in_flight: 0"},
		{"shed queue", func(c *Config) { c.Shed.MaxQueue = -1 }, "rate_limit.shed.max_queue: -1"},
		{"shed timeout", func(c *Config) { c.Shed.QueueTimeout = 0 }, "rate_limit.shed.queue_timeout: 0s"},
		{"shed target", func(c *Config) { c.Shed.TargetDelay = -time.Millisecond }, "rate_limit.shed.target_delay: -1ms"},
		{"shed interval", func(c *Config) { c.Shed.Interval = 0 }, "rate_limit.shed.interval: 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.modify(&c)
			err := c.Validate("rate_limit")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
requests: {per_second: 50, burst: 100}
elements: {per_second: 5000, burst: 1024}
models:
  big:
    requests: {per_second: 1, burst: 2}
    daily_requests: 100
max_concurrent: 8
daily_requests: 10000
monthly_requests: 200000
backend: redis
redis:
  addr: 10.0.0.5:6379
  password_env: AEGIS_REDIS_PASSWORD
  pool_size: 64
  key_prefix: "prod:rl:"
on_store_error: allow
shed: {max_in_flight: 16, max_queue: 16, queue_timeout: 20ms}
`
	c := Default()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate("rate_limit"); err != nil {
		t.Fatal(err)
	}
	if c.Models["big"].Requests.Burst != 2 || c.Models["big"].Elements != nil || c.Redis.ReadTimeout != 100*time.Millisecond ||
		c.Shed.QueueTimeout != 20*time.Millisecond || c.Shed.RetryAfter != time.Second || c.OnStoreError != StoreErrorAllow {
		t.Errorf("decoded %+v", c)
	}
}
