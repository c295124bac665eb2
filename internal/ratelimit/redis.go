package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The Redis store keeps every key of a principal under the hash tag
// {principal}, so that a Redis Cluster would put them in one slot and the
// script, which touches several of them, could run there:
//
//	<prefix>{<principal>}:rq           request bucket (models without an override)
//	<prefix>{<principal>}:rq:<model>   request bucket of a model with an override
//	<prefix>{<principal>}:el[:<model>] batch-element bucket
//	<prefix>{<principal>}:sc           the credential's max_rate bucket
//	<prefix>{<principal>}:qd:<yyyymmdd>[:<model>]  daily counter
//	<prefix>{<principal>}:qm:<yyyymm>[:<model>]    monthly counter
//
// Only configured model names appear in keys, and they cannot contain a
// brace, so the last '}' of a key ends its principal and distinct checks
// never share a key.

//go:embed gcra.lua
var gcraLua string

var gcraScript = redis.NewScript(gcraLua)

// quotaKeySlack keeps a counter past its period's end, so that a replica
// whose clock is a little behind still finds it.
const quotaKeySlack = int64(24 * time.Hour)

type redisStore struct {
	client    *redis.Client
	prefix    string
	now       func() int64  // the clock (ns); nil: Redis's clock
	retry     time.Duration // how long to skip Redis after it failed
	downUntil atomic.Int64  // unix ns; decisions before it fail at once
}

var errRedisDown = errors.New("redis failed recently; not retried yet")

// newRedisStore returns the store cfg describes. now is the clock (ns
// since the epoch), or nil to use Redis's (TIME), which every replica
// shares.
func newRedisStore(cfg Redis, now func() int64, log *slog.Logger) (*redisStore, error) {
	var password string
	if cfg.PasswordEnv != "" {
		var ok bool
		if password, ok = os.LookupEnv(cfg.PasswordEnv); !ok || password == "" {
			return nil, fmt.Errorf("redis.password_env: %s is not set", cfg.PasswordEnv)
		}
	}
	client := redis.NewClient(&redis.Options{
		Addr:                  cfg.Addr,
		Password:              password,
		DB:                    cfg.DB,
		Protocol:              2, // no HELLO round trip; RESP2 carries everything the script returns
		PoolSize:              cfg.PoolSize,
		DialTimeout:           cfg.DialTimeout,
		DialerRetries:         1, // one attempt: the breaker retries after retry_interval
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		PoolTimeout:           cfg.DialTimeout + cfg.ReadTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // a retried script could count a request twice; the breaker retries
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	s := &redisStore{client: client, prefix: cfg.KeyPrefix, now: now, retry: cfg.RetryInterval}
	// Load the script now, so that the first decisions need not fall back
	// to EVAL. Redis may come up after this replica: that is not fatal.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout+cfg.ReadTimeout)
	defer cancel()
	if err := gcraScript.Load(ctx, client).Err(); err != nil {
		log.Warn("ratelimit: redis not reachable yet", "addr", cfg.Addr, "err", err)
	}
	return s, nil
}

var _ store = (*redisStore)(nil)

func (s *redisStore) close() error { return s.client.Close() }

func (s *redisStore) take(ctx context.Context, c checks) (verdict, error) {
	if until := s.downUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		return verdict{}, errRedisDown
	}
	keys, args := s.request(&c)
	res, err := gcraScript.EvalSha(ctx, s.client, keys, args...).Int64Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or its script cache was flushed: EVAL loads
		// the script again.
		res, err = gcraScript.Eval(ctx, s.client, keys, args...).Int64Slice()
	}
	if err != nil {
		var reply redis.Error
		if !errors.As(err, &reply) && ctx.Err() == nil {
			// Redis is unreachable or slow, not the caller's fault:
			// skip it for a while.
			s.downUntil.Store(time.Now().Add(s.retry).UnixNano())
		}
		return verdict{}, fmt.Errorf("redis: %w", err)
	}
	if len(res) != 3 || res[1] < 0 || int(res[1]) > c.nb+c.nq {
		return verdict{}, fmt.Errorf("redis: unexpected script reply %v", res)
	}
	s.downUntil.Store(0)
	if res[0] == 1 {
		return verdict{ok: true}, nil
	}
	return verdict{failed: int(res[1]) - 1, wait: res[2] * 1000}, nil
}

// request returns the script's keys and arguments for c.
func (s *redisStore) request(c *checks) ([]string, []any) {
	keys := make([]string, 0, c.nb+c.nq)
	args := make([]any, 0, 2+3*(c.nb+c.nq))
	var nowArg int64 // 0: the script reads Redis's clock
	now := time.Now().UnixNano()
	if s.now != nil {
		now = s.now()
		nowArg = now / 1000
	}
	args = append(args, nowArg, c.nb)
	base := s.prefix + "{" + c.principal + "}:"
	for i := 0; i < c.nb; i++ {
		b := &c.buckets[i]
		var k string
		switch b.kind {
		case kindRequests:
			k = base + "rq"
		case kindElements:
			k = base + "el"
		default:
			k = base + "sc"
		}
		if b.group != "" {
			k += ":" + b.group
		}
		keys = append(keys, k)
		args = append(args, micros(b.interval), micros(b.tolerance), b.cost)
	}
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		k := base + "qm:"
		if q.period == periodDay {
			k = base + "qd:"
		}
		// The period is this replica's; the key outlives the period's end
		// by quotaKeySlack for replicas whose clocks are behind.
		index, end := periodIndex(q.period, now)
		k += periodLabel(q.period, index)
		if q.model != "" {
			k += ":" + q.model
		}
		keys = append(keys, k)
		args = append(args, q.limit, (end+quotaKeySlack)/int64(time.Second), end/1000)
	}
	return keys, args
}

// micros formats ns as µs, exactly.
func micros(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1000, 'f', -1, 64)
}
