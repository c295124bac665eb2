package authz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// valid is a policy that parses; the error cases below each break it in
// one place.
const valid = `roles:
  scorer:
    permissions: [infer, metadata]
    models: ["digits", "fraud-*"]
bindings:
  - role: scorer
    principals: ["jwt:alice"]
deny:
  - name: no-secret
    principals: ["group:contractors"]
    permissions: [infer]
    models: ["secret-*"]
`

func TestParseExampleAndValid(t *testing.T) {
	examplePolicy(t)
	pol := mustParse(t, valid)
	if len(pol.Digest()) != 64 {
		t.Errorf("Digest() = %q, want 64 hex digits", pol.Digest())
	}
}

// TestParseErrors checks that every kind of mistake is refused, with the
// line and field where the policy checks (rather than yaml.v3) find it.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		src       string
		wantLine  int    // 0: not a *PolicyError, or no line
		wantField string // "" when not checked
	}{
		// Decoding: strict YAML.
		{"empty file", "", 0, ""},
		{"comments only", "# nothing\n", 0, ""},
		{"null document", "---\n", 0, ""},
		{"not a mapping", "- roles\n", 0, ""},
		{"syntax error", "roles: [\n", 0, ""},
		{"unknown top-level field", valid + "allow: []\n", 0, ""},
		{"unknown role field", strings.Replace(valid, "    models:", "    model: [x]\n    models:", 1), 0, ""},
		{"unknown binding field", strings.Replace(valid, "  - role: scorer", "  - role: scorer\n    principal: jwt:bob", 1), 0, ""},
		{"unknown deny field", strings.Replace(valid, "  - name: no-secret", "  - name: no-secret\n    except: []", 1), 0, ""},
		{"duplicate role name", strings.Replace(valid, "roles:\n", "roles:\n  scorer:\n    permissions: [list]\n    models: [\"*\"]\n", 1), 0, ""},
		{"permissions not a list", strings.Replace(valid, "[infer, metadata]", "infer", 1), 0, ""},
		{"two documents", valid + "---\nroles: {}\n", 13, ""},
		{"null list item", strings.Replace(valid, "[infer, metadata]", "[infer, ~]", 1), 3, ""},

		// Roles.
		{"bad role name", strings.Replace(valid, "  scorer:", "  \"sc orer\":", 1) + "", 2, "roles.sc orer"},
		{"role name too long", strings.Replace(valid, "  scorer:", "  "+strings.Repeat("r", 65)+":", 1), 2, "roles." + strings.Repeat("r", 65)},
		{"unknown permission", strings.Replace(valid, "[infer, metadata]", "[infer, infr]", 1), 3, "roles.scorer.permissions[1]"},
		{"permission case", strings.Replace(valid, "[infer, metadata]", "[Infer]", 1), 3, "roles.scorer.permissions[0]"},
		{"duplicate permission", strings.Replace(valid, "[infer, metadata]", "[infer, infer]", 1), 3, "roles.scorer.permissions[1]"},
		{"no permissions", strings.Replace(valid, "    permissions: [infer, metadata]\n", "", 1), 2, "roles.scorer.permissions"},
		{"empty permissions", strings.Replace(valid, "[infer, metadata]", "[]", 1), 3, "roles.scorer.permissions"},
		{"null role", "roles:\n  scorer:\n", 2, "roles.scorer.permissions"},
		{"no models", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "", 1), 2, "roles.scorer.models"},
		{"empty models", strings.Replace(valid, `["digits", "fraud-*"]`, "[]", 1), 4, "roles.scorer.models"},
		{"empty model pattern", strings.Replace(valid, `"digits"`, `""`, 1), 4, "roles.scorer.models[0]"},
		{"bad pattern syntax", strings.Replace(valid, `"digits"`, `"digits["`, 1), 4, "roles.scorer.models[0]"},
		{"pattern with slash", strings.Replace(valid, `"digits"`, `"team/*"`, 1), 4, "roles.scorer.models[0]"},
		{"pattern with percent", strings.Replace(valid, `"digits"`, `"%2e*"`, 1), 4, "roles.scorer.models[0]"},
		{"literal that is no model name", strings.Replace(valid, `"digits"`, `"../digits"`, 1), 4, "roles.scorer.models[0]"},
		{"literal with leading dot", strings.Replace(valid, `"digits"`, `".digits"`, 1), 4, "roles.scorer.models[0]"},
		{"star with others", strings.Replace(valid, `"digits"`, `"*"`, 1), 4, "roles.scorer.models[0]"},
		{"duplicate model", strings.Replace(valid, `"fraud-*"`, `"digits"`, 1), 4, "roles.scorer.models[1]"},
		{"bad version", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "    models: [\"digits\"]\n    versions: [\"v1\"]\n", 1), 5, "roles.scorer.versions[0]"},
		{"version with leading zero", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "    models: [\"digits\"]\n    versions: [\"01\"]\n", 1), 5, "roles.scorer.versions[0]"},
		{"version zero", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "    models: [\"digits\"]\n    versions: [0]\n", 1), 5, "roles.scorer.versions[0]"},
		{"empty versions", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "    models: [\"digits\"]\n    versions: []\n", 1), 5, "roles.scorer.versions"},
		{"version star with others", strings.Replace(valid, "    models: [\"digits\", \"fraud-*\"]\n", "    models: [\"digits\"]\n    versions: [\"1\", \"*\"]\n", 1), 5, "roles.scorer.versions[1]"},
		{"admin restricted to models", strings.Replace(valid, "[infer, metadata]", "[infer, admin]", 1), 2, "roles.scorer"},
		{"audit:read restricted to versions", "roles:\n  a:\n    permissions: [audit:read]\n    models: [\"*\"]\n    versions: [\"1\"]\n", 2, "roles.a"},

		// Bindings.
		{"binding to undefined role", strings.Replace(valid, "  - role: scorer", "  - role: scorrer", 1), 6, "bindings[0].role"},
		{"binding without role", strings.Replace(valid, "  - role: scorer\n    principals:", "  - principals:", 1), 6, "bindings[0].role"},
		{"binding without principals", strings.Replace(valid, "    principals: [\"jwt:alice\"]\n", "", 1), 6, "bindings[0].principals"},
		{"binding with empty principals", strings.Replace(valid, `["jwt:alice"]`, "[]", 1), 7, "bindings[0].principals"},
		{"empty principal", strings.Replace(valid, `["jwt:alice"]`, `[""]`, 1), 7, "bindings[0].principals[0]"},
		{"unknown principal kind", strings.Replace(valid, `"jwt:alice"`, `"user:alice"`, 1), 7, "bindings[0].principals[0]"},
		{"no kind at all", strings.Replace(valid, `"jwt:alice"`, `"alice"`, 1), 7, "bindings[0].principals[0]"},
		{"empty key id", strings.Replace(valid, `"jwt:alice"`, `"key:"`, 1), 7, "bindings[0].principals[0]"},
		{"empty group", strings.Replace(valid, `"jwt:alice"`, `"group:"`, 1), 7, "bindings[0].principals[0]"},
		{"space after kind", strings.Replace(valid, `"jwt:alice"`, `"jwt: alice"`, 1), 7, "bindings[0].principals[0]"},
		{"trailing space", strings.Replace(valid, `"jwt:alice"`, `"jwt:alice "`, 1), 7, "bindings[0].principals[0]"},
		{"control character", strings.Replace(valid, `"jwt:alice"`, `"jwt:al\nice"`, 1), 7, "bindings[0].principals[0]"},
		{"wildcard outside spiffe", strings.Replace(valid, `"jwt:alice"`, `"jwt:*"`, 1), 7, "bindings[0].principals[0]"},
		{"wildcard in group", strings.Replace(valid, `"jwt:alice"`, `"group:ml-*"`, 1), 7, "bindings[0].principals[0]"},
		{"wildcard in cert DN", strings.Replace(valid, `"jwt:alice"`, `"cert:CN=*,O=Example"`, 1), 7, "bindings[0].principals[0]"},
		{"duplicate principal", strings.Replace(valid, `["jwt:alice"]`, `["jwt:alice", "jwt:alice"]`, 1), 7, "bindings[0].principals[1]"},
		{"spiffe trailing slash", strings.Replace(valid, `"jwt:alice"`, `"spiffe://example.org/ns/"`, 1), 7, "bindings[0].principals[0]"},
		{"spiffe uppercase trust domain", strings.Replace(valid, `"jwt:alice"`, `"spiffe://Example.org/ns"`, 1), 7, "bindings[0].principals[0]"},
		{"spiffe dot-dot", strings.Replace(valid, `"jwt:alice"`, `"spiffe://example.org/ns/../x"`, 1), 7, "bindings[0].principals[0]"},
		{"spiffe pattern in trust domain", strings.Replace(valid, `"jwt:alice"`, `"spiffe://*.example.org/ns"`, 1), 7, "bindings[0].principals[0]"},
		{"spiffe pattern with class", strings.Replace(valid, `"jwt:alice"`, `"spiffe://example.org/ns/[ab]*"`, 1), 7, "bindings[0].principals[0]"},
		{"spiffe pattern with escape", strings.Replace(valid, `"jwt:alice"`, `"spiffe://example.org/ns/\\*"`, 1), 7, "bindings[0].principals[0]"},

		// Deny rules.
		{"deny without name", strings.Replace(valid, "  - name: no-secret\n    principals:", "  - principals:", 1), 9, "deny[0].name"},
		{"deny with bad name", strings.Replace(valid, "name: no-secret", "name: \"no secret\"", 1), 9, "deny[0].name"},
		{"duplicate deny name", valid + "  - name: no-secret\n    principals: [\"*\"]\n    permissions: [admin]\n", 13, "deny[1].name"},
		{"deny without principals", strings.Replace(valid, "    principals: [\"group:contractors\"]\n", "", 1), 9, "deny[0].principals"},
		{"deny without permissions", strings.Replace(valid, "    permissions: [infer]\n", "", 1), 9, "deny[0].permissions"},
		{"deny with unknown permission", strings.Replace(valid, "permissions: [infer]\n", "permissions: [delete]\n", 1), 11, "deny[0].permissions[0]"},
		{"deny with empty models", strings.Replace(valid, `["secret-*"]`, "[]", 1), 12, "deny[0].models"},
		{"deny with bad model", strings.Replace(valid, `["secret-*"]`, `["secret/*"]`, 1), 12, "deny[0].models[0]"},
		{"deny scoped admin", strings.Replace(valid, "permissions: [infer]\n", "permissions: [infer, admin]\n", 1), 9, "deny[0]"},
		{"deny versioned audit:read", "roles: {}\ndeny:\n  - name: d\n    principals: [\"*\"]\n    permissions: [audit:read]\n    versions: [\"1\"]\n", 3, "deny[0]"},
		{"deny with bad principal", strings.Replace(valid, `"group:contractors"`, `"contractors"`, 1), 10, "deny[0].principals[0]"},

		{"too large", valid + "# " + strings.Repeat("x", MaxPolicySize) + "\n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := Parse([]byte(tc.src))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v\n%s", pol, tc.src)
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				if tc.wantLine != 0 || tc.wantField != "" {
					t.Fatalf("got %T %v, want *PolicyError at line %d, field %q", err, err, tc.wantLine, tc.wantField)
				}
				return
			}
			if pe.Line != tc.wantLine || (tc.wantField != "" && pe.Field != tc.wantField) {
				t.Errorf("got line %d, field %q (%v); want line %d, field %q", pe.Line, pe.Field, err, tc.wantLine, tc.wantField)
			}
		})
	}
}

