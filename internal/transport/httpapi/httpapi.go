// Package httpapi serves the Open Inference Protocol over REST (KServe v2),
// with Triton's binary tensor data extension.
//
// It is one of the two places (with grpcapi) that map errors to status
// codes. Clients get a status, a short public message and a request id;
// internal causes go to the log only. Health endpoints are always open.
package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/authz"
	"github.com/aegis-inference/aegis/internal/infer"
	"github.com/aegis-inference/aegis/internal/netstamp"
	"github.com/aegis-inference/aegis/internal/oip"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// HeaderLength is the binary extension's header naming the JSON length.
const HeaderLength = "Inference-Header-Content-Length"

// Server metadata reported by GET /v2.
const (
	ServerName    = "aegis"
	ServerVersion = "0.1.0"
)

// Extensions lists the protocol extensions Aegis implements.
var Extensions = []string{"binary_tensor_data"}

// Options configure the REST API.
type Options struct {
	Registry *repository.Registry
	Handler  pipeline.Handler
	Limits   oip.Limits
	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64
	// Ready reports whether the server accepts traffic.
	Ready *atomic.Bool
	// Gate authenticates, authorizes and audits every request but the
	// health probes.
	Gate *access.Gate
	// Admin serves the admin API under /admin/; nil leaves it out.
	Admin  http.Handler
	Logger *slog.Logger
}

type api struct {
	Options
	bufs sync.Pool
}

// New returns the REST handler.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &api{Options: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2", a.serverMetadata)
	mux.HandleFunc("GET /v2/models", a.listModels)
	mux.HandleFunc("GET /v2/models/{name}", a.modelMetadata)
	mux.HandleFunc("GET /v2/models/{name}/versions/{version}", a.modelMetadata)
	mux.HandleFunc("GET /v2/models/{name}/ready", a.modelReady)
	mux.HandleFunc("GET /v2/models/{name}/versions/{version}/ready", a.modelReady)
	mux.HandleFunc("POST /v2/models/{name}/infer", a.infer)
	mux.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", a.infer)
	if opts.Admin != nil {
		mux.Handle("/admin/", opts.Admin)
	}
	return a.recover(a.guard(mux))
}

// recover turns a panic in a handler into a 500 and keeps the server up.
func (a *api) recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				id := w.Header().Get("X-Request-Id")
				a.Logger.Error("panic serving request", "request_id", id, "path", r.URL.Path, "panic", v)
				writeError(w, id, apierr.New(apierr.Internal, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// guard passes every request but the health probes through the gate:
// authentication first, before any routing, so an unauthenticated client
// learns nothing about which paths or models exist; then the handlers
// authorize what the request names; and the request's audit record is
// written as the response header goes out.
func (a *api) guard(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			switch r.URL.Path {
			case "/v2/health/live":
				a.live(w, r)
				return
			case "/v2/health/ready":
				a.ready(w, r)
				return
			}
		}
		id := pipeline.NewRequestID()
		w.Header().Set("X-Request-Id", id)
		call := access.Call{Transport: "rest", Client: r.RemoteAddr, RequestID: id,
			Creds:   authn.Credentials{Authorization: r.Header.Get("Authorization")},
			Arrived: netstamp.Arrived(r.Context())}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			call.Creds.PeerCertificates = r.TLS.VerifiedChains[0]
		}
		t, err := a.Gate.Begin(r.Context(), call)
		if err != nil {
			a.fail(w, id, r, err)
			return
		}
		aw := &auditWriter{ResponseWriter: w, t: t, a: a, r: r}
		// Refuse rather than redirect paths that are not in canonical
		// form (dot segments, doubled or trailing slashes): a model name
		// is never reached by a path the client did not write.
		if p := r.URL.EscapedPath(); path.Clean(p) != p {
			a.fail(aw, id, r, apierr.New(apierr.NotFound, "not found"))
			return
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					t.Finish(499, "aborted")
					panic(v)
				}
				a.Logger.Error("panic serving request", "request_id", id, "path", r.URL.Path, "panic", v)
				if !aw.wrote {
					a.fail(aw, id, r, apierr.New(apierr.Internal, "internal error"))
				}
			}
			if !aw.wrote {
				aw.WriteHeader(http.StatusOK)
			}
		}()
		mux.ServeHTTP(aw, r.WithContext(access.WithTicket(r.Context(), t)))
	})
}

// auditWriter writes the request's audit record when the handler sends
// the response header, and sends 503 instead if the record cannot be
// written.
type auditWriter struct {
	http.ResponseWriter
	t       *access.Ticket
	a       *api
	r       *http.Request
	wrote   bool
	dropped bool // the handler's response was replaced: discard its body
	errMsg  string
}

