package access

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/authz"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

type memSink struct {
	mu      sync.Mutex
	recs    []Record
	failing error
}

func (s *memSink) Write(r *Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing != nil {
		return s.failing
	}
	s.recs = append(s.recs, *r)
	return nil
}

func (s *memSink) Event(kind, principal, detail string) error {
	return s.Write(&Record{Action: "event:" + kind, Principal: principal, Error: detail})
}

func (s *memSink) Healthy() error { s.mu.Lock(); defer s.mu.Unlock(); return s.failing }

// fixed authenticates "Bearer good" as key:k1 with role r, refuses
// "Bearer bad", and recognises nothing else.
type fixed struct{}

func (fixed) Method() string { return pipeline.MethodAPIKey }
func (fixed) Authenticate(_ context.Context, c authn.Credentials) (*pipeline.Principal, error) {
	switch c.Authorization {
	case "Bearer good":
		return &pipeline.Principal{ID: "key:k1", Method: pipeline.MethodAPIKey, Roles: []string{"r"},
			Scopes: pipeline.Scopes{MaxBatch: 4}}, nil
	case "Bearer bad":
		return nil, &authn.InvalidError{Method: pipeline.MethodAPIKey, Reason: "api key: unknown"}
	}
	return nil, authn.ErrNoCredential
}

