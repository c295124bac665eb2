// Package extraction detects model-extraction attacks per principal and per
// group of principals (one tenant's many keys, one network), and turns what
// it sees into a risk score and a policy action.
//
// A Monitor watches one model's queries. The request path calls Decision
// (lock-free, ~30 ns) before inference and Observe (copies the input row and
// queues it, ~0.2 µs, never blocks) after it; the detectors run on the
// Monitor's worker goroutine:
//
//   - PRADA (Juuti et al., EuroS&P 2019): per predicted class a growing set
//     of past queries; each query's minimum L2 distance to its class's set
//     joins a pool, and every 10 queries once the pool holds more than 100,
//     a Shapiro–Wilk test (ShapiroWilk, Royston's AS R94) on the pool
//     without its 3σ outliers raises the alarm when W < δ = 0.90.
//   - k-nearest-neighbour stateful detection (Chen, Carlini and Wagner,
//     2020): the mean distance of each query to its k nearest among the
//     last 1,000; the alarm when 10 of the last 128 fall below a threshold
//     calibrated on benign data (CalibrateKNN).
//   - Out-of-distribution rate: the share of queries internal/ood flags,
//     with the alarm when their count in the last 128 would have
//     probability ≤ 1e-9 at a benign rate of 3%.
//
// Each of these runs for the principal and for every group key Observe is
// given, so that an attack split over many keys is caught on the group.
// Risk combines the detectors (one alarm 0.6, two 0.84, three 0.936) and
// Policy maps it to an Action; Decision returns the most severe of the
// principal's and its groups'. Alerts reports each escalation for the
// audit log and the webhook.
//
// Guarantees and defaults:
//   - Bounded memory: at most Config.SubjectBytesBound bytes per principal
//     or group (588 KB for 64 features with Default; Validate refuses a
//     configuration above MaxBytesPerSubject, 1 MiB), and at most
//     MaxSubjects subjects.
//   - Never on the critical path: Observe drops (and counts, Stats.Dropped)
//     rather than wait when the worker is QueueSize behind.
//   - Alarms latch for LatchFor (24 h) after their condition was last met,
//     or until Reset: an attacker cannot wash an alarm out by sending
//     natural queries.
//   - Fail closed: a Config without a calibrated kNN threshold or an OOD
//     model (for enabled detectors) is refused; the zero Policy blocks.
//   - Exact repeats of a held query are counted but not scored by PRADA
//     and kNN (a client retrying is not an attacker); they do count toward
//     the out-of-distribution rate.
//
// See docs/extraction-detection.md for the calibration and its data.
package extraction