func TestParseEmptyIsErrEmptyPolicy(t *testing.T) {
	for _, src := range []string{"", "\n\n", "# comment\n", "---\n", "~\n"} {
		if _, err := Parse([]byte(src)); !errors.Is(err, ErrEmptyPolicy) {
			t.Errorf("Parse(%q) = %v, want ErrEmptyPolicy", src, err)
		}
	}
}

// TestParseAccepts lists forms that are valid and easy to doubt.
func TestParseAccepts(t *testing.T) {
	for name, src := range map[string]string{
		"deny everything":          "roles: {}\n",
		"roles only":               "roles:\n  r:\n    permissions: [list]\n    models: [\"*\"]\n",
		"unquoted version numbers": "roles:\n  r:\n    permissions: [infer]\n    models: [m]\n    versions: [1, 12]\n",
		"version star":             "roles:\n  r:\n    permissions: [admin]\n    models: [\"*\"]\n    versions: [\"*\"]\n",
		"unbound role":             "roles:\n  r:\n    permissions: [infer]\n    models: [m]\n",
		"same binding twice":       "roles:\n  r:\n    permissions: [infer]\n    models: [m]\nbindings:\n  - {role: r, principals: [\"jwt:a\"]}\n  - {role: r, principals: [\"jwt:a\"]}\n",
		"all selector kinds": "roles:\n  r:\n    permissions: [infer]\n    models: [m]\nbindings:\n  - role: r\n    principals: [\"*\", \"key:k1\", \"jwt:a@b.c\", \"cert:CN=x\\\\,y,O=Z\", \"group:/org/team\", " +
			"\"spiffe://example.org\", \"spiffe://example.org/ns/*/sa/w?\"]\n",
		"global deny without models":   "roles: {}\ndeny:\n  - {name: d, principals: [\"*\"], permissions: [admin, audit:read]}\n",
		"global deny with models star": "roles: {}\ndeny:\n  - {name: d, principals: [\"*\"], permissions: [admin], models: [\"*\"], versions: [\"*\"]}\n",
		"class pattern":                "roles:\n  r:\n    permissions: [infer]\n    models: [\"m[0-9]\", \"n[^x]\", \"a\\\\-b\"]\n",
		"anchors":                      "roles:\n  r: &r\n    permissions: [infer]\n    models: [m]\n  s: *r\n",
	} {
		t.Run(name, func(t *testing.T) {
			mustParse(t, src)
		})
	}
}

// TestRoleOrderFollowsFile checks that role indexes (and so which role
// Rule names when several grant) follow the file, not Go's map order.
func TestRoleOrderFollowsFile(t *testing.T) {
	var b strings.Builder
	b.WriteString("roles:\n")
	names := []string{"zeta", "alpha", "mid", "beta", "omega", "gamma"}
	for _, n := range names {
		b.WriteString("  " + n + ":\n    permissions: [infer]\n    models: [\"*\"]\n")
	}
	b.WriteString("bindings:\n")
	for i := len(names) - 1; i >= 0; i-- {
		b.WriteString("  - role: " + names[i] + "\n    principals: [\"jwt:a\"]\n")
	}
	for range 20 {
		pol := mustParse(t, b.String())
		if got := pol.Decide(jwt("a"), infer("m", "")); got != allow("role:zeta") {
			t.Fatalf("got %+v, want role:zeta, the first role in the file", got)
		}
	}
}

func TestParseFileRefusesWorldWritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(valid), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(path); err == nil {
		t.Error("ParseFile accepted a world-writable policy")
	}
	if _, err := ParseFile(filepath.Dir(path)); err == nil {
		t.Error("ParseFile accepted a directory")
	}
}