func newGate(t *testing.T) (*Gate, *memSink) {
	t.Helper()
	pol, err := authz.Parse([]byte("roles:\n  r:\n    permissions: [infer]\n    models: [\"m\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &memSink{}
	return New(Options{Authn: authn.Chain{fixed{}}, Authz: authz.New(pol), Sink: s}), s
}

func kindOf(err error) apierr.Kind { k, _ := apierr.Public(err); return k }

func TestGate(t *testing.T) {
	g, s := newGate(t)
	ctx := context.Background()

	// Refusals are audited by Begin itself.
	for _, tc := range []struct{ auth, rule string }{{"", "authn:no-credential"}, {"Bearer bad", "authn:api key: unknown"}} {
		tk, err := g.Begin(ctx, Call{Transport: "rest", RequestID: "r-" + tc.auth, Creds: authn.Credentials{Authorization: tc.auth}})
		if tk != nil || kindOf(err) != apierr.Unauthenticated {
			t.Fatalf("%q: got %v %v, want Unauthenticated", tc.auth, tk, err)
		}
		r := s.recs[len(s.recs)-1]
		if r.RequestID != "r-"+tc.auth || r.Decision != Deny || r.Rule != tc.rule || r.Status != 401 {
			t.Errorf("%q: record %+v", tc.auth, r)
		}
	}

	// Allowed, then denied by role, then by batch scope.
	tk, err := g.Begin(ctx, Call{Transport: "grpc", RequestID: "ok", Creds: authn.Credentials{Authorization: "Bearer good"}})
	if err != nil || tk.Principal().ID != "key:k1" {
		t.Fatalf("Begin: %v %v", tk, err)
	}
	if err := tk.Authorize(authz.Infer, "m", ""); err != nil {
		t.Fatal(err)
	}
	if err := tk.CheckBatch(4); err != nil {
		t.Fatal(err)
	}
	if err := tk.Finish(200, ""); err != nil {
		t.Fatal(err)
	}
	if r := s.recs[len(s.recs)-1]; r.Decision != Allow || r.Rule != "role:r" || r.Principal != "key:k1" || r.Status != 200 {
		t.Errorf("allowed record %+v", r)
	}
	if err := tk.Finish(500, "again"); err != nil || len(s.recs) != 3 {
		t.Errorf("a second Finish wrote again: %v, %d records", err, len(s.recs))
	}

	tk, _ = g.Begin(ctx, Call{RequestID: "other", Creds: authn.Credentials{Authorization: "Bearer good"}})
	if err := tk.Authorize(authz.Infer, "other", ""); kindOf(err) != apierr.PermissionDenied {
		t.Errorf("other model: %v", err)
	}
	tk.Finish(403, "permission denied")
	tk, _ = g.Begin(ctx, Call{RequestID: "big", Creds: authn.Credentials{Authorization: "Bearer good"}})
	tk.Authorize(authz.Infer, "m", "")
	if err := tk.CheckBatch(5); kindOf(err) != apierr.PermissionDenied {
		t.Errorf("batch over scope: %v", err)
	}
	tk.Finish(403, "permission denied")
	if r := s.recs[len(s.recs)-1]; r.Decision != Deny || r.Rule != authz.RuleScopeMaxBatch {
		t.Errorf("batch record %+v", r)
	}

	// A request that never decided anything is audited as denied.
	tk, _ = g.Begin(ctx, Call{RequestID: "route", Creds: authn.Credentials{Authorization: "Bearer good"}})
	tk.Finish(404, "not found")
	if r := s.recs[len(s.recs)-1]; r.Decision != Deny || r.Rule != "no-decision" {
		t.Errorf("undecided record %+v", r)
	}

	// Fail closed: while the sink fails, Begin refuses before
	// authenticating, and Finish turns the response into 503.
	tk, _ = g.Begin(ctx, Call{RequestID: "late", Creds: authn.Credentials{Authorization: "Bearer good"}})
	tk.Authorize(authz.Infer, "m", "")
	s.failing = errors.New("disk full")
	if err := tk.Finish(200, ""); kindOf(err) != apierr.Unavailable {
		t.Errorf("Finish with the sink failing: %v, want Unavailable", err)
	}
	if _, err := g.Begin(ctx, Call{Creds: authn.Credentials{Authorization: "Bearer good"}}); kindOf(err) != apierr.Unavailable {
		t.Errorf("Begin with the sink failing: %v", err)
	}
	if g.Healthy() == nil {
		t.Error("gate healthy with the sink failing")
	}
	st := g.Stats()
	if st.RefusedAudit != 1 || st.AuditFailures != 1 || st.RefusedUnauthenticated != 2 {
		t.Errorf("stats %+v", st)
	}
	s.failing = nil
	if _, err := g.Begin(ctx, Call{Creds: authn.Credentials{Authorization: "Bearer good"}}); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestGateDisabled(t *testing.T) {
	s := &memSink{}
	g := New(Options{Disabled: true, Sink: s})
	tk, err := g.Begin(context.Background(), Call{RequestID: "x"})
	if err != nil || tk.Principal() != Anonymous {
		t.Fatal(tk, err)
	}
	if err := tk.Authorize(authz.Admin, "", ""); err != nil {
		t.Error(err)
	}
	tk.Finish(200, "")
	if r := s.recs[0]; r.Principal != "anonymous" || r.Rule != "auth-disabled" {
		t.Errorf("record %+v", r)
	}
}

func TestNoPolicyDeniesAll(t *testing.T) {
	g := New(Options{Authn: authn.Chain{fixed{}}})
	tk, err := g.Begin(context.Background(), Call{Creds: authn.Credentials{Authorization: "Bearer good"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Authorize(authz.Infer, "m", ""); kindOf(err) != apierr.PermissionDenied {
		t.Errorf("no policy: %v", err)
	}
}

// appendSink is a memSink that can also queue records without waiting.
type appendSink struct {
	memSink
	appended []string // request ids given to Append
}

func (s *appendSink) Append(r *Record) error {
	s.mu.Lock()
	s.appended = append(s.appended, r.RequestID)
	s.mu.Unlock()
	return s.Write(r)
}

// Refusals and errors go to a sink's Append (their answers disclose
// nothing, so they need not wait for the write); answers go to Write,
// and are sent only once it returns.
func TestGateAppendsRefusals(t *testing.T) {
	pol, err := authz.Parse([]byte("roles:\n  r:\n    permissions: [infer]\n    models: [\"m\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &appendSink{}
	g := New(Options{Authn: authn.Chain{fixed{}}, Authz: authz.New(pol), Sink: s})
	ctx := context.Background()
	if _, err := g.Begin(ctx, Call{RequestID: "refused", Creds: authn.Credentials{Authorization: "Bearer bad"}}); err == nil {
		t.Fatal("bad key admitted")
	}
	for _, tc := range []struct {
		id     string
		status int
	}{{"served", 200}, {"failed", 500}, {"denied", 403}} {
		tk, err := g.Begin(ctx, Call{RequestID: tc.id, Creds: authn.Credentials{Authorization: "Bearer good"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Finish(tc.status, ""); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"refused", "failed", "denied"}; !slices.Equal(s.appended, want) {
		t.Errorf("appended %v, want %v (the 200 written and waited for)", s.appended, want)
	}
	if len(s.recs) != 4 {
		t.Errorf("%d records, want 4", len(s.recs))
	}
}
