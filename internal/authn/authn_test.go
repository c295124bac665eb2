package authn

import (
	"context"
	"errors"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

func TestChain(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	keys := openTestStore(t, db, clk)
	key, rec := createKey(t, keys, "a", nil, pipeline.Scopes{}, 0)
	accept := func() *fakeAuth {
		return &fakeAuth{
			MethodFunc: func() string { return pipeline.MethodJWT },
			AuthenticateFunc: func(context.Context, Credentials) (*pipeline.Principal, error) {
				return &pipeline.Principal{ID: "jwt:anyone", Method: pipeline.MethodJWT}, nil
			},
		}
	}
	ctx := context.Background()

	t.Run("no credential", func(t *testing.T) {
		for _, ch := range []Chain{nil, {keys, MTLS{}}} {
			if _, err := ch.Authenticate(ctx, Credentials{}); err != ErrNoCredential {
				t.Errorf("%d authenticators: got %v, want ErrNoCredential", len(ch), err)
			}
		}
	})
	t.Run("an invalid API key does not fall through", func(t *testing.T) {
		next := accept()
		ch := Chain{keys, next}
		for _, bad := range []string{"Bearer " + key[:len(key)-1] + "x", "Bearer aegis_malformed", "ApiKey nonsense"} {
			p, err := ch.Authenticate(ctx, Credentials{Authorization: bad})
			if !errors.Is(err, ErrInvalid) || p != nil {
				t.Errorf("%q: got %v, %v; want ErrInvalid", bad, p, err)
			}
			if ie, _ := errors.AsType[*InvalidError](err); ie == nil || ie.Method != pipeline.MethodAPIKey {
				t.Errorf("%q: got %#v, want an api_key InvalidError", bad, err)
			}
		}
		if n := next.calls.Load(); n != 0 {
			t.Errorf("the next authenticator was asked %d times, want 0", n)
		}
	})
	t.Run("first recogniser decides", func(t *testing.T) {
		next := accept()
		p, err := Chain{MTLS{}, keys, next}.Authenticate(ctx, Credentials{Authorization: "Bearer " + key})
		if err != nil || p.ID != "key:"+rec.ID {
			t.Errorf("got %v, %v; want key:%s", p, err, rec.ID)
		}
		if n := next.calls.Load(); n != 0 {
			t.Errorf("the next authenticator was asked %d times, want 0", n)
		}
		p, err = Chain{keys, next}.Authenticate(ctx, Credentials{Authorization: "Bearer eyJ.x.y"})
		if err != nil || p.ID != "jwt:anyone" || next.calls.Load() != 1 {
			t.Errorf("not an API key: got %v, %v; want the next authenticator's principal", p, err)
		}
	})
	t.Run("fails closed outside the contract", func(t *testing.T) {
		for name, f := range map[string]func(context.Context, Credentials) (*pipeline.Principal, error){
			"nil principal, nil error": func(context.Context, Credentials) (*pipeline.Principal, error) { return nil, nil },
			"other error":              func(context.Context, Credentials) (*pipeline.Principal, error) { return nil, context.Canceled },
			"principal and other error": func(context.Context, Credentials) (*pipeline.Principal, error) {
				return &pipeline.Principal{ID: "x"}, errors.New("boom")
			},
		} {
			bad := &fakeAuth{MethodFunc: func() string { return "fake" }, AuthenticateFunc: f}
			p, err := Chain{bad, accept()}.Authenticate(ctx, Credentials{Authorization: "Bearer x"})
			if !errors.Is(err, ErrInvalid) || p != nil {
				t.Errorf("%s: got %v, %v; want ErrInvalid", name, p, err)
			}
		}
	})
}

func TestSplitAuthorization(t *testing.T) {
	tests := []struct {
		in, scheme, cred string
		ok               bool
	}{
		{"Bearer abc", "Bearer", "abc", true},
		{"bearer   abc", "bearer", "abc", true},
		{"ApiKey aegis_x", "ApiKey", "aegis_x", true},
		{"", "", "", false},
		{"Bearer", "", "", false},
		{"Bearer ", "", "", false},
		{" Bearer abc", "", "", false},
		{"Bearer abc ", "", "", false},
		{"Bearer a b", "", "", false},
		{"Bearer\tabc", "", "", false},
		{"Bearer abc\n", "", "", false},
	}
	for _, tt := range tests {
		scheme, cred, ok := splitAuthorization(tt.in)
		if scheme != tt.scheme || cred != tt.cred || ok != tt.ok {
			t.Errorf("splitAuthorization(%q): got %q, %q, %v; want %q, %q, %v", tt.in, scheme, cred, ok, tt.scheme, tt.cred, tt.ok)
		}
	}
}