func (w *auditWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if err := w.t.Finish(status, w.errMsg); err != nil {
		w.dropped = true
		h := w.Header()
		for _, k := range []string{"Content-Length", "Content-Type", HeaderLength} {
			h.Del(k)
		}
		w.a.fail(w.ResponseWriter, w.t.RequestID(), w.r, err)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

// SetError records the public error message the response carries, for the
// audit record.
func (w *auditWriter) SetError(msg string) { w.errMsg = msg }

func (w *auditWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.dropped {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// ticket returns the request's ticket.
func ticket(r *http.Request) *access.Ticket { return access.TicketFrom(r.Context()) }

func (a *api) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (a *api) ready(w http.ResponseWriter, r *http.Request) {
	if a.Ready != nil && !a.Ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "server is not ready"})
		return
	}
	if a.Gate.Healthy() != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "server is not ready: audit log cannot be written"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

type serverMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

func (a *api) serverMetadata(w http.ResponseWriter, r *http.Request) {
	ticket(r).Authenticated("server_metadata")
	writeJSON(w, http.StatusOK, serverMetadata{Name: ServerName, Version: ServerVersion, Extensions: Extensions})
}

// TensorMetadata describes a model input or output.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the body of GET /v2/models/{name}.
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
	// Properties describe the served version's provenance: its digest,
	// whether it was stored encrypted, its signer and when its signature
	// was verified. (The gRPC response carries them in its properties map.)
	Properties map[string]string `json:"properties,omitempty"`
}

// MetadataOf builds the protocol's model metadata for version v of m.
func MetadataOf(m *repository.Model, v *repository.Version) ModelMetadata {
	md := ModelMetadata{Name: m.Name, Platform: repository.Platform}
	for _, x := range m.Versions {
		md.Versions = append(md.Versions, x.Version())
	}
	md.Inputs = specs(v.Inputs())
	md.Outputs = specs(v.Outputs())
	md.Properties = map[string]string{
		"version":   v.Version(),
		"sha256":    v.Digest(),
		"encrypted": strconv.FormatBool(v.Encrypted()),
		"loaded_at": v.LoadedAt().UTC().Format(time.RFC3339),
		"signed":    "false",
	}
	if d := v.Deployment(); d.Signed {
		md.Properties["signed"] = "true"
		md.Properties["signature_method"] = string(d.Method)
		md.Properties["signer"] = d.Signer
		md.Properties["manifest_sha256"] = d.RootDigest
		md.Properties["verified_at"] = d.VerifiedAt.UTC().Format(time.RFC3339)
	}
	return md
}

func specs(s []tensor.Spec) []TensorMetadata {
	out := make([]TensorMetadata, len(s))
	for i, x := range s {
		out[i] = TensorMetadata{Name: x.Name, Datatype: x.DType.String(), Shape: x.Shape}
	}
	return out
}

// listModels answers GET /v2/models (an Aegis extension): the models the
// caller may see, and nothing about the others.
func (a *api) listModels(w http.ResponseWriter, r *http.Request) {
	t := ticket(r)
	if err := t.Authorize(authz.List, "", ""); err != nil {
		a.fail(w, t.RequestID(), r, err)
		return
	}
	var names []string
	for _, m := range a.Registry.Models() {
		names = append(names, m.Name)
	}
	names = t.Visible(names)
	if names == nil {
		names = []string{}
	}
	writeJSON(w, http.StatusOK, map[string][]string{"models": names})
}

// resolve authorizes perm on the model and version the path names, then
// finds them. A caller not allowed to see a model gets 403 whether or not
// it exists.
func (a *api) resolve(w http.ResponseWriter, r *http.Request, perm authz.Permission) (*repository.Model, *repository.Version, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	t := ticket(r)
	if err := t.Authorize(perm, name, version); err != nil {
		a.fail(w, t.RequestID(), r, err)
		return nil, nil, false
	}
	m, ok := a.Registry.Get(name)
	var v *repository.Version
	var err error
	if ok {
		v, err = a.Registry.Resolve(name, version)
	}
	if !ok || err != nil {
		a.fail(w, t.RequestID(), r, infer.NotFound(name, version))
		return nil, nil, false
	}
	return m, v, true
}

func (a *api) modelMetadata(w http.ResponseWriter, r *http.Request) {
	m, v, ok := a.resolve(w, r, authz.Metadata)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, MetadataOf(m, v))
}

func (a *api) modelReady(w http.ResponseWriter, r *http.Request) {
	m, _, ok := a.resolve(w, r, authz.Metadata)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "ready": true})
}

