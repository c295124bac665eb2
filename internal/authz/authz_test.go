package authz

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// examplePath is the example policy that docs/authorization.md describes.
var examplePath = filepath.Join("..", "..", "testdata", "policy", "example.yaml")

func examplePolicy(t testing.TB) *Policy {
	t.Helper()
	pol, err := ParseFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	pol, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return pol
}

func jwt(sub string, groups ...string) *pipeline.Principal {
	return &pipeline.Principal{ID: "jwt:" + sub, Method: pipeline.MethodJWT, Groups: groups}
}

func key(id string, roles ...string) *pipeline.Principal {
	return &pipeline.Principal{ID: "key:" + id, Method: pipeline.MethodAPIKey, Roles: roles}
}

func mtls(id string) *pipeline.Principal {
	return &pipeline.Principal{ID: id, Method: pipeline.MethodMTLS}
}

func scoped(p *pipeline.Principal, s pipeline.Scopes) *pipeline.Principal {
	p.Scopes = s
	return p
}

func infer(model, version string) Action {
	return Action{Permission: Infer, Model: model, Version: version}
}

func allow(rule string) Decision { return Decision{Allow: true, Rule: rule} }
func deny(rule string) Decision  { return Decision{Rule: rule} }

type decideCase struct {
	name string
	p    *pipeline.Principal
	a    Action
	want Decision
}

func runDecide(t *testing.T, pol *Policy, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pol.Decide(tc.p, tc.a); got != tc.want {
				t.Errorf("Decide(%+v, %+v) = %+v, want %+v", tc.p, tc.a, got, tc.want)
			}
		})
	}
}

