// Package repository discovers models in a model repository directory,
// loads each version into an ONNX Runtime session pool, and resolves
// requests to the version that serves them.
//
// Layout: DIR/<model>/<version>/model.onnx (or model.onnx.age, encrypted
// with age and decrypted only in memory), where <version> is a positive
// integer written without leading zeros, and an optional DIR/<model>/config.yaml
// (strict YAML: unknown fields are errors). The newest loaded version serves
// requests that name none. A model or version that fails to load is
// reported and skipped; it never stops the others.
package repository

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/deploy"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/validate"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// ModelFile is the file name of a model inside a version directory.
const ModelFile = "model.onnx"

// ConfigFile is the optional per-model configuration file.
const ConfigFile = "config.yaml"

// Platform is reported in model metadata, as Triton names ONNX Runtime.
const Platform = "onnxruntime_onnx"

// validName matches model names Aegis accepts: no path separators, no dot
// segments, nothing a URL could smuggle.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidModelName reports whether name may name a model.
func ValidModelName(name string) bool {
	return validName.MatchString(name) && name != "." && name != ".."
}

// ParseVersion parses a canonical positive version number.
func ParseVersion(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 || strconv.FormatInt(v, 10) != s {
		return 0, false
	}
	return v, true
}

// ModelConfig is the per-model configuration file.
type ModelConfig struct {
	// Runtime overrides the server's session defaults for this model.
	Runtime config.Runtime `yaml:"runtime"`
	// Deploy, when present, replaces the server's deployment policy for
	// this model.
	Deploy *config.Deploy `yaml:"deploy"`
	// Validation constrains the model's input values beyond its signature.
	Validation *validate.Rules `yaml:"validation"`
	// Extraction turns on extraction monitoring for the model.
	Extraction *ExtractionConfig `yaml:"extraction"`
	// Outguard hardens the model's outputs (docs/output-hardening.md);
	// absent, every output is served as computed.
	Outguard *outguard.Policy `yaml:"outguard"`
	// Watermark marks a fraction of answers (docs/watermark.md).
	Watermark *watermark.Config `yaml:"watermark"`
}

// Version is one loaded model version.
type Version struct {
	model     string
	version   int64
	session   *onnx.Session
	digest    string // SHA-256 of the plaintext model, hex
	encrypted bool
	decision  deploy.Decision
	loadedAt  time.Time

	checker     *validate.Checker // the model's input constraints
	extraction  *ExtractionSpec   // nil unless the model is monitored
	outguard    *outguard.Policy  // nil: every output served as computed
	watermarker *watermark.Watermarker
	fingerprint string         // what the version directory held when loaded
	refs        sync.WaitGroup // requests using the version (see Registry.Acquire)
}

// Deployment reports how the version passed the deployment policy: its
// signer and when its signature was verified (zero when unsigned).
func (v *Version) Deployment() deploy.Decision { return v.decision }

// LoadedAt reports when the version was loaded.
func (v *Version) LoadedAt() time.Time { return v.loadedAt }

// Name returns the model name.
func (v *Version) Name() string { return v.model }

// Version returns the version number as the protocol writes it.
func (v *Version) Version() string { return strconv.FormatInt(v.version, 10) }

// Number returns the version number.
func (v *Version) Number() int64 { return v.version }

// Inputs returns the model's declared inputs.
func (v *Version) Inputs() []tensor.Spec { return v.session.Inputs() }

// Outputs returns the model's declared outputs.
func (v *Version) Outputs() []tensor.Spec { return v.session.Outputs() }

// Digest returns the SHA-256 (hex) of the plaintext model.
func (v *Version) Digest() string { return v.digest }

// Encrypted reports whether the model was stored encrypted.
func (v *Version) Encrypted() bool { return v.encrypted }

// Session returns the version's session pool.
func (v *Version) Session() *onnx.Session { return v.session }

// Model is a model and its loaded versions, newest last.
type Model struct {
	Name     string
	Versions []*Version
}

