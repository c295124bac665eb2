package onnx

// #include <malloc.h>
import "C"

// trimHeap returns freed heap memory to the system. Creating a session
// frees ONNX Runtime's transient copies of the weights (about the model's
// size again), which glibc would otherwise keep resident.
func trimHeap() { C.malloc_trim(0) }