// TestDecideExample runs principals of every kind against the example
// policy in testdata/policy.
func TestDecideExample(t *testing.T) {
	pol := examplePolicy(t)
	runDecide(t, pol, []decideCase{
		// Who is not authenticated is refused before anything else.
		{"nil principal", nil, infer("digits", ""), deny(RuleUnauthenticated)},
		{"method none", &pipeline.Principal{ID: "jwt:alice", Method: pipeline.MethodNone}, infer("digits", ""), deny(RuleUnauthenticated)},
		{"empty ID", &pipeline.Principal{Method: pipeline.MethodJWT}, infer("digits", ""), deny(RuleUnauthenticated)},

		// Exact principal IDs of each kind.
		{"jwt subject", jwt("alice"), infer("digits", "1"), allow("role:scorer")},
		{"jwt subject, pattern model", jwt("alice"), infer("fraud-eu", ""), allow("role:scorer")},
		{"jwt subject, model outside role", jwt("alice"), infer("secret-x", ""), deny(RuleDefaultDeny)},
		{"jwt subject, permission outside role", jwt("alice"), Action{Permission: Admin}, deny(RuleDefaultDeny)},
		{"api key", key("k-batch-7f3a"), infer("digits", ""), allow("role:scorer")},
		{"other api key", key("k-batch-7f3b"), infer("digits", ""), deny(RuleDefaultDeny)},
		{"spiffe ID", mtls("spiffe://example.org/ns/prod/sa/scorer"), infer("digits", ""), allow("role:scorer")},
		{"spiffe ID in another trust domain", mtls("spiffe://example.com/ns/prod/sa/scorer"), infer("digits", ""), deny(RuleDefaultDeny)},
		{"cert DN", mtls("cert:CN=batch,O=Example"), infer("digits", ""), allow("role:scorer")},
		{"cert DN differing in O", mtls("cert:CN=batch,O=Example2"), infer("digits", ""), deny(RuleDefaultDeny)},
		{"cert DN must not match as a key", key("CN=batch,O=Example"), infer("digits", ""), deny(RuleDefaultDeny)},

		// SPIFFE patterns: one segment per "*", literal trust domain.
		{"spiffe pattern", mtls("spiffe://example.org/ns/canary/sa/worker"), infer("fraud-eu", "2"), allow("role:fraud-v2")},
		{"spiffe pattern, other version", mtls("spiffe://example.org/ns/canary/sa/worker"), infer("fraud-eu", "3"), deny(RuleDefaultDeny)},
		{"spiffe pattern does not cross /", mtls("spiffe://example.org/ns/canary/sa/worker/x"), infer("fraud-eu", "2"), deny(RuleDefaultDeny)},
		{"spiffe pattern, dot-dot segment", mtls("spiffe://example.org/ns/canary/sa/.."), infer("fraud-eu", "2"), deny(RuleDefaultDeny)},
		{"spiffe pattern, other trust domain", mtls("spiffe://evil.org/ns/canary/sa/worker"), infer("fraud-eu", "2"), deny(RuleDefaultDeny)},
		{"spiffe pattern, percent-encoded", mtls("spiffe://example.org/ns/canary/sa/%2e%2e"), infer("fraud-eu", "2"), deny(RuleDefaultDeny)},

		// Groups.
		{"group binding", jwt("carol", "ml-team"), infer("fraud-us", ""), allow("role:scorer")},
		{"second group grants", jwt("erin", "finance", "sre"), Action{Permission: Admin}, allow("role:operator")},
		{"unbound group", jwt("frank", "finance"), infer("digits", ""), deny(RuleDefaultDeny)},
		{"group name is not a subject", jwt("ml-team"), infer("digits", ""), deny(RuleDefaultDeny)},

		// "*" binds any authenticated principal.
		{"anyone may list", jwt("frank"), Action{Permission: List}, allow("role:browser")},
		{"anyone may read metadata", key("unknown"), Action{Permission: Metadata, Model: "secret-x"}, allow("role:browser")},

		// Deny rules win over every grant.
		{"deny wins over group grant", jwt("dave", "ml-team", "contractors"), infer("secret-x", ""), deny("deny:contractors-no-secret-models")},
		{"deny wins over anyone grant", jwt("dave", "contractors"), Action{Permission: Metadata, Model: "secret-x"}, deny("deny:contractors-no-secret-models")},
		{"deny leaves other models", jwt("dave", "ml-team", "contractors"), infer("digits", ""), allow("role:scorer")},
		{"scoped deny leaves the unscoped listing", jwt("dave", "contractors"), Action{Permission: List}, allow("role:browser")},
		{"deny wins over credential roles", key("k-old-19c2", "operator"), Action{Permission: Admin}, deny("deny:revoked-key-k-old-19c2")},
		{"unscoped deny covers model-less actions", key("k-old-19c2"), Action{Permission: List}, deny("deny:revoked-key-k-old-19c2")},

		// Roles the credential carries.
		{"credential role defined in policy", key("k-audit", "auditor"), Action{Permission: AuditRead}, allow("role:auditor")},
		{"credential role grants only its permissions", key("k-audit", "auditor"), Action{Permission: Admin}, deny(RuleDefaultDeny)},
		{"credential role undefined in policy", key("k-x", "superuser"), Action{Permission: Admin}, deny(RuleDefaultDeny)},
		{"credential role name is case-sensitive", key("k-x", "Operator"), Action{Permission: Admin}, deny(RuleDefaultDeny)},

		// Scopes narrow whatever roles grant.
		{"scope narrows a * role", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: Metadata, Model: "fraud-eu"}, deny(RuleScopeModels)},
		{"scope admits its models", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: Metadata, Model: "digits"}, allow("role:browser")},
		{"scope pattern", scoped(jwt("alice"), pipeline.Scopes{Models: []string{"fraud-e*"}}), infer("fraud-eu", ""), allow("role:scorer")},
		{"scope pattern excludes", scoped(jwt("alice"), pipeline.Scopes{Models: []string{"fraud-e*"}}), infer("fraud-us", ""), deny(RuleScopeModels)},
		{"scope does not widen", scoped(jwt("alice"), pipeline.Scopes{Models: []string{"*"}}), infer("secret-x", ""), deny(RuleDefaultDeny)},
		{"malformed scope pattern matches nothing", scoped(jwt("alice"), pipeline.Scopes{Models: []string{"digits["}}), infer("digits", ""), deny(RuleScopeModels)},
		{"deny is checked before scope", scoped(jwt("dave", "contractors"), pipeline.Scopes{Models: []string{"digits"}}), infer("secret-x", ""), deny("deny:contractors-no-secret-models")},
		{"scoped credential may call the listing", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: List}, allow("role:browser")},
		{"scoped credential may not admin", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: Admin}, deny(RuleScopeModels)},
		{"scoped credential may admin a model in scope", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: Admin, Model: "digits"}, allow("role:operator")},
		{"scoped credential may not admin a model out of scope", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"digits"}}), Action{Permission: Admin, Model: "fraud-eu"}, deny(RuleScopeModels)},
		{"scope * admits admin", scoped(key("k-s", "operator"), pipeline.Scopes{Models: []string{"*"}}), Action{Permission: Admin}, allow("role:operator")},

		// Malformed actions are refused before any rule.
		{"unknown permission", jwt("bob"), Action{Permission: "write"}, deny(RuleInvalidAction)},
		{"empty permission", jwt("bob"), Action{}, deny(RuleInvalidAction)},
		{"infer without model", jwt("alice"), Action{Permission: Infer}, deny(RuleInvalidAction)},
		{"metadata without model", jwt("bob"), Action{Permission: Metadata}, deny(RuleInvalidAction)},
		{"version without model", jwt("bob"), Action{Permission: List, Version: "1"}, deny(RuleInvalidAction)},
		{"non-canonical version", jwt("alice"), infer("digits", "01"), deny(RuleInvalidAction)},
		{"zero version", jwt("alice"), infer("digits", "0"), deny(RuleInvalidAction)},
		{"version *", jwt("alice"), infer("digits", "*"), deny(RuleInvalidAction)},
		{"model with slash", jwt("alice"), infer("digits/../secret-x", ""), deny(RuleInvalidAction)},
		{"model with percent", jwt("bob"), Action{Permission: Metadata, Model: "%2e%2e"}, deny(RuleInvalidAction)},
		{"model dot-dot", jwt("bob"), Action{Permission: Metadata, Model: ".."}, deny(RuleInvalidAction)},
		{"model is a pattern", jwt("bob"), Action{Permission: Metadata, Model: "*"}, deny(RuleInvalidAction)},
		{"nil principal before invalid action", nil, Action{Permission: "write"}, deny(RuleUnauthenticated)},
	})
}

