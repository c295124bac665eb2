package authz

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// ErrNoPolicyFile is returned by Reload on an Authorizer that was not
// loaded from a file.
var ErrNoPolicyFile = errors.New("no policy file configured")

// Authorizer holds the policy in force and replaces it on Reload. The zero
// value, and a nil *Authorizer, have no policy and deny everything.
//
// Decide, Visible and Policy read the policy through an atomic pointer and
// never wait for a reload.
type Authorizer struct {
	path string // "" when not loaded from a file

	// reloadMu serializes Reload, so that a slow read of an old file can
	// never overwrite a newer policy. Decide never takes it.
	reloadMu sync.Mutex
	policy   atomic.Pointer[Policy]
}

// New returns an Authorizer enforcing pol. A nil pol denies everything:
// it is the server's policy when no policy file is configured.
func New(pol *Policy) *Authorizer {
	a := &Authorizer{}
	a.policy.Store(pol)
	return a
}

// Load returns an Authorizer enforcing the policy in the file at path,
// which Reload reads again.
func Load(path string) (*Authorizer, error) {
	// Reload must read the same file whatever the working directory is
	// by then.
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	pol, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	a := &Authorizer{path: path}
	a.policy.Store(pol)
	return a, nil
}

// Reload reads the policy file again and puts it in force. If the file
// cannot be read or is not a valid policy, the policy in force stays and
// the error says why.
func (a *Authorizer) Reload() error {
	if a == nil || a.path == "" {
		return ErrNoPolicyFile
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	pol, err := ParseFile(a.path)
	if err != nil {
		return err
	}
	a.policy.Store(pol)
	return nil
}

// Policy returns the policy in force; nil when there is none.
func (a *Authorizer) Policy() *Policy {
	if a == nil {
		return nil
	}
	return a.policy.Load()
}

// Decide reports whether p may do act under the policy in force. See
// Policy.Decide for the order of checks.
func (a *Authorizer) Decide(p *pipeline.Principal, act Action) Decision {
	return a.Policy().Decide(p, act)
}

// Visible returns the models p may see under the policy in force. See
// Policy.Visible.
func (a *Authorizer) Visible(p *pipeline.Principal, models []string) []string {
	return a.Policy().Visible(p, models)
}

// ParseFile reads and parses a policy file. The file must be a regular
// file that other users may not write: a policy anyone can edit grants
// anything to anyone.
func ParseFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("policy %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("policy %s: mode %#o is world-writable", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	pol, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return pol, nil
}
