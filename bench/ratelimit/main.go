// Command ratelimit measures internal/ratelimit:
//
//   - Redis decisions against redis-benchmark: it starts its own
//     redis-server on loopback, runs `redis-benchmark -c C -n N --csv EVAL
//     "return 1" 0` (a one-line script, the floor of any EVAL), then has C
//     goroutines make Limiter.Admit decisions on the Redis backend
//     (redis.pool_size connections, 2 unless -pool says otherwise) for as
//     long as redis-benchmark ran, and reports decisions/s, p50 and p99,
//     and the ratio to redis-benchmark's rate, for a full decision (request
//     bucket, daily and monthly counters) and a plain one (the request
//     bucket). They alternate for several rounds, since the machine is
//     shared.
//   - The same decisions on the memory backend.
//   - Overload: a simulated server (GOMAXPROCS session slots, a fixed
//     service time) behind the Shedder and a Limiter, fed open-loop at
//     half its capacity and at three times it, and at three times it
//     without the Shedder: status counts, p99 of admitted requests and of
//     refusals, heap in use and goroutines over the run.
//
// Usage: go run ./bench/ratelimit [-c 20] [-n 200000] [-rounds 3]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

type options struct {
	redis      bool
	memory     bool
	conns      int
	pool       int
	requests   int
	rounds     int
	principals int
	overload   bool
	service    time.Duration
	loadFor    time.Duration
}

func main() {
	var o options
	flag.BoolVar(&o.redis, "redis", true, "measure Redis decisions against redis-benchmark")
	flag.BoolVar(&o.memory, "memory", true, "measure memory decisions")
	flag.IntVar(&o.conns, "c", 20, "connections (redis-benchmark -c) and goroutines making decisions")
	flag.IntVar(&o.pool, "pool", 0, "the Limiter's Redis connections (redis.pool_size); 0: the default")
	flag.IntVar(&o.requests, "n", 200000, "redis-benchmark requests per round (-n)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of redis-benchmark then Limiter")
	flag.IntVar(&o.principals, "principals", 1000, "distinct principals the decisions are spread over")
	flag.BoolVar(&o.overload, "overload", true, "run the overload simulation")
	flag.DurationVar(&o.service, "service", 2*time.Millisecond, "overload: service time of one request in a session slot")
	flag.DurationVar(&o.loadFor, "load-for", 5*time.Second, "overload: length of each load run")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/ratelimit:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	fmt.Printf("# bench/ratelimit  %s  GOMAXPROCS %d  load average %s\n\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), benchutil.LoadAverage())
	if o.redis {
		if err := redisDecisions(o); err != nil {
			return err
		}
	}
	if o.memory {
		if err := memoryDecisions(o); err != nil {
			return err
		}
	}
	if o.overload {
		return overload(o)
	}
	return nil
}
