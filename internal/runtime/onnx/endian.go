//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package onnx

// Aegis passes tensor bytes to ONNX Runtime without swapping them, which is
// correct only on little-endian hosts. This file fails the build elsewhere.
var _ = littleEndianHostRequired