func (a *api) infer(w http.ResponseWriter, r *http.Request) {
	t := ticket(r)
	id := t.RequestID()
	if err := t.Authorize(authz.Infer, r.PathValue("name"), r.PathValue("version")); err != nil {
		a.fail(w, id, r, err)
		return
	}
	bufp := a.getBuf()
	defer a.putBuf(bufp)
	base, body, err := readBody(r, a.MaxBodyBytes, (*bufp)[:0], binaryStart(r))
	*bufp = base[:0]
	if err != nil {
		a.fail(w, id, r, err)
		return
	}
	req, err := a.decode(r, body)
	if err != nil {
		a.fail(w, id, r, err)
		return
	}
	req.Model, req.Version = r.PathValue("name"), r.PathValue("version")
	if err := t.CheckBatch(pipeline.BatchOf(req)); err != nil {
		a.fail(w, id, r, err)
		return
	}
	resp, err := a.Handler.Infer(r.Context(), req)
	for _, f := range req.Flags {
		t.Flag(f)
	}
	if err != nil {
		t.Tensors(req.Inputs, nil)
		a.fail(w, id, r, err)
		return
	}
	defer resp.Release()
	t.Tensors(req.Inputs, resp.Tensors())
	out := a.getBuf()
	defer a.putBuf(out)
	js, bins, err := oip.AppendInferResponse((*out)[:0], resp)
	if err != nil {
		a.fail(w, id, r, err)
		return
	}
	*out = js[:0]
	h := w.Header()
	total := len(js)
	for _, b := range bins {
		total += len(b)
	}
	h.Set("Content-Length", strconv.Itoa(total))
	if len(bins) > 0 {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(HeaderLength, strconv.Itoa(len(js)))
	} else {
		h.Set("Content-Type", "application/json")
	}
	w.WriteHeader(http.StatusOK)
	w.Write(js)
	for _, b := range bins {
		w.Write(b)
	}
}

// putBuf returns a buffer to the pool unless it grew past what is worth
// keeping, so one huge request does not pin its memory.
func (a *api) putBuf(p *[]byte) {
	if cap(*p) <= 1<<20 {
		a.bufs.Put(p)
	}
}

func (a *api) getBuf() *[]byte {
	if p, ok := a.bufs.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 16<<10)
	return &b
}

// decode splits the body by the binary extension's header and decodes it.
func (a *api) decode(r *http.Request, body []byte) (*pipeline.Request, error) {
	hl := r.Header.Get(HeaderLength)
	if hl == "" {
		return oip.DecodeInferRequest(body, nil, a.Limits)
	}
	n, err := strconv.ParseInt(hl, 10, 64)
	if err != nil || n < 0 || n > int64(len(body)) {
		return nil, apierr.Invalid("%s must be an integer between 0 and the body length", HeaderLength)
	}
	if n == 0 {
		return a.rawRequest(r, body)
	}
	return oip.DecodeInferRequest(body[:n], body[n:], a.Limits)
}

// rawRequest handles a body that is one raw tensor (header length 0): the
// model must have exactly one input, whose shape has at most one variable
// dimension, inferred from the body's length.
func (a *api) rawRequest(r *http.Request, body []byte) (*pipeline.Request, error) {
	v, err := a.Registry.Resolve(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return nil, infer.NotFound(r.PathValue("name"), r.PathValue("version"))
	}
	ins := v.Inputs()
	if len(ins) != 1 {
		return nil, apierr.Invalid("a raw binary body needs a model with exactly one input")
	}
	spec := ins[0]
	if spec.DType == tensor.Bytes {
		return nil, apierr.Invalid("a raw binary body cannot carry BYTES")
	}
	shape, err := inferShape(spec, int64(len(body)))
	if err != nil {
		return nil, err
	}
	t := tensor.Tensor{Name: spec.Name, DType: spec.DType, Shape: shape}
	n, _, err := oip.CheckShape(t.Name, t.DType, shape, a.Limits.MaxTensorBytes)
	if err != nil {
		return nil, err
	}
	if err := oip.FromBinary(&t, n, body); err != nil {
		return nil, err
	}
	return &pipeline.Request{Inputs: []tensor.Tensor{t}}, nil
}

func inferShape(spec tensor.Spec, size int64) ([]int64, error) {
	shape := append([]int64(nil), spec.Shape...)
	known, free := int64(spec.DType.Size()), -1
	for i, d := range shape {
		if d < 0 {
			if free >= 0 {
				return nil, apierr.Invalid("a raw binary body needs an input with at most one variable dimension")
			}
			free = i
			continue
		}
		known *= d
	}
	if free >= 0 {
		if known == 0 || size%known != 0 {
			return nil, apierr.Invalid("raw body of %d bytes does not fit input %q shape %v", size, spec.Name, spec.Shape)
		}
		shape[free] = size / known
	}
	return shape, nil
}

