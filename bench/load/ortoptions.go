package main

import (
	"errors"
	"fmt"
	"maps"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// ortVariants are ONNX Runtime session settings that might lower the peak
// memory of session creation, measured against what onnx.NewSession does
// today (one session, one intra-op and one inter-op thread, defaults
// otherwise). Each is a candidate for onnx.Options, not Aegis behaviour.
var ortVariants = map[string]struct {
	what      string
	config    map[string]string
	arena     bool
	external  bool // large initializers as in-memory external data (extinit.go)
	ortFormat bool // the model converted to ORT format, its plaintext kept for the session's life (ortformat.go)
	trim      bool // today's onnx.NewSession, then glibc malloc_trim(0) once the plaintext is wiped
}{
	"ort-trim": {
		what: "today's settings, then `malloc_trim(0)` after the load (returns freed heap pages; peak unchanged)",
		trim: true,
	},
	"ort-format": {
		what:      "model in ORT format, session reading its weights in place from the protected plaintext (ortformat.go)",
		config:    ortFormatConfig,
		arena:     true,
		ortFormat: true,
	},
	"ort-format-noprepack": {
		what:      "ORT format read in place, and `session.disable_prepacking=1`",
		config:    mergeConfig(ortFormatConfig, map[string]string{"session.disable_prepacking": "1"}),
		arena:     true,
		ortFormat: true,
	},
	"ort-external": {
		what:     "initializers as in-memory external data (`AddExternalInitializersFromFilesInMemory`, extinit.go)",
		external: true,
	},
	"ort-external-noprepack": {
		what:     "in-memory external data and `session.disable_prepacking=1`",
		config:   map[string]string{"session.disable_prepacking": "1"},
		external: true,
	},

	"ort-noprepack": {
		what:   "`session.disable_prepacking=1`",
		config: map[string]string{"session.disable_prepacking": "1"},
		arena:  true,
	},
	"ort-devalloc": {
		what:   "`session.use_device_allocator_for_initializers=1`",
		config: map[string]string{"session.use_device_allocator_for_initializers": "1"},
		arena:  true,
	},
	"ort-noarena": {
		what:  "CPU memory arena off (`DisableCpuMemArena`)",
		arena: false,
	},
	"ort-both": {
		what: "`session.disable_prepacking=1` and `session.use_device_allocator_for_initializers=1`",
		config: map[string]string{
			"session.disable_prepacking":                    "1",
			"session.use_device_allocator_for_initializers": "1",
		},
		arena: true,
	},
}

// ortSession is a session created with a variant's settings.
type ortSession struct{ s *ort.DynamicAdvancedSession }

// newORTSession mirrors onnx.NewSession for one session, with a variant's
// settings added.
func newORTSession(model []byte, variant string) (*ortSession, error) {
	v, ok := ortVariants[variant]
	if !ok {
		return nil, fmt.Errorf("unknown ONNX Runtime variant %q", variant)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		return nil, err
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	if err := so.SetCpuMemArena(v.arena); err != nil {
		return nil, err
	}
	for k, val := range v.config {
		if err := so.AddSessionConfigEntry(k, val); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	ds, _, _, err := ort.NewDynamicAdvancedSessionForAllIO(model, so)
	if err != nil {
		return nil, err
	}
	return &ortSession{s: ds}, nil
}

func (o *ortSession) close() { o.s.Destroy() }

// probe is probe for a variant session.
func (o *ortSession) probe(sh modelShape) error {
	x := probeInput(sh)
	vals := unsafe.Slice((*float32)(unsafe.Pointer(&x[0])), sh.Rows)
	in, err := ort.NewTensor(ort.NewShape(1, sh.Rows), vals)
	if err != nil {
		return err
	}
	defer in.Destroy()
	out, err := o.s.RunCopyOutputs([]ort.Value{in}, nil)
	if err != nil {
		return err
	}
	if len(out) != 1 {
		return errors.New("want one output")
	}
	return checkProbeOutput(sh, out[0].Data)
}

// mergeConfig returns the union of session settings (later ones win).
func mergeConfig(cs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, c := range cs {
		maps.Copy(out, c)
	}
	return out
}
