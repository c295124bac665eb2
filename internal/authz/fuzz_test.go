package authz

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// fuzzPrincipals and fuzzActions are what every accepted policy is asked
// about.
var (
	fuzzPrincipals = []*pipeline.Principal{
		nil,
		{},
		jwt("alice", "ml-team", "contractors", "sre", "g"),
		key("k1", "scorer", "operator", "r", "all", ""),
		key("k-old-19c2"),
		mtls("spiffe://example.org/ns/prod/sa/scorer"),
		mtls("spiffe://example.org/ns/canary/sa/worker"),
		mtls("spiffe://example.org/ns/canary/sa/.."),
		mtls("cert:CN=batch,O=Example"),
		scoped(jwt("bob", "g"), pipeline.Scopes{Models: []string{"digits", "[", "fraud-*", "*"}}),
		scoped(jwt("carol"), pipeline.Scopes{Models: []string{"\\"}}),
	}
	fuzzActions = []Action{
		{},
		{Permission: List},
		{Permission: Admin},
		{Permission: AuditRead},
		{Permission: Admin, Model: "digits"},
		infer("digits", ""),
		infer("digits", "1"),
		infer("digits2", "2"),
		infer("fraud-eu", "2"),
		infer("secret-x", ""),
		infer("a..b", ""),
		infer("../x", ""),
		{Permission: Metadata, Model: "m", Version: "01"},
		{Permission: List, Model: "fraud-us"},
	}
)

// FuzzParse checks that no input makes Parse panic, and that any policy it
// accepts decides every principal and action without panicking, denies
// the unauthenticated and the malformed, and only ever allows by a role.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "policy", "*.yaml"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(valid))
	f.Add([]byte("roles: {}\n"))
	f.Add([]byte("roles:\n  r: &r\n    permissions: [infer]\n    models: [m]\n  s: *r\n"))
	f.Add([]byte("roles:\n  r:\n    permissions: [infer, list]\n    models: [\"m[0-9]\", \"a\\\\-b\"]\n    versions: [1]\n" +
		"bindings:\n  - {role: r, principals: [\"*\", \"spiffe://example.org/ns/*/sa/w?\"]}\n" +
		"deny:\n  - {name: d, principals: [\"group:g\"], permissions: [infer], versions: [\"2\"]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, err := Parse(data)
		if err != nil {
			if pol != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			return
		}
		for _, p := range fuzzPrincipals {
			for _, a := range fuzzActions {
				d := pol.Decide(p, a)
				switch {
				case !authenticated(p):
					if d != unauthenticated {
						t.Fatalf("Decide(unauthenticated, %+v) = %+v", a, d)
					}
				case !a.valid():
					if d != invalidAction {
						t.Fatalf("Decide(%+v, malformed %+v) = %+v", p, a, d)
					}
				case d.Allow:
					name, ok := strings.CutPrefix(d.Rule, RolePrefix)
					if !ok || pol.roles[name] == nil {
						t.Fatalf("Decide(%+v, %+v) allowed by %q, not a role of the policy", p, a, d.Rule)
					}
				}
				if again := pol.Decide(p, a); again != d {
					t.Fatalf("Decide is not deterministic: %+v then %+v", d, again)
				}
			}
			pol.Visible(p, []string{"digits", "fraud-eu", "secret-x", "../x", ""})
		}
	})
}

// FuzzPattern checks that compiled patterns, with their prefix and
// trailing-"*" shortcuts, match exactly what path.Match matches.
func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"fraud-*", "fraud-eu"}, {"fraud-*", "fraud-"}, {"fraud-*", "fraud-a/b"},
		{"digits", "digits2"}, {"m?-1", "m1-1"}, {"a\\*", "a*"}, {"m[0-9]", "m5"},
		{"spiffe://example.org/ns/*", "spiffe://example.org/ns/x/y"}, {"x[", "x"}, {"*", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pat, name string) {
		p := compilePattern(pat)
		want, err := path.Match(pat, name)
		want = want && err == nil
		if got := p.match(name); got != want {
			t.Fatalf("compiled %q matches %q: %v; path.Match says %v (%v)", pat, name, got, want, err)
		}
	})
}