// Latest returns the newest loaded version.
func (m *Model) Latest() *Version { return m.Versions[len(m.Versions)-1] }

// Failure records a model or version that did not load.
type Failure struct {
	Model   string
	Version string // "" when the whole model failed
	Err     error
}

// loadVersion loads a version directory holding model.onnx or, encrypted,
// model.onnx.age. Encrypted plaintext exists only in protected memory, and
// is wiped as soon as ONNX Runtime has its own copy.
func loadVersion(dir, name string, n int64, rt config.Runtime, policy *deploy.Policy, mc ModelConfig, opts Options) (*Version, error) {
	plainPath := filepath.Join(dir, ModelFile)
	sealedPath := plainPath + seal.Suffix
	hasPlain, hasSealed := exists(plainPath), exists(sealedPath)
	var model []byte
	var digest [sha256.Size]byte
	encrypted := false
	switch {
	case hasPlain && hasSealed:
		return nil, fmt.Errorf("%s: both %s and %s%s present", dir, ModelFile, ModelFile, seal.Suffix)
	case hasSealed:
		if opts.Custody == nil {
			return nil, fmt.Errorf("%s: encrypted model but no key configured (keys.identity_file)", sealedPath)
		}
		p, err := seal.DecryptFile(sealedPath, opts.Custody.Identity(), 0)
		if err != nil {
			return nil, err
		}
		defer p.Wipe()
		model, digest, encrypted = p.Bytes(), p.SHA256(), true
	case hasPlain:
		b, err := os.ReadFile(plainPath)
		if err != nil {
			return nil, err
		}
		model, digest = b, sha256.Sum256(b)
	default:
		return nil, fmt.Errorf("%s: no %s or %s%s", dir, ModelFile, ModelFile, seal.Suffix)
	}
	digestHex := hex.EncodeToString(digest[:])
	src := modelsig.Source{Known: map[string][sha256.Size]byte{ModelFile: digest}}
	if opts.Custody != nil {
		src.Decrypt = func(path string) (io.ReadCloser, error) {
			p, err := seal.DecryptFile(path, opts.Custody.Identity(), 0)
			if err != nil {
				return nil, err
			}
			return &wipingReader{Reader: bytes.NewReader(p.Bytes()), p: p}, nil
		}
	}
	decision, err := policy.Check(name, n, dir, digestHex, src, opts.Versions)
	if err != nil {
		return nil, err
	}
	s, err := onnx.NewSession(model, onnx.Options{
		Sessions: rt.Sessions, Concurrency: rt.Concurrency,
		IntraOpThreads: rt.IntraOpThreads, InterOpThreads: rt.InterOpThreads,
		MaxWait: opts.QueueTimeout, DisablePrepacking: rt.DisablePrepacking,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	checker, err := validate.Compile(mc.Validation, s.Inputs(), filepath.Dir(dir))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %s: %w", dir, ConfigFile, err)
	}
	ext, err := loadExtraction(mc.Extraction, filepath.Dir(dir), s.Inputs(), s.Outputs())
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %s: %w", dir, ConfigFile, err)
	}
	og, wm, err := loadOutputs(mc, s.Outputs(), opts.WatermarkKey)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %s: %w", dir, ConfigFile, err)
	}
	if err := policy.Deployed(name, n, opts.Versions); err != nil {
		s.Close()
		return nil, err
	}
	return &Version{model: name, version: n, session: s, digest: digestHex,
		encrypted: encrypted, decision: decision, loadedAt: time.Now(), checker: checker, extraction: ext,
		outguard: og, watermarker: wm}, nil
}

// Extraction returns the version's extraction monitoring, or nil.
func (v *Version) Extraction() *ExtractionSpec { return v.extraction }

// Checker returns the version's input constraints (never nil).
func (v *Version) Checker() *validate.Checker { return v.checker }

// wipingReader reads decrypted plaintext and wipes it on Close.
type wipingReader struct {
	*bytes.Reader
	p *seal.Plaintext
}

func (w *wipingReader) Close() error {
	w.p.Wipe()
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