// TestDecideNoOverMatch checks that model patterns match exactly what
// path.Match says and nothing near it.
func TestDecideNoOverMatch(t *testing.T) {
	pol := mustParse(t, `
roles:
  r:
    permissions: [infer]
    models: ["digits", "fraud-*", "v?"]
bindings:
  - role: r
    principals: ["jwt:alice"]
`)
	alice := jwt("alice")
	for model, want := range map[string]Decision{
		"digits":                  allow("role:r"),
		"digits2":                 deny(RuleDefaultDeny),
		"digits.":                 deny(RuleDefaultDeny),
		"digits..":                deny(RuleDefaultDeny),
		"Digits":                  deny(RuleDefaultDeny),
		"xdigits":                 deny(RuleDefaultDeny),
		"fraud-":                  allow("role:r"),
		"fraud-eu":                allow("role:r"),
		"fraud":                   deny(RuleDefaultDeny),
		"fraud_eu":                deny(RuleDefaultDeny),
		"v1":                      allow("role:r"),
		"v12":                     deny(RuleDefaultDeny),
		"fraud-eu/../x":           deny(RuleInvalidAction),
		"fraud-%2e%2e":            deny(RuleInvalidAction),
		"digits%00":               deny(RuleInvalidAction),
		"digits\x00":              deny(RuleInvalidAction),
		"digits ":                 deny(RuleInvalidAction),
		"-digits":                 deny(RuleInvalidAction),
		".digits":                 deny(RuleInvalidAction),
		"fraud-\u00e9":            deny(RuleInvalidAction),
		string(make([]byte, 129)): deny(RuleInvalidAction),
	} {
		t.Run(model, func(t *testing.T) {
			if got := pol.Decide(alice, infer(model, "")); got != want {
				t.Errorf("Decide(infer %q) = %+v, want %+v", model, got, want)
			}
		})
	}
}

