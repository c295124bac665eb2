package authz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func writePolicy(t *testing.T, path, src string) {
	t.Helper()
	// Write and rename, as an operator's tooling should, so that a
	// concurrent Reload never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// scorerFor is a policy granting jwt:alice infer on model.
func scorerFor(model string) string {
	return "roles:\n  scorer:\n    permissions: [infer]\n    models: [\"" + model + "\"]\n" +
		"bindings:\n  - role: scorer\n    principals: [\"jwt:alice\"]\n"
}

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, scorerFor("digits"))
	a, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	alice := jwt("alice")
	check := func(model string, want Decision) {
		t.Helper()
		if got := a.Decide(alice, infer(model, "")); got != want {
			t.Errorf("Decide(infer %s) = %+v, want %+v", model, got, want)
		}
	}
	check("digits", allow("role:scorer"))
	check("fraud", deny(RuleDefaultDeny))
	first := a.Policy().Digest()

	t.Run("picks up a change", func(t *testing.T) {
		writePolicy(t, path, scorerFor("fraud"))
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
		check("digits", deny(RuleDefaultDeny))
		check("fraud", allow("role:scorer"))
		if a.Policy().Digest() == first {
			t.Error("Digest did not change with the policy")
		}
	})

	for _, broken := range []struct {
		name  string
		write func()
	}{
		{"unknown field", func() { writePolicy(t, path, scorerFor("digits")+"allow: everything\n") }},
		{"bad permission", func() { writePolicy(t, path, strings.Replace(scorerFor("digits"), "infer", "inferr", 1)) }},
		{"undefined role", func() {
			writePolicy(t, path, strings.Replace(scorerFor("digits"), "- role: scorer", "- role: ghost", 1))
		}},
		{"empty file", func() { writePolicy(t, path, "") }},
		{"truncated", func() { writePolicy(t, path, scorerFor("digits")[:30]) }},
		{"file removed", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"world-writable", func() {
			writePolicy(t, path, scorerFor("digits"))
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run("keeps the old policy: "+broken.name, func(t *testing.T) {
			before := a.Policy()
			broken.write()
			if err := a.Reload(); err == nil {
				t.Fatal("Reload accepted a broken policy")
			}
			if a.Policy() != before {
				t.Error("a failed Reload replaced the policy")
			}
			check("fraud", allow("role:scorer"))
			check("digits", deny(RuleDefaultDeny))
		})
	}

	t.Run("recovers once the file is fixed", func(t *testing.T) {
		writePolicy(t, path, scorerFor("digits"))
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
		check("digits", allow("role:scorer"))
	})
}

func TestLoadRefusesBrokenPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, "roles:\n  r:\n    permissions: [fly]\n    models: [\"*\"]\n")
	a, err := Load(path)
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Line != 3 {
		t.Fatalf("Load = %v, %v; want a *PolicyError at line 3", a, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestReloadWithoutFile(t *testing.T) {
	for name, a := range map[string]*Authorizer{"New(nil)": New(nil), "zero": {}, "nil": nil} {
		if err := a.Reload(); !errors.Is(err, ErrNoPolicyFile) {
			t.Errorf("%s: Reload = %v, want ErrNoPolicyFile", name, err)
		}
	}
}

// TestReloadWhileDeciding runs Decide against concurrent Reloads (under
// -race): every decision comes from one whole policy or the other.
func TestReloadWhileDeciding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, scorerFor("digits"))
	a, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			alice := jwt("alice")
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, f := a.Decide(alice, infer("digits", "")), a.Decide(alice, infer("fraud", ""))
				// Two calls may straddle a reload, but neither may see a
				// policy granting both or a broken one.
				if d.Rule != "role:scorer" && d.Rule != RuleDefaultDeny || f.Rule != "role:scorer" && f.Rule != RuleDefaultDeny {
					t.Errorf("unexpected decisions %+v, %+v", d, f)
					return
				}
			}
		}()
	}
	for i := range 50 {
		model := "digits"
		if i%2 == 1 {
			model = "fraud"
		}
		writePolicy(t, path, scorerFor(model))
		if err := a.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}
