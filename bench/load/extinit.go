package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../third_party/onnxruntime_go
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include "onnxruntime_c_api.h"

static const OrtApi *bl_api;

static char *bl_status(OrtStatus *s) {
	if (s == NULL) return NULL;
	char *m = strdup(bl_api->GetErrorMessage(s));
	bl_api->ReleaseStatus(s);
	return m;
}

// bl_init finds the C API of the ONNX Runtime library that
// internal/runtime/onnx has already loaded (dlopen returns the same handle).
static char *bl_init(const char *lib) {
	void *h = dlopen(lib, RTLD_NOW);
	if (h == NULL) return strdup(dlerror());
	const OrtApiBase *(*get)(void) = (const OrtApiBase *(*)(void))dlsym(h, "OrtGetApiBase");
	if (get == NULL) return strdup("no OrtGetApiBase");
	bl_api = get()->GetApi(ORT_API_VERSION);
	if (bl_api == NULL) return strdup("ONNX Runtime does not offer this API version");
	return NULL;
}

// bl_create creates a session as onnx.NewSession does (one intra-op and
// one inter-op thread), from model bytes whose large initializers refer to
// the in-memory "file" name, held in buf.
static char *bl_create(const void *model, size_t model_len, const char *name, void *buf, size_t buf_len,
		char **keys, char **vals, int nconf, OrtSession **out) {
	OrtEnv *env = NULL;
	OrtSessionOptions *so = NULL;
	char *err = bl_status(bl_api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "aegis-bench-load", &env));
	if (err == NULL) err = bl_status(bl_api->CreateSessionOptions(&so));
	if (err == NULL) err = bl_status(bl_api->SetIntraOpNumThreads(so, 1));
	if (err == NULL) err = bl_status(bl_api->SetInterOpNumThreads(so, 1));
	for (int i = 0; err == NULL && i < nconf; i++) err = bl_status(bl_api->AddSessionConfigEntry(so, keys[i], vals[i]));
	if (err == NULL) {
		char *bufs[1] = {(char *)buf};
		size_t lens[1] = {buf_len};
		const char *names[1] = {name};
		err = bl_status(bl_api->AddExternalInitializersFromFilesInMemory(so, names, bufs, lens, 1));
	}
	if (err == NULL) err = bl_status(bl_api->CreateSessionFromArray(env, model, model_len, so, out));
	if (so != NULL) bl_api->ReleaseSessionOptions(so);
	if (env != NULL) bl_api->ReleaseEnv(env);
	return err;
}

// bl_run runs y = f(x) for one FP32 input "x" of shape [1, rows] and copies
// the FP32 output "y" (cols elements) out.
static char *bl_run(OrtSession *s, float *x, int64_t rows, float *y, int64_t cols) {
	OrtMemoryInfo *mi = NULL;
	OrtValue *in = NULL, *out = NULL;
	int64_t shape[2] = {1, rows};
	const char *in_names[1] = {"x"};
	const char *out_names[1] = {"y"};
	char *err = bl_status(bl_api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mi));
	if (err == NULL) err = bl_status(bl_api->CreateTensorWithDataAsOrtValue(mi, x, (size_t)rows * 4, shape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in));
	if (err == NULL) err = bl_status(bl_api->Run(s, NULL, in_names, (const OrtValue *const *)&in, 1, out_names, 1, &out));
	float *p = NULL;
	if (err == NULL) err = bl_status(bl_api->GetTensorMutableData(out, (void **)&p));
	if (err == NULL) memcpy(y, p, (size_t)cols * 4);
	if (out != NULL) bl_api->ReleaseValue(out);
	if (in != NULL) bl_api->ReleaseValue(in);
	if (mi != NULL) bl_api->ReleaseMemoryInfo(mi);
	return err;
}

static void bl_release(OrtSession *s) { bl_api->ReleaseSession(s); }
*/
import "C"