// TestDecideVersions checks version-restricted roles and deny rules.
func TestDecideVersions(t *testing.T) {
	pol := mustParse(t, `
roles:
  pinned:
    permissions: [infer, metadata, list]
    models: ["fraud"]
    versions: ["2", "3"]
  any-version:
    permissions: [infer]
    models: ["digits"]
    versions: ["*"]
bindings:
  - role: pinned
    principals: ["jwt:alice"]
  - role: any-version
    principals: ["jwt:alice"]
deny:
  - name: digits-v1-withdrawn
    principals: ["*"]
    permissions: [infer]
    models: ["digits"]
    versions: ["1"]
`)
	alice := jwt("alice")
	runDecide(t, pol, []decideCase{
		{"pinned version", alice, infer("fraud", "2"), allow("role:pinned")},
		{"other pinned version", alice, infer("fraud", "3"), allow("role:pinned")},
		{"unlisted version", alice, infer("fraud", "4"), deny(RuleDefaultDeny)},
		{"no version is not granted by a pinned role", alice, infer("fraud", ""), deny(RuleDefaultDeny)},
		{"model metadata not granted by a pinned role", alice, Action{Permission: Metadata, Model: "fraud"}, deny(RuleDefaultDeny)},
		{"version metadata", alice, Action{Permission: Metadata, Model: "fraud", Version: "2"}, allow("role:pinned")},
		{"pinned role may call the listing", alice, Action{Permission: List}, allow("role:pinned")},
		{"versions * grants any version", alice, infer("digits", "7"), allow("role:any-version")},
		{"versions * grants no version", alice, infer("digits", ""), deny("deny:digits-v1-withdrawn")},
		{"deny on a version", alice, infer("digits", "1"), deny("deny:digits-v1-withdrawn")},
		{"deny on a version leaves others", alice, infer("digits", "2"), allow("role:any-version")},
		{"deny on a version covers an unnamed version", alice, infer("digits", ""), deny("deny:digits-v1-withdrawn")},
		{"version 10 is not version 1", alice, infer("digits", "10"), allow("role:any-version")},
	})
}

// TestDenyOrder checks that the first matching deny rule in the file names
// the decision, however the principal matched it.
func TestDenyOrder(t *testing.T) {
	pol := mustParse(t, `
roles:
  all:
    permissions: [infer, metadata, list, admin, audit:read]
    models: ["*"]
bindings:
  - role: all
    principals: ["*"]
deny:
  - name: first-by-group
    principals: ["group:g"]
    permissions: [infer]
    models: ["a*"]
  - name: second-by-id
    principals: ["jwt:alice", "group:g"]
    permissions: [infer, metadata]
  - name: third-by-anyone
    principals: ["*"]
    permissions: [infer, metadata]
    models: ["ab"]
  - name: fourth-by-spiffe
    principals: ["spiffe://example.org/*"]
    permissions: [admin]
`)
	runDecide(t, pol, []decideCase{
		{"group rule listed first wins over id rule", jwt("alice", "g"), infer("ab", ""), deny("deny:first-by-group")},
		{"id rule when group rule does not apply", jwt("alice", "g"), infer("b", ""), deny("deny:second-by-id")},
		{"id rule before anyone rule", jwt("alice"), Action{Permission: Metadata, Model: "ab"}, deny("deny:second-by-id")},
		{"anyone rule", jwt("bob"), Action{Permission: Metadata, Model: "ab"}, deny("deny:third-by-anyone")},
		{"anyone rule, other model", jwt("bob"), Action{Permission: Metadata, Model: "abc"}, allow("role:all")},
		{"permission no rule denies", jwt("bob"), Action{Permission: AuditRead}, allow("role:all")},
		{"spiffe pattern deny", mtls("spiffe://example.org/w"), Action{Permission: Admin}, deny("deny:fourth-by-spiffe")},
		{"spiffe pattern deny, deeper ID", mtls("spiffe://example.org/w/x"), Action{Permission: Admin}, allow("role:all")},
		{"spiffe pattern deny, trust domain only", mtls("spiffe://example.org"), Action{Permission: Admin}, allow("role:all")},
	})
}

