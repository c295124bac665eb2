// Package ratelimit decides whether a request may run: per-principal rate
// limits on requests and on batch elements, per-principal concurrency
// limits, daily and monthly request quotas, and a global load shedder that
// keeps overload from turning into unbounded queues and memory.
//
// Guarantees and defaults:
//
//   - Fail closed. The zero Limiter and the zero Shedder refuse everything.
//     When the state store (bbolt for quotas, Redis for everything) cannot
//     be reached, requests are refused as Unavailable (503) unless the
//     operator set on_store_error: allow; a refusal is never silently turned
//     into an admission.
//   - Refusals are *apierr.Error values: ResourceExhausted (429) for a
//     principal over its rate, concurrency or quota, Unavailable (503) for
//     shedding and store failures, each with RetryAfter set. Messages speak
//     only of the caller's own limits, never of other principals' state.
//   - Rates are GCRA (the generic cell rate algorithm, a token bucket kept
//     as one theoretical arrival time per key), so a key's state is one
//     int64, and idle keys are forgotten without changing any decision.
//   - Decisions are atomic: every check of a request (request bucket, the
//     credential's max_rate bucket, quotas) passes and is recorded, or none
//     is; a refused request consumes nothing.
//   - Keys are bounded: limits are keyed by principal and by the configured
//     per-model overrides, never by the model name a client sends, so
//     unknown model names cannot grow the state; the memory backend holds
//     at most max_keys keys and refuses (as a store failure) past it.
//   - Default limits per principal (Default): 200 requests/s with a burst of
//     400, 20000 batch elements/s with a burst of 20000, 32 concurrent
//     requests per replica, no daily or monthly quota; memory backend;
//     on_store_error deny; shedding at GOMAXPROCS requests in flight with
//     twice as many waiting at most 10 ms (less when overloaded).
//
// A credential's max_rate scope narrows its rate further: it adds a bucket
// over all of the credential's models at that rate.
//
// The server calls, per request: Limiter.Admit once the principal and the
// model are known (before the body is read), Shedder.Acquire, then, once
// the body is decoded, Limiter.Charge with the batch size; or it puts
// Limiter.Stage in the pipeline chain, which does Admit and Charge there.
//
// See docs/ratelimit.md for the algorithms, the Redis script and key
// layout, failure behaviour and measurements.
package ratelimit
