package authz

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// benchPolicy is a policy of the size the benchmark targets: 50 roles, 50
// bindings of several principals each, 10 deny rules, SPIFFE patterns.
func benchPolicy(tb testing.TB) *Policy {
	var b strings.Builder
	b.WriteString("roles:\n")
	for i := range 50 {
		fmt.Fprintf(&b, "  role-%d:\n    permissions: [infer, metadata]\n    models: [\"model-%d\", \"team%d-*\", \"m?-%d\"]\n", i, i, i, i)
		if i%5 == 0 {
			b.WriteString("    versions: [\"1\", \"2\", \"3\"]\n")
		}
	}
	b.WriteString("bindings:\n")
	for i := range 50 {
		fmt.Fprintf(&b, "  - role: role-%d\n    principals: [\"jwt:user-%d\", \"key:k-%d\", \"group:group-%d\", \"cert:CN=svc-%d,O=Example\", \"spiffe://example.org/ns/ns-%d/sa/*\"]\n", i, i, i, i%20, i, i%10)
	}
	b.WriteString("deny:\n")
	for i := range 10 {
		fmt.Fprintf(&b, "  - name: deny-%d\n    principals: [\"group:group-%d\", \"jwt:user-%d\"]\n    permissions: [infer]\n    models: [\"secret-%d-*\"]\n", i, i, i*3, i)
	}
	return mustParse(tb, b.String())
}

// BenchmarkDecide measures one decision against benchPolicy:
//
//	go test -run '^$' -bench Decide -benchmem ./internal/authz/
func BenchmarkDecide(b *testing.B) {
	pol := benchPolicy(b)
	groups := []string{"group-3", "group-7", "group-11"}
	for _, bc := range []struct {
		name  string
		p     *pipeline.Principal
		a     Action
		allow bool
	}{
		{"allow by id", jwt("user-3", groups...), infer("model-3", "1"), true},
		{"allow by group pattern", jwt("user-99", groups...), infer("team11-x", "1"), true},
		{"deny rule", jwt("user-3", groups...), infer("secret-3-x", ""), false},
		{"default deny", jwt("user-99", groups...), infer("nothing", "1"), false},
		{"allow by spiffe pattern", mtls("spiffe://example.org/ns/ns-4/sa/w"), infer("m1-44", "7"), true},
		{"allow by credential role", key("k-x", "role-20", "role-49"), infer("model-49", "1"), true},
		{"scoped", scoped(jwt("user-3", groups...), pipeline.Scopes{Models: []string{"model-*", "digits"}}), infer("model-3", "1"), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := pol.Decide(bc.p, bc.a); got.Allow != bc.allow {
				b.Fatalf("Decide = %+v, want allow %v", got, bc.allow)
			}
			b.ReportAllocs()
			for b.Loop() {
				pol.Decide(bc.p, bc.a)
			}
		})
	}
}

// BenchmarkDecideParallel measures Decide through an Authorizer from every
// CPU at once: it takes no lock.
func BenchmarkDecideParallel(b *testing.B) {
	a := New(benchPolicy(b))
	p := jwt("user-99", "group-3", "group-7", "group-11")
	act := infer("team11-x", "1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Decide(p, act)
		}
	})
}
