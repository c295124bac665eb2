package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/deploy"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Every measured Aegis operation runs in a child process, this binary
// re-executed with envChild holding a JSON childSpec, so that its peak RSS
// is its own. The child prints one JSON childResult line on stdout.
const envChild = "AEGIS_BENCH_LOAD_CHILD"

// The child operations.
const (
	opBaseline  = "baseline"  // load ONNX Runtime, nothing else: the process's floor
	opVerify    = "verify"    // seal.DecryptFile + deploy.Policy.Check, then Wipe
	opLoad      = "load"      // the same, then onnx.NewSession, Wipe, and one checked run
	opPipelined = "pipelined" // experiment: opVerify with hashing on a second goroutine
	opReaderAt  = "readerat"  // experiment: age.DecryptReaderAt into the mapping, hashing on a second goroutine
	opParts     = "parts"     // each part of opVerify alone, to say where the time goes
	opConvert   = "convert"   // fixture only: save the model in ORT format (ortformat.go)
)

// childSpec tells a child what to do.
type childSpec struct {
	Op         string     `json:"op"`
	Lib        string     `json:"lib"`
	VersionDir string     `json:"version_dir"`
	Identity   string     `json:"identity"`
	TrustedKey string     `json:"trusted_key"`
	Shape      modelShape `json:"shape"`
	Profile    string     `json:"profile,omitempty"` // CPU profile of the timed part
	Variant    string     `json:"variant,omitempty"` // opLoad: ONNX Runtime settings from ortVariants
	TraceRSS   bool       `json:"trace_rss,omitempty"`
	ModelFile  string     `json:"model_file,omitempty"`  // the model's name in VersionDir (default model.onnx)
	ConvertIn  string     `json:"convert_in,omitempty"`  // opConvert: the ONNX model
	ConvertOut string     `json:"convert_out,omitempty"` // opConvert: the ORT-format model to write
}

// childResult is what a child measured. Durations are nanoseconds.
type childResult struct {
	Decrypt       time.Duration            `json:"decrypt"`        // open → plaintext and digest in memory
	DecryptVerify time.Duration            `json:"decrypt_verify"` // open → signature verified
	Session       time.Duration            `json:"session"`        // onnx.NewSession
	Wipe          time.Duration            `json:"wipe"`           // Plaintext.Wipe
	Parts         map[string]time.Duration `json:"parts,omitempty"`
	Locked        bool                     `json:"locked"`
	Digest        string                   `json:"digest"`
	Plaintext     int64                    `json:"plaintext"`
	HWMBase       int64                    `json:"hwm_base"`     // VmHWM before the operation, bytes
	HWMVerified   int64                    `json:"hwm_verified"` // VmHWM once verified, before any session
	HWMEnd        int64                    `json:"hwm_end"`      // VmHWM at the end (after session and wipe)
	RSSEnd        int64                    `json:"rss_end"`      // VmRSS at the end: what the loaded session keeps
	RunChecked    bool                     `json:"run_checked"`
	ORTVersion    string                   `json:"ort_version,omitempty"`
	RSSTrace      []rssPoint               `json:"rss_trace,omitempty"` // VmRSS every 2 ms from the open
}

// rssPoint is the resident set at a time since the open.
type rssPoint struct {
	At  time.Duration `json:"at"`
	RSS int64         `json:"rss"`
}

// traceRSS samples VmRSS every 2 ms until stop is called, which returns
// the samples.
func traceRSS(start time.Time) (stop func() []rssPoint) {
	done := make(chan struct{})
	out := make(chan []rssPoint, 1)
	go func() {
		var pts []rssPoint
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			pts = append(pts, rssPoint{At: time.Since(start), RSS: procStatus("VmRSS")})
			select {
			case <-done:
				out <- pts
				return
			case <-tk.C:
			}
		}
	}()
	return func() []rssPoint { close(done); return <-out }
}

