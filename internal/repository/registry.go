package repository

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/deploy"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/state"
)

// Options configure a Registry.
type Options struct {
	// Runtime is the default session configuration.
	Runtime config.Runtime
	// QueueTimeout is the longest a request waits for a session slot.
	QueueTimeout time.Duration
	// Custody unlocks encrypted models; nil means encrypted models fail
	// to load.
	Custody keys.Custody
	// Policy is the default deployment policy (nil: allow all).
	Policy *deploy.Policy
	// Versions remembers deployed versions for anti-rollback.
	Versions state.Versions
	// WatermarkKey keys the forensic watermark of models that ask for one
	// (watermark: in config.yaml); without it they fail to load.
	WatermarkKey []byte
	Logger       *slog.Logger
}

// Registry holds the loaded models and reloads them from the repository.
//
// Reload loads what is new or changed before it swaps it in, atomically;
// a version that fails to load or verify leaves the version already
// serving in place. Versions that leave are retired: requests that hold
// them (Acquire) finish on them, then their sessions close.
type Registry struct {
	dir  string
	opts Options
	log  *slog.Logger

	reloadMu sync.Mutex // serializes Reload and Close
	closed   bool       // set by Close; guarded by reloadMu

	mu       sync.RWMutex // guards models and failures
	models   map[string]*Model
	failures []Failure

	retiring sync.WaitGroup // versions waiting for their last request
}

// Load scans dir and loads every model version in it. It fails only when
// dir itself cannot be read; individual model failures are logged and
// listed by Failures.
func Load(dir string, opts Options) (*Registry, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Registry{dir: dir, opts: opts, log: opts.Logger, models: map[string]*Model{}}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Loaded   []string // model/version now serving that was not before
	Retired  []string // model/version no longer serving
	Failures []Failure
}

// Reload rescans the repository: new or changed versions are loaded and
// verified, then swapped in together; removed ones are retired. A model or
// version that fails keeps whatever was serving before.
func (r *Registry) Reload() (ReloadResult, error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.closed {
		return ReloadResult{}, ErrClosed
	}
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return ReloadResult{}, fmt.Errorf("model repository: %w", err)
	}
	r.mu.RLock()
	old := r.models
	r.mu.RUnlock()

	var res ReloadResult
	next := map[string]*Model{}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		if !ValidModelName(name) {
			res.Failures = append(res.Failures, Failure{Model: name, Err: errors.New("invalid model name")})
			continue
		}
		m, loaded, fails := r.reloadModel(filepath.Join(r.dir, name), name, old[name])
		res.Failures = append(res.Failures, fails...)
		res.Loaded = append(res.Loaded, loaded...)
		if m != nil {
			next[name] = m
		}
	}

	// Everything that served before and does not now is retired.
	keep := map[*Version]bool{}
	for _, m := range next {
		for _, v := range m.Versions {
			keep[v] = true
		}
	}
	var retired []*Version
	for _, m := range old {
		for _, v := range m.Versions {
			if !keep[v] {
				retired = append(retired, v)
				res.Retired = append(res.Retired, v.model+"/"+v.Version())
			}
		}
	}

	r.mu.Lock()
	r.models = next
	r.failures = res.Failures
	r.mu.Unlock()

	for _, f := range res.Failures {
		r.log.Error("model failed to load", "model", f.Model, "version", f.Version, "err", f.Err)
	}
	for _, id := range res.Loaded {
		r.log.Info("model version ready", "version", id)
	}
	for _, v := range retired {
		r.log.Info("model version retired", "model", v.model, "version", v.Version())
		r.retire(v)
	}
	return res, nil
}

// retire closes v's sessions once no request holds it. No request can
// acquire v any more: it left the registry under the write lock.
func (r *Registry) retire(v *Version) {
	r.retiring.Add(1)
	go func() {
		defer r.retiring.Done()
		v.refs.Wait()
		v.session.Close()
	}()
}

