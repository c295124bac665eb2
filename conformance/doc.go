// Package conformance runs the ONNX backend test data (Debian's
// libonnx-testdata: data/node, data/simple and data/pytorch-converted)
// through ONNX Runtime in-process and through a real Aegis server over every
// protocol client (REST JSON, REST binary, gRPC typed, gRPC raw), and
// compares each case's outputs with the expected ones.
//
// Guarantees:
//   - A case is judged against its expected outputs with the ONNX backend
//     test runner's tolerance (|got-want| <= 1e-7 + 1e-3*|want|, NaN equal to
//     NaN, infinities exact), exactly for integers, booleans and strings, and
//     with the same datatype and shape.
//   - Every case lands in exactly one category: unsupported by the protocol
//     (sequence, map or optional values, or element types the protocol has
//     no datatype for), unsupported by ONNX Runtime (it cannot load or run
//     the model), failing in-process (it runs, with wrong outputs), or
//     passing in-process. The goal is that every case passing in-process also
//     passes over every client.
//   - The ONNX protobuf files are decoded here with protowire, refusing what
//     cannot be represented (external data, segments, unknown types) with an
//     error rather than guessing.
//
// `make conformance` runs the full set and writes a markdown report;
// `go test ./conformance` runs a quick representative subset.
package conformance
