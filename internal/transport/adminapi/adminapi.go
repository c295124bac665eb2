// Package adminapi serves Aegis's admin API over REST, under /admin/v1/:
// API keys (create, list, revoke), policy and model reloads, and the audit
// log's status, extraction monitoring, watermark verification and the
// metrics. Every endpoint needs the admin permission (those that read
// state need audit:read); requests reach it through the REST gate, so
// they are authenticated and audited like any other.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/authz"
	"github.com/aegis-inference/aegis/internal/metrics"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/transport/httpapi"
)

// Keys manages API keys.
type Keys interface {
	Create(name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) (string, authn.KeyRecord, error)
	List() []authn.KeyRecord
	Revoke(id string) error
}

// Options configure the admin API. A nil field leaves its endpoints out
// (they answer 404).
type Options struct {
	Keys Keys
	// ReloadPolicy reloads the authorization policy and returns its digest.
	ReloadPolicy func() (string, error)
	// ReloadModels rescans the model repository.
	ReloadModels func() (any, error)
	// AuditStatus reports the audit log's state.
	AuditStatus func() any
	// ExtractionStatus reports extraction monitoring: alerts and the
	// principals and groups watched, per model.
	ExtractionStatus func() any
	// VerifyWatermark tests a suspect model's labels on inputs against a
	// model's watermark.
	VerifyWatermark func(ctx context.Context, req WatermarkRequest) (any, error)
	// Metrics returns the server's counters in the Prometheus text format.
	Metrics func() []byte
	Logger  *slog.Logger
}

// maxBody bounds an admin request body.
const maxBody = 64 << 10

type api struct{ Options }

// New returns the admin handler, to be mounted at /admin/ behind the gate.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &api{opts}
	mux := http.NewServeMux()
	if opts.Keys != nil {
		mux.HandleFunc("POST /admin/v1/keys", a.admin(a.createKey))
		mux.HandleFunc("GET /admin/v1/keys", a.admin(a.listKeys))
		mux.HandleFunc("DELETE /admin/v1/keys/{id}", a.admin(a.revokeKey))
	}
	if opts.ReloadPolicy != nil {
		mux.HandleFunc("POST /admin/v1/policy/reload", a.admin(a.reloadPolicy))
	}
	if opts.ReloadModels != nil {
		mux.HandleFunc("POST /admin/v1/models/reload", a.admin(a.reloadModels))
	}
	if opts.AuditStatus != nil {
		mux.HandleFunc("GET /admin/v1/audit/status", a.permit(authz.AuditRead, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, opts.AuditStatus())
		}))
	}
	if opts.ExtractionStatus != nil {
		mux.HandleFunc("GET /admin/v1/extraction/status", a.permit(authz.AuditRead, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, opts.ExtractionStatus())
		}))
	}
	if opts.VerifyWatermark != nil {
		mux.HandleFunc("POST /admin/v1/watermark/verify", a.permit(authz.AuditRead, a.verifyWatermark))
	}
	if opts.Metrics != nil {
		// audit:read, as the extraction status: the metrics name
		// principals and their risk.
		mux.HandleFunc("GET /admin/v1/metrics", a.permit(authz.AuditRead, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", metrics.ContentType)
			w.WriteHeader(http.StatusOK)
			w.Write(opts.Metrics())
		}))
	}
	return mux
}

// WatermarkRequest is the body of POST /admin/v1/watermark/verify: a
// suspect's answers on inputs of the caller's choosing.
type WatermarkRequest struct {
	Model  string      `json:"model"`
	Inputs [][]float32 `json:"inputs"`
	Labels []int64     `json:"labels"`
	// Scores, optional, are the suspect's scores for each input, one per
	// class, for the ranking test.
	Scores [][]float64 `json:"scores,omitempty"`
}

// maxWatermarkBody bounds a verification body (5,000 rows of digits).
const maxWatermarkBody = 8 << 20

func (a *api) verifyWatermark(w http.ResponseWriter, r *http.Request) {
	var req WatermarkRequest
	if err := decodeJSONLimit(r, &req, maxWatermarkBody); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.VerifyWatermark(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *api) admin(h http.HandlerFunc) http.HandlerFunc { return a.permit(authz.Admin, h) }

// permit runs h only for callers holding perm.
func (a *api) permit(perm authz.Permission, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := access.TicketFrom(r.Context())
		if t == nil {
			a.fail(w, r, apierr.New(apierr.Internal, "internal error"))
			return
		}
		if err := t.Authorize(perm, "", ""); err != nil {
			a.fail(w, r, err)
			return
		}
		h(w, r)
	}
}