import (
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// The external-initializer experiment: today onnx.NewSession hands ONNX
// Runtime the whole plaintext, which ONNX Runtime parses into a ModelProto
// (a copy of every initializer) and then turns into tensors (a second
// copy), while Aegis still holds the plaintext: three copies at the peak.
// Instead, the model ONNX Runtime parses can be the plaintext with the
// raw_data of its large initializers cut out and replaced by external-data
// references (location, offset, length) into an in-memory "file" that is
// the plaintext itself (OrtApi::AddExternalInitializersFromFilesInMemory,
// ONNX Runtime 1.18+). ONNX Runtime then copies each initializer once, from
// the protected mapping, and the mapping can be wiped right after, as now.

// inMemoryFile names the plaintext as ONNX Runtime's in-memory external file.
const inMemoryFile = "aegis-plaintext"

// externalizeMin is the smallest raw_data moved out of the model.
const externalizeMin = 1 << 10

// onnx.proto field numbers beyond those in model.go.
const (
	tensorExternalData = 13
	tensorDataLocation = 14
	entryKey           = 1
	entryValue         = 2
	dataLocationExtern = 1
)

// externalize returns model with the raw_data of each main-graph
// initializer of at least externalizeMin bytes replaced by an external-data
// reference into model itself (as inMemoryFile). Nothing is copied but the
// small remainder.
func externalize(model []byte) ([]byte, int, error) {
	var out []byte
	moved := 0
	err := eachField(model, 0, func(num protowire.Number, typ protowire.Type, field []byte, val []byte, off int) error {
		if num != modelGraph || typ != protowire.BytesType {
			out = append(out, field...)
			return nil
		}
		var graph []byte
		err := eachField(val, off, func(num protowire.Number, typ protowire.Type, field []byte, val []byte, off int) error {
			if num != graphInitializer || typ != protowire.BytesType {
				graph = append(graph, field...)
				return nil
			}
			t, n, err := externalizeTensor(val, off)
			if err != nil {
				return err
			}
			moved += n
			graph = protowire.AppendTag(graph, graphInitializer, protowire.BytesType)
			graph = protowire.AppendBytes(graph, t)
			return nil
		})
		if err != nil {
			return err
		}
		out = protowire.AppendTag(out, modelGraph, protowire.BytesType)
		out = protowire.AppendBytes(out, graph)
		return nil
	})
	return out, moved, err
}

// externalizeTensor rewrites one TensorProto (at offset off of the model).
func externalizeTensor(t []byte, off int) ([]byte, int, error) {
	var rawOff, rawLen int
	external := false
	var kept []byte
	err := eachField(t, off, func(num protowire.Number, typ protowire.Type, field []byte, val []byte, voff int) error {
		switch {
		case num == tensorRawData && typ == protowire.BytesType && len(val) >= externalizeMin:
			rawOff, rawLen = voff, len(val)
		case num == tensorDataLocation || num == tensorExternalData:
			external = true
			kept = append(kept, field...)
		default:
			kept = append(kept, field...)
		}
		return nil
	})
	if err != nil || rawLen == 0 || external {
		return t, 0, err
	}
	entry := func(k, v string) []byte {
		e := appendStringField(nil, entryKey, k)
		return appendStringField(e, entryValue, v)
	}
	kept = appendVarintField(kept, tensorDataLocation, dataLocationExtern)
	kept = appendBytesField(kept, tensorExternalData, entry("location", inMemoryFile))
	kept = appendBytesField(kept, tensorExternalData, entry("offset", strconv.Itoa(rawOff)))
	kept = appendBytesField(kept, tensorExternalData, entry("length", strconv.Itoa(rawLen)))
	return kept, rawLen, nil
}

// eachField calls f for each field of message b, which starts at offset
// base of the model, with the whole field, its value (for bytes fields) and
// the value's offset in the model.
func eachField(b []byte, base int, f func(num protowire.Number, typ protowire.Type, field, val []byte, off int) error) error {
	pos := 0
	for pos < len(b) {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return fmt.Errorf("protobuf at offset %d: %w", base+pos, protowire.ParseError(n))
		}
		var val []byte
		valOff := 0
		m := protowire.ConsumeFieldValue(num, typ, b[pos+n:])
		if m < 0 {
			return fmt.Errorf("protobuf at offset %d: %w", base+pos, protowire.ParseError(m))
		}
		if typ == protowire.BytesType {
			v, k := protowire.ConsumeBytes(b[pos+n:])
			val, valOff = v, base+pos+n+k-len(v)
		}
		if err := f(num, typ, b[pos:pos+n+m], val, valOff); err != nil {
			return err
		}
		pos += n + m
	}
	return nil
}

var errNoExternal = errors.New("the model has no initializer to externalize")

// mallocTrim returns the C heap's free pages to the system (glibc).
func mallocTrim() { C.malloc_trim(0) }

// extSession is a session created from an externalized model.
type extSession struct{ s *C.OrtSession }

// newExternalizedSession creates a session whose large initializers ONNX
// Runtime copies straight from plain. plain may be wiped when it returns.
func newExternalizedSession(lib string, plain []byte, config map[string]string) (*extSession, error) {
	cl := C.CString(lib)
	defer C.free(unsafe.Pointer(cl))
	if msg := C.bl_init(cl); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return nil, errors.New(C.GoString(msg))
	}
	model, moved, err := externalize(plain)
	if err != nil {
		return nil, err
	}
	if moved == 0 {
		return nil, errNoExternal
	}
	// The stripped model and the name go to C as C memory; the plaintext
	// is the protected mapping, outside the Go heap.
	cm := C.CBytes(model)
	defer C.free(cm)
	cn := C.CString(inMemoryFile)
	defer C.free(unsafe.Pointer(cn))
	n := max(len(config), 1)
	ckeys := (*[1 << 10]*C.char)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:n]
	cvals := (*[1 << 10]*C.char)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:n]
	defer C.free(unsafe.Pointer(&ckeys[0]))
	defer C.free(unsafe.Pointer(&cvals[0]))
	i := 0
	for k, v := range config {
		ckeys[i], cvals[i] = C.CString(k), C.CString(v)
		defer C.free(unsafe.Pointer(ckeys[i]))
		defer C.free(unsafe.Pointer(cvals[i]))
		i++
	}
	var s *C.OrtSession
	if msg := C.bl_create(cm, C.size_t(len(model)), cn, unsafe.Pointer(unsafe.SliceData(plain)), C.size_t(len(plain)),
		&ckeys[0], &cvals[0], C.int(len(config)), &s); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return nil, errors.New(C.GoString(msg))
	}
	return &extSession{s: s}, nil
}

func (e *extSession) close() { C.bl_release(e.s) }

// probe is probe for an externalized session.
func (e *extSession) probe(sh modelShape) error {
	x := C.malloc(C.size_t(sh.Rows * 4))
	defer C.free(x)
	copy(unsafe.Slice((*byte)(x), sh.Rows*4), probeInput(sh))
	y := C.malloc(C.size_t(sh.outCols() * 4))
	defer C.free(y)
	if msg := C.bl_run(e.s, (*C.float)(x), C.int64_t(sh.Rows), (*C.float)(y), C.int64_t(sh.outCols())); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return errors.New(C.GoString(msg))
	}
	return checkProbeOutput(sh, C.GoBytes(y, C.int(sh.outCols()*4)))
}