// childMain runs the child operation if this process is a child, and
// reports whether it was.
func childMain() bool {
	raw := os.Getenv(envChild)
	if raw == "" {
		return false
	}
	var spec childSpec
	err := json.Unmarshal([]byte(raw), &spec)
	var res childResult
	if err == nil {
		res, err = runChildOp(spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/load child:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
	return true
}

func runChildOp(spec childSpec) (childResult, error) {
	var res childResult
	info, err := onnx.Init(onnx.LibraryOptions{Path: spec.Lib})
	if err != nil {
		return res, err
	}
	res.ORTVersion = info.Version
	custody, err := keys.LoadIdentityFile(spec.Identity)
	if err != nil {
		return res, err
	}
	policy, err := deploy.Load(config.Deploy{RequireSignature: true, TrustedKeys: []string{spec.TrustedKey}})
	if err != nil {
		return res, err
	}
	res.HWMBase = procStatus("VmHWM")
	if spec.Op == opBaseline {
		res.HWMVerified, res.HWMEnd = res.HWMBase, res.HWMBase
		return res, nil
	}
	if spec.Profile != "" {
		f, err := os.Create(spec.Profile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}
	if spec.Op == opConvert {
		return res, convertToORTFormat(spec.ConvertIn, spec.ConvertOut)
	}
	if spec.ModelFile == "" {
		spec.ModelFile = "model.onnx"
	}
	sealed := filepath.Join(spec.VersionDir, spec.ModelFile+seal.Suffix)
	id := custody.Identity()
	switch spec.Op {
	case opVerify, opLoad:
		return loadLikeRepository(spec, sealed, id, policy, res)
	case opPipelined, opReaderAt:
		return verifyPipelined(spec, sealed, id, policy, res)
	case opParts:
		return timeParts(sealed, id, res)
	}
	return res, fmt.Errorf("unknown child operation %q", spec.Op)
}

// loadLikeRepository does what repository.loadVersion does for an encrypted
// model under a policy that requires a signature: decrypt into protected
// memory (digest computed in the same pass), check the policy with the
// digest as a known plaintext digest, and for opLoad create the session
// before wiping the plaintext.
func loadLikeRepository(spec childSpec, sealed string, id age.Identity, policy *deploy.Policy, res childResult) (childResult, error) {
	start := time.Now()
	stopTrace := func() []rssPoint { return nil }
	if spec.TraceRSS {
		stopTrace = traceRSS(start)
	}
	p, err := seal.DecryptFile(sealed, id, 0)
	if err != nil {
		return res, err
	}
	defer p.Wipe()
	res.Decrypt = time.Since(start)
	digest := p.SHA256()
	if err := checkPolicy(spec.VersionDir, spec.ModelFile, digest, id, policy); err != nil {
		return res, err
	}
	res.DecryptVerify = time.Since(start)
	res.HWMVerified = procStatus("VmHWM")
	res.Locked, res.Digest, res.Plaintext = p.Locked, hex.EncodeToString(digest[:]), int64(len(p.Bytes()))
	if ortVariants[spec.Variant].ortFormat {
		return loadORTFormat(spec, p, res, stopTrace)
	}

	var check func() error
	if spec.Op == opLoad {
		t := time.Now()
		if v := ortVariants[spec.Variant]; spec.Variant == "" || v.trim {
			s, err := onnx.NewSession(p.Bytes(), onnx.Options{})
			if err != nil {
				return res, err
			}
			defer s.Close()
			check = func() error { return probe(s, spec.Shape) }
		} else if ortVariants[spec.Variant].external {
			s, err := newExternalizedSession(spec.Lib, p.Bytes(), ortVariants[spec.Variant].config)
			if err != nil {
				return res, err
			}
			defer s.close()
			check = func() error { return s.probe(spec.Shape) }
		} else {
			s, err := newORTSession(p.Bytes(), spec.Variant)
			if err != nil {
				return res, err
			}
			defer s.close()
			check = func() error { return s.probe(spec.Shape) }
		}
		res.Session = time.Since(t)
	}
	t := time.Now()
	p.Wipe()
	res.Wipe = time.Since(t)
	if ortVariants[spec.Variant].trim {
		mallocTrim()
	}
	res.HWMEnd, res.RSSEnd = procStatus("VmHWM"), procStatus("VmRSS")
	res.RSSTrace = stopTrace()
	if check != nil {
		pprof.StopCPUProfile()
		if err := check(); err != nil {
			return res, fmt.Errorf("the loaded model answers wrongly: %w", err)
		}
		res.RunChecked = true
	}
	return res, nil
}

// checkPolicy is the policy check of repository.loadVersion: Known carries
// the digest computed while decrypting, and Decrypt is there as it is in
// the server (the signature names only model.onnx, so it is never called).
func checkPolicy(dir, modelFile string, digest [sha256.Size]byte, id age.Identity, policy *deploy.Policy) error {
	src := modelsig.Source{
		Known: map[string][sha256.Size]byte{modelFile: digest},
		Decrypt: func(path string) (io.ReadCloser, error) {
			return nil, errors.New("bench/load: the verifier asked to decrypt " + path + " again")
		},
	}
	_, err := policy.Check(modelName, 1, dir, hex.EncodeToString(digest[:]), src, nil)
	return err
}

// probe runs the model once on probeInput and checks the output exactly.
func probe(s *onnx.Session, sh modelShape) error {
	x := &tensor.Tensor{Name: "x", DType: tensor.FP32, Shape: []int64{1, sh.Rows}, Data: probeInput(sh)}
	r, err := s.Run(context.Background(), []*tensor.Tensor{x})
	if err != nil {
		return err
	}
	defer r.Release()
	if len(r.Outputs) != 1 {
		return fmt.Errorf("got %d outputs, want 1", len(r.Outputs))
	}
	return checkProbeOutput(sh, r.Outputs[0].Data)
}

// procStatus returns a "kB" field of /proc/self/status in bytes (0 if
// unreadable).
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return n << 10
	}
	return 0
}
