// Package watermark implements DAWN forensic watermarking (Szyller et al.,
// "DAWN: Dynamic Adversarial Watermarking of Neural Networks", ACM MM
// 2021) and the statistics that turn it into evidence of model theft.
//
// A Watermarker answers a keyed fraction of queries with a wrong label. The
// choice is a keyed hash, HMAC-SHA256(key, canonical input bytes): the
// answer is marked when the first 8 bytes, read as a big-endian uint64,
// fall below rate·2^64, and the label it gets is derived from the next 8
// bytes, uniform over the classes other than the true one. The same input
// therefore always gets the same answer, whoever asks and however often,
// so repeated or colluding queries cannot reveal which answers are marked.
// A Recorder keeps each principal's marked (input, label) pairs, and
// Verify measures how often a suspect model reproduces those labels: a
// model trained on the answers learns them, a model built independently
// matches each only by chance, 1/(classes−1) at most.
//
// Guarantees and defaults:
//   - A row is marked only if its true label is a class in [0, classes),
//     classes ≥ 3 (with two classes a wrong label is not evidence).
//   - Marking costs the same HMAC for every row, marked or not, and the
//     Recorder writes asynchronously: neither the answer's latency nor
//     its timing reveals that it was marked.
//   - Each principal's latest MaxPairs (default 5,000) distinct marked
//     inputs are kept; a repeated input is stored once.
//   - The stored pairs hold the callers' inputs as they sent them. They
//     are as sensitive as the inputs: the state directory must be
//     protected (mode 0700, as internal/state creates it) and its
//     backups with it.
//   - Verify's p-value is the exact binomial tail, computed in integers
//     (math/big) for the chance rate 1/(classes−1), so p-values far below
//     2^-64 are exact rather than rounded to zero.
package watermark
