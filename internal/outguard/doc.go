// Package outguard hardens what a response reveals of a model's output,
// per model and per credential, after inference and before encoding.
//
// A Policy says how much of a classifier's output a response may carry
// (every output, the k highest scores and their classes, or the label
// only), to how many decimals scores are rounded, and whether they are
// perturbed by the reverse sigmoid of Lee et al. 2019. A model's Policy
// is narrowed by the caller's credential scope (the stricter of the two
// wins, field by field); nothing the caller sends can widen it.
//
// Guarantees:
//   - The zero Policy is the strictest one: label only, scores dropped.
//     Default() is the hardened policy models get unless their
//     configuration says otherwise: the top-1 class and its score,
//     perturbed by the reverse sigmoid (β=0.5, γ=0.2) and rounded to 2
//     decimals. That score is deliberately not a calibrated confidence.
//   - Request parameters are never read. No caller-controlled parameter
//     shapes a response, so none can combine with full-precision scores.
//   - Under top_k and label, every output that is not the label or the
//     scores is dropped: an output the policy cannot classify is not
//     served. Asking for a subset of outputs by name therefore never
//     yields more than the policy allows.
//   - Rounding, top-k and the reverse sigmoid never change the predicted
//     class: after shaping, the top class's score is strictly the
//     highest served, and the label output is left as the model (or the
//     watermark) answered it.
//   - A response that a policy cannot shape (the model's outputs are
//     ambiguous) is refused, not served unshaped.
//
// The Guard stage runs a Marker (forensic watermarking, package
// watermark) on the true labels before shaping, so marked answers are
// shaped like any other.
package outguard