// reloadModel loads a model directory, reusing versions of prev whose
// files have not changed. A version that fails is reported, and prev's
// copy of it, if any, keeps serving.
func (r *Registry) reloadModel(dir, name string, prev *Model) (*Model, []string, []Failure) {
	var fails []Failure
	var loaded []string
	rt, policy, mc, cfgPrint, err := r.readModelConfig(dir)
	keepPrev := func() *Model {
		if prev != nil && len(prev.Versions) > 0 {
			return prev
		}
		return nil
	}
	if err != nil {
		return keepPrev(), nil, []Failure{{Model: name, Err: err}}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return keepPrev(), nil, []Failure{{Model: name, Err: err}}
	}
	prevBy := map[int64]*Version{}
	if prev != nil {
		for _, v := range prev.Versions {
			prevBy[v.version] = v
		}
	}
	m := &Model{Name: name}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n, ok := ParseVersion(e.Name())
		if !ok {
			continue
		}
		vdir := filepath.Join(dir, e.Name())
		fp, err := fingerprint(vdir, cfgPrint)
		if err == nil {
			if pv := prevBy[n]; pv != nil && pv.fingerprint == fp {
				m.Versions = append(m.Versions, pv)
				continue
			}
		}
		v, err := loadVersion(vdir, name, n, rt, policy, mc, r.opts)
		if err != nil {
			fails = append(fails, Failure{Model: name, Version: e.Name(), Err: err})
			if pv := prevBy[n]; pv != nil {
				m.Versions = append(m.Versions, pv) // the old copy keeps serving
			}
			continue
		}
		v.fingerprint = fp
		m.Versions = append(m.Versions, v)
		loaded = append(loaded, name+"/"+v.Version())
	}
	if len(m.Versions) == 0 {
		return nil, loaded, append(fails, Failure{Model: name, Err: errors.New("no loadable version")})
	}
	slices.SortFunc(m.Versions, func(a, b *Version) int { return cmp.Compare(a.version, b.version) })
	return m, loaded, fails
}

// readModelConfig reads a model's config.yaml and returns its session
// settings, deployment policy, the whole file and a fingerprint of it.
func (r *Registry) readModelConfig(dir string) (config.Runtime, *deploy.Policy, ModelConfig, string, error) {
	var mc ModelConfig
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	switch {
	case err == nil:
		if err := applyDefaults(b, &mc); err != nil {
			return config.Runtime{}, nil, mc, "", fmt.Errorf("%s: %w", ConfigFile, err)
		}
		if err := mc.Runtime.Validate("runtime"); err != nil {
			return config.Runtime{}, nil, mc, "", fmt.Errorf("%s: %w", ConfigFile, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return config.Runtime{}, nil, mc, "", fmt.Errorf("%s: %w", ConfigFile, err)
	}
	sum := sha256.Sum256(b)
	policy := r.opts.Policy
	if mc.Deploy != nil {
		if err := mc.Deploy.Validate("deploy"); err != nil {
			return config.Runtime{}, nil, mc, "", fmt.Errorf("%s: %w", ConfigFile, err)
		}
		if policy, err = deploy.Load(*mc.Deploy); err != nil {
			return config.Runtime{}, nil, mc, "", fmt.Errorf("%s: %w", ConfigFile, err)
		}
	}
	if policy == nil {
		policy, _ = deploy.Load(config.Deploy{})
	}
	return r.opts.Runtime.Merge(mc.Runtime), policy, mc, hex.EncodeToString(sum[:]), nil
}

// fingerprint summarises a version directory (every file's name, size,
// mode and modification time) and the model's config, so a reload can tell
// whether anything changed, re-signing included.
func fingerprint(dir, cfgPrint string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "config %s\n", cfgPrint)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%q %d %o %d\n", rel, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// ErrClosed is returned by Reload after Close.
var ErrClosed = errors.New("registry closed")

// ErrNotFound is returned for an unknown model or version.
var ErrNotFound = errors.New("model not found")

// Get returns the model named name.
func (r *Registry) Get(name string) (*Model, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.models[name]
	return m, ok
}

// Resolve returns the version of model name that serves version ("" for the
// newest), or ErrNotFound. The version may be retired at any time; to run
// it, use Acquire.
func (r *Registry) Resolve(name, version string) (*Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.resolveLocked(name, version)
}

func (r *Registry) resolveLocked(name, version string) (*Version, error) {
	m, ok := r.models[name]
	if !ok {
		return nil, ErrNotFound
	}
	if version == "" {
		return m.Latest(), nil
	}
	n, ok := ParseVersion(version)
	if !ok {
		return nil, ErrNotFound
	}
	for _, v := range m.Versions {
		if v.version == n {
			return v, nil
		}
	}
	return nil, ErrNotFound
}

// Acquire resolves a version and holds it until release is called: a
// reload that retires it waits for release before closing its sessions.
func (r *Registry) Acquire(name, version string) (v *Version, release func(), err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if v, err = r.resolveLocked(name, version); err != nil {
		return nil, nil, err
	}
	v.refs.Add(1)
	return v, v.refs.Done, nil
}

// Models returns the loaded models sorted by name.
func (r *Registry) Models() []*Model {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Model, 0, len(r.models))
	for _, m := range r.models {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *Model) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Failures returns what failed in the latest load or reload.
func (r *Registry) Failures() []Failure {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.failures)
}

// Close retires every version and waits until all sessions are closed.
func (r *Registry) Close() {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.closed = true
	r.mu.Lock()
	models := r.models
	r.models = map[string]*Model{}
	r.mu.Unlock()
	for _, m := range models {
		for _, v := range m.Versions {
			r.retire(v)
		}
	}
	r.retiring.Wait()
}