// TestGrantOrder checks which role Rule names when several grant.
func TestGrantOrder(t *testing.T) {
	pol := mustParse(t, `
roles:
  by-anyone:
    permissions: [infer]
    models: ["*"]
  by-group:
    permissions: [infer]
    models: ["*"]
  by-id:
    permissions: [infer]
    models: ["*"]
  own:
    permissions: [infer, metadata]
    models: ["*"]
bindings:
  - role: by-anyone
    principals: ["*"]
  - role: by-group
    principals: ["group:g"]
  - role: by-id
    principals: ["jwt:alice"]
  - role: by-id
    principals: ["jwt:alice"]
`)
	runDecide(t, pol, []decideCase{
		{"id first", jwt("alice", "g"), infer("m", ""), allow("role:by-id")},
		{"then group", jwt("bob", "g"), infer("m", ""), allow("role:by-group")},
		{"then anyone", jwt("bob"), infer("m", ""), allow("role:by-anyone")},
		{"then credential roles", key("k", "own"), Action{Permission: Metadata, Model: "m"}, allow("role:own")},
	})
}

func TestNoPolicyDeniesEverything(t *testing.T) {
	var zero Authorizer
	var nilAuthz *Authorizer
	for name, decide := range map[string]func(*pipeline.Principal, Action) Decision{
		"nil policy":     (*Policy)(nil).Decide,
		"New(nil)":       New(nil).Decide,
		"zero value":     zero.Decide,
		"nil authorizer": nilAuthz.Decide,
		"roles: {}":      mustParse(t, "roles: {}\n").Decide,
	} {
		t.Run(name, func(t *testing.T) {
			for _, a := range []Action{{Permission: Admin}, {Permission: List}, infer("digits", "1"), {Permission: AuditRead}} {
				if got := decide(key("k", "operator"), a); got != deny(RuleDefaultDeny) {
					t.Errorf("Decide(%+v) = %+v, want default-deny", a, got)
				}
			}
			if got := decide(nil, Action{Permission: Admin}); got != deny(RuleUnauthenticated) {
				t.Errorf("Decide(nil) = %+v, want unauthenticated", got)
			}
		})
	}
	if got := nilAuthz.Visible(key("k"), []string{"digits"}); len(got) != 0 {
		t.Errorf("Visible on nil Authorizer = %q, want none", got)
	}
}

func TestCheckBatch(t *testing.T) {
	limited := scoped(key("k"), pipeline.Scopes{MaxBatch: 8})
	for _, tc := range []struct {
		name  string
		p     *pipeline.Principal
		batch int64
		want  Decision
	}{
		{"no limit", key("k"), 1 << 40, allow(RuleScopeMaxBatch)},
		{"under limit", limited, 7, allow(RuleScopeMaxBatch)},
		{"at limit", limited, 8, allow(RuleScopeMaxBatch)},
		{"over limit", limited, 9, deny(RuleScopeMaxBatch)},
		{"empty batch", limited, 0, allow(RuleScopeMaxBatch)},
		{"negative batch", limited, -1, deny(RuleInvalidAction)},
		{"negative limit denies", scoped(key("k"), pipeline.Scopes{MaxBatch: -1}), 1, deny(RuleScopeMaxBatch)},
		{"nil principal", nil, 1, deny(RuleUnauthenticated)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CheckBatch(tc.p, tc.batch); got != tc.want {
				t.Errorf("CheckBatch(%d) = %+v, want %+v", tc.batch, got, tc.want)
			}
		})
	}
}

