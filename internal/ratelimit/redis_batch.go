package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Decisions reach Redis through a few workers (one per connection, see
// redis.pool_size) rather than one round trip per decision: each worker
// takes the decisions waiting when it is free and sends them as one script
// call. Under light load a batch is one decision and nothing waits for a
// batch to fill; under heavy load batches grow, sharing the round trip and
// the script call's own cost (argument setup, the clock, one MGET), which
// is what lets a Go client keep up with redis-benchmark on a busy machine.
//
// Each decision is still all or nothing, and sees what the decisions
// before it in the call recorded (the whole call is atomic). A batch that
// fails (connection lost) fails every decision in it. Keys of different
// principals meet in one call, so a Redis Cluster would need batches
// grouped by hash slot; this store talks to one Redis.

// maxBatch bounds the decisions in one call.
const maxBatch = 64

// call is one decision on its way to a worker.
type call struct {
	keys []string
	args []any
	res  int64
	err  error
	done chan struct{} // receives when res and err are set
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// batcher runs the workers.
type batcher struct {
	client  *redis.Client
	timeout time.Duration // of one script call
	calls   chan *call
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newBatcher(client *redis.Client, workers int, timeout time.Duration) *batcher {
	b := &batcher{client: client, timeout: timeout, calls: make(chan *call, maxBatch*workers), stop: make(chan struct{})}
	for range workers {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

// do runs the script with keys and args and returns its reply.
func (b *batcher) do(ctx context.Context, keys []string, args []any) (int64, error) {
	c := callPool.Get().(*call)
	c.keys, c.args = keys, args
	select {
	case b.calls <- c:
	case <-ctx.Done():
		c.keys, c.args = nil, nil
		callPool.Put(c)
		return 0, ctx.Err()
	case <-b.stop:
		return 0, redis.ErrClosed
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		// The worker still owns c: leave it to the garbage collector.
		return 0, ctx.Err()
	case <-b.stop:
		// Closed with c perhaps never taken: abandon it too.
		return 0, redis.ErrClosed
	}
	res, err := c.res, c.err
	*c = call{done: c.done}
	callPool.Put(c)
	return res, err
}

func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}

func (b *batcher) work() {
	defer b.wg.Done()
	batch := make([]*call, 0, maxBatch)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch[:0], c)
		case <-b.stop:
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.exec(batch)
		for i, c := range batch {
			c.done <- struct{}{}
			batch[i] = nil
		}
	}
}

// exec runs batch as one script call. If it fails with NOSCRIPT (Redis
// restarted, or its script cache was flushed) it runs again with EVAL,
// which loads the script.
func (b *batcher) exec(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	nk, na := 0, 1
	for _, c := range batch {
		nk += len(c.keys)
		na += len(c.args)
	}
	keys := make([]string, 0, nk)
	args := make([]any, 1, na)
	args[0] = len(batch)
	for _, c := range batch {
		keys = append(keys, c.keys...)
		args = append(args, c.args...)
	}
	res, err := gcraScript.EvalSha(ctx, b.client, keys, args...).Int64Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		res, err = gcraScript.Eval(ctx, b.client, keys, args...).Int64Slice()
	}
	if err == nil && len(res) != len(batch) {
		err = fmt.Errorf("script answered %d decisions of %d", len(res), len(batch))
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.res = res[i]
		}
	}
}

// isReplyError reports whether err is an error Redis replied with, rather
// than a failure to reach it.
func isReplyError(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}
