package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The Redis store keeps every key of a principal under the hash tag
// {principal}, so that a Redis Cluster would put them in one slot and a
// decision, which touches several of them, could run there (batches mix
// principals: on a Cluster they would have to be grouped by slot):
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
	batches   *batcher
	periods   periodLabels
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
		Protocol:              2,                // no HELLO round trip; RESP2 carries everything the script returns
		PoolSize:              cfg.PoolSize + 1, // one more for loading the script
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
	s := &redisStore{client: client, prefix: cfg.KeyPrefix, now: now, retry: cfg.RetryInterval,
		batches: newBatcher(client, cfg.PoolSize, cfg.DialTimeout+cfg.ReadTimeout+cfg.WriteTimeout)}
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

func (s *redisStore) close() error {
	s.batches.close()
	return s.client.Close()
}

func (s *redisStore) take(ctx context.Context, c checks) (verdict, error) {
	if until := s.downUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		return verdict{}, errRedisDown
	}
	keys, args := s.request(&c)
	res, err := s.batches.do(ctx, keys, args)
	if err != nil {
		if !isReplyError(err) && ctx.Err() == nil {
			// Redis is unreachable or slow, not the caller's fault:
			// skip it for a while.
			s.downUntil.Store(time.Now().Add(s.retry).UnixNano())
		}
		return verdict{}, fmt.Errorf("redis: %w", err)
	}
	s.downUntil.Store(0)
	if res == 0 {
		return verdict{ok: true}, nil
	}
	failed := int(res % 8)
	if res < 0 || failed < 1 || failed > c.nb+c.nq {
		return verdict{}, fmt.Errorf("redis: unexpected script reply %d", res)
	}
	return verdict{failed: failed - 1, wait: res / 8 * 1000}, nil
}

// request returns the keys and arguments of decision c in the script's
// call. The keys share one allocation.
func (s *redisStore) request(c *checks) ([]string, []any) {
	var nowArg int64 // 0: the script reads Redis's clock
	now := time.Now().UnixNano()
	if s.now != nil {
		now = s.now()
		nowArg = now / 1000
	}
	var labels [maxQuotas]string
	var ends [maxQuotas]int64
	size := 0
	for i := 0; i < c.nb; i++ {
		size += len(s.prefix) + len(c.principal) + 8 + len(c.buckets[i].group)
	}
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		// The period is this replica's; the key outlives the period's end
		// by quotaKeySlack for replicas whose clocks are behind.
		labels[j], ends[j] = s.periods.label(q.period, now)
		size += len(s.prefix) + len(c.principal) + 8 + len(labels[j]) + len(q.model)
	}
	buf := make([]byte, 0, size)
	var offs [maxBuckets + maxQuotas + 1]int
	n := 0
	key := func(suffix, label, model string) {
		buf = append(buf, s.prefix...)
		buf = append(buf, '{')
		buf = append(buf, c.principal...)
		buf = append(buf, "}:"...)
		buf = append(buf, suffix...)
		if label != "" {
			buf = append(buf, ':')
			buf = append(buf, label...)
		}
		if model != "" {
			buf = append(buf, ':')
			buf = append(buf, model...)
		}
		n++
		offs[n] = len(buf)
	}
	args := make([]any, 0, 3+3*(c.nb+c.nq))
	args = append(args, nowArg, c.nb, c.nq)
	for i := 0; i < c.nb; i++ {
		b := &c.buckets[i]
		switch b.kind {
		case kindRequests:
			key("rq", "", b.group)
		case kindElements:
			key("el", "", b.group)
		default:
			key("sc", "", b.group)
		}
		args = append(args, b.interval, b.tolerance, b.cost)
	}
	for j := 0; j < c.nq; j++ {
		q := &c.quotas[j]
		suffix := "qm"
		if q.period == periodDay {
			suffix = "qd"
		}
		key(suffix, labels[j], q.model)
		args = append(args, q.limit, (ends[j]+quotaKeySlack)/int64(time.Second), ends[j]/1000)
	}
	all := string(buf)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = all[offs[i]:offs[i+1]]
	}
	return keys, args
}

// periodLabels caches the labels of the current day and month.
type periodLabels struct {
	day, month atomic.Pointer[periodLabel]
}

type periodLabel struct {
	start, end int64 // ns
	label      string
}

func (p *periodLabels) label(period uint8, now int64) (string, int64) {
	cache := &p.month
	if period == periodDay {
		cache = &p.day
	}
	if l := cache.Load(); l != nil && now >= l.start && now < l.end {
		return l.label, l.end
	}
	index, end := periodIndex(period, now)
	start := end - nsPerDay
	if period == periodMonth {
		t := time.Unix(0, now).UTC()
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).UnixNano()
	}
	l := &periodLabel{start: start, end: end, label: periodLabelOf(period, index)}
	cache.Store(l)
	return l.label, l.end
}