func TestVisible(t *testing.T) {
	pol := mustParse(t, `
roles:
  scorer:
    permissions: [infer]
    models: ["*"]
  lister:
    permissions: [list]
    models: ["fraud-*"]
  reader:
    permissions: [metadata]
    models: ["digits"]
bindings:
  - role: scorer
    principals: ["jwt:alice"]
  - role: lister
    principals: ["group:g"]
  - role: reader
    principals: ["group:g", "jwt:carol"]
deny:
  - name: no-fraud-eu
    principals: ["jwt:dave"]
    permissions: [list]
    models: ["fraud-eu"]
`)
	models := []string{"digits", "fraud-eu", "fraud-us", "secret", "../etc", "digits2"}
	for _, tc := range []struct {
		name string
		p    *pipeline.Principal
		want []string
	}{
		{"infer alone shows nothing", jwt("alice"), nil},
		{"list and metadata roles", jwt("bob", "g"), []string{"digits", "fraud-eu", "fraud-us"}},
		{"metadata only", jwt("carol"), []string{"digits"}},
		{"deny hides", jwt("dave", "g"), []string{"digits", "fraud-us"}},
		{"scope hides", scoped(jwt("erin", "g"), pipeline.Scopes{Models: []string{"fraud-*"}}), []string{"fraud-eu", "fraud-us"}},
		{"nil principal", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(models)
			got := pol.Visible(tc.p, in)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Visible = %q, want %q", got, tc.want)
			}
			if !slices.Equal(in, models) {
				t.Errorf("Visible modified its input: %q", in)
			}
		})
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	pol := examplePolicy(t)
	for _, tc := range []struct {
		p *pipeline.Principal
		a Action
	}{
		{mtls("spiffe://example.org/ns/canary/sa/worker"), infer("fraud-eu", "2")},
		{jwt("carol", "a", "b", "ml-team"), infer("fraud-eu", "2")},
		{jwt("dave", "contractors"), infer("secret-x", "")},
		{scoped(key("k", "operator"), pipeline.Scopes{Models: []string{"x*", "digits"}}), Action{Permission: Metadata, Model: "digits"}},
		{mtls("cert:CN=nobody"), Action{Permission: Admin}},
	} {
		allocs := testing.AllocsPerRun(100, func() { pol.Decide(tc.p, tc.a) })
		if allocs != 0 {
			t.Errorf("Decide(%s, %+v) allocates %v times, want 0", tc.p.ID, tc.a, allocs)
		}
	}
}

func TestSPIFFEIDs(t *testing.T) {
	for id, want := range map[string]bool{
		"spiffe://example.org":                               true,
		"spiffe://example.org/ns/prod/sa/x":                  true,
		"spiffe://ex-ample_1.org/a.b-c_d":                    true,
		"spiffe://Example.org/x":                             false, // trust domains are lowercase
		"spiffe://example.org/":                              false,
		"spiffe://example.org//x":                            false,
		"spiffe://example.org/x/":                            false,
		"spiffe://example.org/./x":                           false,
		"spiffe://example.org/../x":                          false,
		"spiffe://example.org/%2e%2e/x":                      false,
		"spiffe://example.org/x?y":                           false,
		"spiffe://example.org/x*":                            false,
		"spiffe://user@example.org/x":                        false,
		"spiffe://example.org:443/x":                         false,
		"spiffe:///x":                                        false,
		"SPIFFE://example.org/x":                             false,
		"https://example.org/x":                              false,
		"spiffe://example.org/" + string(make([]byte, 2048)): false,
	} {
		if got := validSPIFFEID(id); got != want {
			t.Errorf("validSPIFFEID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestManyLiteralModels covers roles listing more literal names than a
// linear scan handles well (they are kept in a map).
func TestManyLiteralModels(t *testing.T) {
	var b strings.Builder
	b.WriteString("roles:\n  r:\n    permissions: [infer]\n    models: [\"p-*\"")
	for i := range 20 {
		fmt.Fprintf(&b, ", \"m%d\"", i)
	}
	b.WriteString("]\nbindings:\n  - {role: r, principals: [\"jwt:alice\"]}\n")
	pol := mustParse(t, b.String())
	for model, want := range map[string]bool{"m0": true, "m19": true, "m20": false, "m1x": false, "p-1": true, "m": false} {
		if got := pol.Decide(jwt("alice"), infer(model, "")).Allow; got != want {
			t.Errorf("infer %s: allow %v, want %v", model, got, want)
		}
	}
}
