package ratelimit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Decisions reach Redis through a few pipelining workers rather than one
// round trip per decision: each worker takes the decisions waiting when
// it is free and sends them as one pipeline (one write, one read, on both
// sides). Under light load a batch is one decision and nothing waits for
// a batch to fill; under heavy load batches grow, which is what lets a Go
// client approach redis-benchmark's rate on a busy machine.
//
// Each script call is still atomic on its own; batching only shares the
// round trip. A batch that fails (connection lost) fails every decision in
// it.

// maxBatch bounds one pipeline.
const maxBatch = 128

// call is one decision on its way to a worker.
type call struct {
	keys []string
	args []any
	cmd  *redis.Cmd
	res  int64
	err  error
	done chan struct{} // receives when res and err are set
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// batcher runs the workers.
type batcher struct {
	client  *redis.Client
	timeout time.Duration // of one pipeline
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
			c.cmd = nil
			c.done <- struct{}{}
			batch[i] = nil
		}
	}
}

// exec runs batch as one pipeline. Calls that fail with NOSCRIPT (Redis
// restarted, or its script cache was flushed) run again with EVAL, which
// loads the script.
func (b *batcher) exec(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	b.pipeline(ctx, batch, false)
	var retry []*call
	for _, c := range batch {
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			retry = append(retry, c)
		}
	}
	if len(retry) > 0 {
		b.pipeline(ctx, retry, true)
	}
}

func (b *batcher) pipeline(ctx context.Context, batch []*call, eval bool) {
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range batch {
			if eval {
				c.cmd = gcraScript.Eval(ctx, p, c.keys, c.args...)
			} else {
				c.cmd = gcraScript.EvalSha(ctx, p, c.keys, c.args...)
			}
		}
		return nil
	})
	for _, c := range batch {
		c.res, c.err = c.cmd.Int64()
		if c.err == nil && err != nil && !isReplyError(err) {
			c.err = err
		}
	}
}

// isReplyError reports whether err is an error Redis replied with, rather
// than a failure to reach it.
func isReplyError(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}