// CreateKeyRequest is the body of POST /admin/v1/keys.
type CreateKeyRequest struct {
	Name   string          `json:"name"`
	Roles  []string        `json:"roles"`
	Scopes pipeline.Scopes `json:"scopes"`
	// TTL is how long the key lives, as a Go duration ("720h"); "" never
	// expires.
	TTL string `json:"ttl"`
}

// CreateKeyResponse carries the new key: the only time its secret is shown.
type CreateKeyResponse struct {
	Key    string          `json:"key"`
	Record authn.KeyRecord `json:"record"`
}

func (a *api) createKey(w http.ResponseWriter, r *http.Request) {
	var req CreateKeyRequest
	if err := decodeJSON(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			a.fail(w, r, apierr.Invalid("ttl must be a positive duration such as 720h"))
			return
		}
		ttl = d
	}
	key, rec, err := a.Keys.Create(req.Name, req.Roles, req.Scopes, ttl)
	if err != nil {
		a.fail(w, r, apierr.Wrap(apierr.InvalidArgument, err, "cannot create key: "+publicReason(err)))
		return
	}
	a.Logger.Info("api key created", "key_id", rec.ID, "name", rec.Name, "by", principalID(r))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, CreateKeyResponse{Key: key, Record: rec})
}

// publicReason is the key store's validation message, which names the bad
// parameter and holds no secret (the store never sees one it did not make).
func publicReason(err error) string {
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request) {
	keys := a.Keys.List()
	if keys == nil {
		keys = []authn.KeyRecord{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (a *api) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.Keys.Revoke(id); err != nil {
		if errors.Is(err, authn.ErrKeyNotFound) {
			a.fail(w, r, apierr.New(apierr.NotFound, "no such key"))
			return
		}
		a.fail(w, r, apierr.Wrap(apierr.Internal, err, "cannot revoke key"))
		return
	}
	a.Logger.Info("api key revoked", "key_id", id, "by", principalID(r))
	writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
}

func (a *api) reloadPolicy(w http.ResponseWriter, r *http.Request) {
	digest, err := a.ReloadPolicy()
	if err != nil {
		a.fail(w, r, apierr.Wrap(apierr.InvalidArgument, err, "policy not reloaded: the file is invalid; the previous policy stays in force"))
		return
	}
	a.Logger.Info("policy reloaded", "digest", digest, "by", principalID(r))
	writeJSON(w, http.StatusOK, map[string]string{"policy_sha256": digest})
}

func (a *api) reloadModels(w http.ResponseWriter, r *http.Request) {
	res, err := a.ReloadModels()
	if err != nil {
		a.fail(w, r, apierr.Wrap(apierr.Unavailable, err, "reload failed"))
		return
	}
	a.Logger.Info("models reloaded", "by", principalID(r))
	writeJSON(w, http.StatusOK, res)
}

func principalID(r *http.Request) string {
	if p := pipeline.PrincipalFrom(r.Context()); p != nil {
		return p.ID
	}
	return ""
}

// decodeJSON decodes a bounded body strictly: unknown fields and trailing
// data are errors.
func decodeJSON(r *http.Request, v any) error { return decodeJSONLimit(r, v, maxBody) }

func decodeJSONLimit(r *http.Request, v any, limit int64) error {
	if r.ContentLength > limit {
		return apierr.New(apierr.TooLarge, "request body exceeds %d bytes", limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "could not read the request body")
	}
	if int64(len(body)) > limit {
		return apierr.New(apierr.TooLarge, "request body exceeds %d bytes", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "malformed JSON body")
	}
	if dec.More() {
		return apierr.New(apierr.InvalidArgument, "malformed JSON body: trailing data")
	}
	return nil
}

type errorBody struct {
	Error string `json:"error"`
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	kind, msg := apierr.Public(err)
	level := slog.LevelInfo
	if kind == apierr.Internal {
		level = slog.LevelError
	}
	a.Logger.Log(r.Context(), level, "admin request failed", "request_id", w.Header().Get("X-Request-Id"),
		"path", r.URL.Path, "kind", kind.String(), "err", err)
	if f, ok := w.(interface{ SetError(string) }); ok {
		f.SetError(msg)
	}
	writeJSON(w, httpapi.StatusOf(kind), errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
