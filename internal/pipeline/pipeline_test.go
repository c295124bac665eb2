package pipeline

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestRequestIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				id := NewRequestID()
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if id := NewRequestID(); !strings.HasPrefix(id, idPrefix) || len(idPrefix) != 13 {
		t.Errorf("id %q, prefix %q", id, idPrefix)
	}
}

func TestChainOrderAndCount(t *testing.T) {
	var order []string
	stage := func(name string) Stage {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, r *Request) (*Response, error) {
				order = append(order, name)
				return next.Infer(ctx, r)
			})
		}
	}
	var n atomic.Int64
	var inside int64
	h := Chain(HandlerFunc(func(context.Context, *Request) (*Response, error) {
		inside = n.Load()
		order = append(order, "handler")
		return &Response{}, nil
	}), stage("first"), Count(&n), stage("second"))
	if _, err := h.Infer(context.Background(), &Request{}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "first,second,handler" {
		t.Errorf("order %v", order)
	}
	if inside != 1 || n.Load() != 0 {
		t.Errorf("in flight inside %d, after %d; want 1 and 0", inside, n.Load())
	}
}