// binaryStart returns where the binary tensor data starts in the body, or
// -1 when the request does not use the binary extension.
func binaryStart(r *http.Request) int {
	n, err := strconv.Atoi(r.Header.Get(HeaderLength))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// tensorAlignment is the alignment ONNX Runtime wants for tensor data (see
// onnx.Session.Run, which copies misaligned inputs).
const tensorAlignment = 64

// readBody reads the whole body into buf, refusing more than limit bytes,
// and returns the buffer (to pool) and the body within it. When the body
// carries binary tensor data from offset bin and its length is known, the
// body is placed so that the data starts 64-byte aligned and reaches ONNX
// Runtime without a copy.
func readBody(r *http.Request, limit int64, buf []byte, bin int) (base, body []byte, err error) {
	if r.ContentLength > limit {
		return buf, nil, apierr.New(apierr.TooLarge, "request body exceeds %d bytes", limit)
	}
	// Trust Content-Length for the first megabyte only: a client that
	// declares a large body must send it before the server commits memory.
	want := min(r.ContentLength, 1<<20)
	off := 0
	if want > 0 && bin >= 0 && int64(bin) < want {
		want += tensorAlignment
		if int64(cap(buf)) < want {
			buf = make([]byte, 0, want)
		}
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:1]))) + uintptr(bin)
		off = int((tensorAlignment - addr%tensorAlignment) % tensorAlignment)
	} else if want > 0 && int64(cap(buf)) < want {
		buf = make([]byte, 0, want)
	}
	body = buf[off:off]
	lr := io.LimitReader(r.Body, limit+1)
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		n, err := lr.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if int64(len(body)) > limit {
			return buf, nil, apierr.New(apierr.TooLarge, "request body exceeds %d bytes", limit)
		}
		if err == io.EOF {
			if cap(body) == cap(buf)-off {
				return buf, body, nil // still in buf
			}
			return body[:0], body, nil // grew into a new array
		}
		if err != nil {
			return buf, nil, apierr.Wrap(apierr.InvalidArgument, err, "could not read the request body")
		}
	}
}

func (a *api) fail(w http.ResponseWriter, id string, r *http.Request, err error) {
	kind, msg := apierr.Public(err)
	if aw, ok := w.(*auditWriter); ok {
		aw.SetError(msg)
	}
	// Refusals are the client's doing or overload: every one is in the
	// audit log, and logging each at info would let a flood of bad or
	// excess requests flood the log too.
	level := slog.LevelDebug
	if kind == apierr.Internal {
		level = slog.LevelError
	}
	if a.Logger.Enabled(r.Context(), level) { // spares boxing the arguments when not
		a.Logger.Log(r.Context(), level, "request failed", "request_id", id, "path", r.URL.Path, "kind", kind.String(), "err", err)
	}
	writeError(w, id, err)
}

type errorBody struct {
	Error string `json:"error"`
}

// writeError answers err. It is the path of every refusal, shed requests
// included, so it is kept cheap: header keys already canonical, the body
// built without reflection when the message needs no escaping, and no
// Date header on a 503 (RFC 9110, 6.6.1: a server may omit it on 5xx; it
// costs a clock read and a formatting per refusal).
func writeError(w http.ResponseWriter, id string, err error) {
	kind, msg := apierr.Public(err)
	status := StatusOf(kind)
	h := w.Header()
	h["X-Request-Id"] = []string{id}
	if s := apierr.RetryAfterOf(err); s > 0 {
		h["Retry-After"] = []string{strconv.Itoa(s)}
	}
	if status == http.StatusServiceUnavailable {
		h["Date"] = nil // suppresses net/http's
	}
	var b []byte
	if plainJSON(msg) {
		b = make([]byte, 0, len(msg)+len(`{"error":""}`))
		b = append(append(append(b, `{"error":"`...), msg...), `"}`...)
	} else if b, err = json.Marshal(errorBody{Error: msg}); err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

// plainJSON reports whether s is printable ASCII that encoding/json would
// write as it is inside quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// StatusOf maps an error kind to an HTTP status.
func StatusOf(k apierr.Kind) int {
	switch k {
	case apierr.InvalidArgument:
		return http.StatusBadRequest
	case apierr.NotFound:
		return http.StatusNotFound
	case apierr.Unavailable:
		return http.StatusServiceUnavailable
	case apierr.Unimplemented:
		return http.StatusNotImplemented
	case apierr.Unauthenticated:
		return http.StatusUnauthorized
	case apierr.PermissionDenied:
		return http.StatusForbidden
	case apierr.ResourceExhausted:
		return http.StatusTooManyRequests
	case apierr.TooLarge:
		return http.StatusRequestEntityTooLarge
	case apierr.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case apierr.Canceled:
		return 499 // client closed request
	}
	return http.StatusInternalServerError
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
