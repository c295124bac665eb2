// Package access is the gate every request passes on both transports:
// authentication, authorization and the audit record, in one place so REST
// and gRPC cannot drift apart.
//
// A transport calls Begin for every request except the health probes. Begin
// refuses the request (and audits the refusal) when the audit log cannot
// write or no credential is accepted; otherwise it returns a Ticket, which
// the handlers use to authorize what the request asks for. Before any
// response byte is sent the transport calls Finish, which writes the
// request's one audit record; if that write fails the response is replaced
// by 503: Aegis never serves a request it could not audit.
package access

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/authz"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Record is one request's audit record, as the gate fills it.
type Record struct {
	Time      time.Time
	RequestID string
	Principal string
	Auth      string
	Client    string
	Transport string
	Action    string
	Model     string
	Version   string
	Decision  string // "allow" or "deny"
	Rule      string
	// InputHMAC and OutputHMAC are keyed hashes of the tensors; sizes are
	// the tensors' data bytes.
	InputHMAC   string
	OutputHMAC  string
	InputBytes  int64
	OutputBytes int64
	Status      int
	Error       string
	// Flags are findings that did not refuse the request, comma-separated.
	Flags   string
	Latency time.Duration
}

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Sink stores audit records. Write must have handed the record to the
// operating system (or, in a durable mode, to stable storage) when it
// returns nil.
type Sink interface {
	Write(r *Record) error
	// Event records something noticed outside a request (an alarm).
	Event(kind, principal, detail string) error
	// Healthy returns an error while records cannot be written.
	Healthy() error
}

// Appender is a Sink that can also queue a record without waiting for it
// to be written (audit.Log.Append): the gate uses it for refusals and
// errors, whose answers disclose nothing, and Write for the answers that
// carry a model's outputs, which are sent only once their record is.
type Appender interface {
	Append(r *Record) error
}

// Hasher computes the keyed hash of a list of tensors.
type Hasher interface {
	Hash(ts []tensor.Tensor) string
}

// Options configure a Gate.
type Options struct {
	// Authn authenticates requests; ignored when Disabled.
	Authn authn.Chain
	// Disabled admits every request as the principal "anonymous" with
	// every permission. Development only.
	Disabled bool
	// Authz decides what a principal may do; nil denies everything.
	Authz *authz.Authorizer
	// Sink records every request; nil disables the audit log.
	Sink   Sink
	Hasher Hasher
	// Shed bounds the requests admitted at once (a bounded queue, then
	// 503 with Retry-After) and refuses those that waited too long to
	// reach the gate, before any body is read; nil admits all.
	Shed   Shedder
	Logger *slog.Logger
}

// Shedder is the global admission gate (ratelimit.Shedder): AdmitAt
// takes a slot for a request that arrived at the host at arrived, now
// being the current time, and returns when the slot was taken; ReleaseAt
// gives it back, once.
type Shedder interface {
	AdmitAt(ctx context.Context, arrived, now time.Time) (held time.Time, err error)
	ReleaseAt(held, now time.Time)
}

// Gate admits requests.
type Gate struct {
	opts Options

	admitted, refusedAuth, refusedAudit, auditFailures atomic.Int64
	refusedTLS                                         atomic.Int64
	shed                                               atomic.Int64
	inFlight                                           atomic.Int64 // admitted, not yet finished
	lastAuditLog                                       atomic.Int64 // unix nanoseconds of the last audit-failure log line
}

// New returns a gate.
func New(opts Options) *Gate {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Gate{opts: opts}
}

// InFlight is the number of admitted requests whose audit record is not
// written yet: the durable audit log's group commit waits for them.
func (g *Gate) InFlight() int {
	if g == nil {
		return 0
	}
	return int(g.inFlight.Load())
}

// Healthy returns an error while the audit log cannot write: the server
// refuses requests then, and should report itself not ready.
func (g *Gate) Healthy() error {
	if g == nil || g.opts.Sink == nil {
		return nil
	}
	return g.opts.Sink.Healthy()
}

// Anonymous is the principal of every request when authentication is
// disabled.
var Anonymous = &pipeline.Principal{ID: "anonymous", Method: pipeline.MethodNone}

// Call describes a request arriving at the gate.
type Call struct {
	Transport string // "rest" or "grpc"
	Client    string // the peer's address
	RequestID string
	Creds     authn.Credentials
	// Arrived is when the request reached the host (netstamp), if the
	// transport knows; the zero time if not.
	Arrived time.Time
}

// Ticket is one admitted request: its principal, what it was allowed, and
// its audit record until Finish writes it. A Ticket is used by one request
// at a time.
type Ticket struct {
	g         *Gate
	start     time.Time
	principal *pipeline.Principal
	rec       Record
	decided   bool
	finished  bool
	admitted  bool      // counted in the gate's in-flight requests
	slot      bool      // holds a slot of the shedder's
	slotHeld  time.Time // since when (Shedder.AdmitAt)
}

// Stats are the gate's counters.
type Stats struct {
	Admitted int64 // requests admitted past authentication
	// RefusedUnauthenticated counts requests refused for want of an
	// accepted credential.
	RefusedUnauthenticated int64
	// RefusedAudit counts requests refused because the audit log could
	// not write.
	RefusedAudit int64
	// AuditFailures counts audit writes that failed.
	AuditFailures int64
	// RefusedTLS counts connections refused in the TLS handshake.
	RefusedTLS int64
	// Shed counts requests refused by the global admission gate.
	Shed int64
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{
		Admitted:               g.admitted.Load(),
		RefusedUnauthenticated: g.refusedAuth.Load(),
		RefusedAudit:           g.refusedAudit.Load(),
		AuditFailures:          g.auditFailures.Load(),
		RefusedTLS:             g.refusedTLS.Load(),
		Shed:                   g.shed.Load(),
	}
}

// Errors the gate returns; their messages are what clients see.
var (
	errUnauthenticated = apierr.New(apierr.Unauthenticated, "authentication required")
	errBadCredential   = apierr.New(apierr.Unauthenticated, "authentication failed")
	errForbidden       = apierr.New(apierr.PermissionDenied, "permission denied")
	errAuditDown       = apierr.New(apierr.Unavailable, "service unavailable: audit log cannot be written")
)

// Begin authenticates a request. On refusal it writes the refusal's audit
// record and returns the error to send; the request goes no further.
func (g *Gate) Begin(ctx context.Context, c Call) (*Ticket, error) {
	t := &Ticket{g: g, start: time.Now()}
	t.rec = Record{RequestID: c.RequestID, Client: c.Client, Transport: c.Transport, Auth: pipeline.MethodNone}
	if s := g.opts.Sink; s != nil {
		if err := s.Healthy(); err != nil {
			g.refusedAudit.Add(1)
			g.logAuditFailure(err)
			return nil, errAuditDown
		}
	}
	if g.opts.Disabled {
		t.principal = Anonymous
	} else {
		p, err := g.opts.Authn.Authenticate(ctx, c.Creds)
		if err != nil {
			g.refusedAuth.Add(1)
			out := errUnauthenticated
			t.rec.Decision, t.rec.Rule = Deny, "authn:no-credential"
			var inv *authn.InvalidError
			switch {
			case errors.As(err, &inv):
				out = errBadCredential
				t.rec.Auth = inv.Method
				t.rec.Rule = "authn:" + inv.Reason
			case !errors.Is(err, authn.ErrNoCredential):
				out = errBadCredential
				t.rec.Rule = "authn:error"
				g.opts.Logger.Error("authentication error", "request_id", c.RequestID, "err", err)
			}
			t.decided = true
			if ferr := t.Finish(http.StatusUnauthorized, out.Msg); ferr != nil {
				return nil, ferr
			}
			return nil, out
		}
		t.principal = p
	}
	t.rec.Principal, t.rec.Auth = t.principal.ID, t.principal.Method
	if g.opts.Shed != nil {
		// The clock read at the start serves: the gate decides on
		// milliseconds.
		held, err := g.opts.Shed.AdmitAt(ctx, c.Arrived, t.start)
		if err != nil {
			g.shed.Add(1)
			t.rec.Decision, t.rec.Rule, t.decided = Deny, "shed", true
			kind, msg := apierr.Public(err)
			status := http.StatusServiceUnavailable
			if kind == apierr.Canceled {
				status = 499
			}
			if ferr := t.Finish(status, msg); ferr != nil {
				return nil, ferr
			}
			return nil, err
		}
		t.slot, t.slotHeld = true, held
	}
	g.admitted.Add(1)
	g.inFlight.Add(1)
	t.admitted = true
	return t, nil
}

// Principal returns who is asking.
func (t *Ticket) Principal() *pipeline.Principal { return t.principal }

// Client returns the caller's address.
func (t *Ticket) Client() string { return t.rec.Client }

// RequestID returns the request's id.
func (t *Ticket) RequestID() string { return t.rec.RequestID }

// Authorize decides whether the request may do perm on model and version,
// and records the decision. A request is authorized once: the first
// decision is the one audited.
func (t *Ticket) Authorize(perm authz.Permission, model, version string) error {
	t.rec.Action, t.rec.Model, t.rec.Version = string(perm), model, version
	if t.g.opts.Disabled {
		t.rec.Decision, t.rec.Rule, t.decided = Allow, "auth-disabled", true
		return nil
	}
	d := t.g.opts.Authz.Decide(t.principal, authz.Action{Permission: perm, Model: model, Version: version})
	t.rec.Decision, t.rec.Rule, t.decided = Deny, d.Rule, true
	if d.Allow {
		t.rec.Decision = Allow
		return nil
	}
	return errForbidden
}

// Flag records a finding that does not refuse the request (an input
// outside its configured range with action "flag", an out-of-distribution
// input) in the request's audit record.
func (t *Ticket) Flag(f string) {
	if t.rec.Flags == "" {
		t.rec.Flags = f
	} else {
		t.rec.Flags += "," + f
	}
}

// Authenticated records a request that any authenticated principal may
// make (server metadata) as allowed.
func (t *Ticket) Authenticated(action string) {
	t.rec.Action, t.rec.Decision, t.rec.Rule, t.decided = action, Allow, "authenticated", true
}

// CheckBatch applies the credential's batch-size scope.
func (t *Ticket) CheckBatch(batch int64) error {
	if t.g.opts.Disabled {
		return nil
	}
	if d := authz.CheckBatch(t.principal, batch); !d.Allow {
		t.rec.Decision, t.rec.Rule = Deny, d.Rule
		return errForbidden
	}
	return nil
}

// Visible filters models to those the principal may see.
func (t *Ticket) Visible(models []string) []string {
	if t.g.opts.Disabled {
		return models
	}
	return t.g.opts.Authz.Visible(t.principal, models)
}

// Tensors records the keyed hashes and sizes of a request's inputs and
// outputs. Call it before the tensors' memory is released.
func (t *Ticket) Tensors(in, out []tensor.Tensor) {
	h := t.g.opts.Hasher
	if h == nil || t.g.opts.Sink == nil {
		return
	}
	if len(in) > 0 {
		t.rec.InputHMAC, t.rec.InputBytes = h.Hash(in), dataBytes(in)
	}
	if len(out) > 0 {
		t.rec.OutputHMAC, t.rec.OutputBytes = h.Hash(out), dataBytes(out)
	}
}

func dataBytes(ts []tensor.Tensor) int64 {
	var n int64
	for i := range ts {
		n += int64(len(ts[i].Data))
		for _, s := range ts[i].Strings {
			n += int64(len(s))
		}
	}
	return n
}

// Finish writes the request's audit record with the outcome about to be
// sent: its HTTP status (gRPC maps its code to the HTTP equivalent) and,
// for an error, the public message. It must be called before the response
// is sent; if it returns an error the response must be replaced by that
// error (503). Calls after the first do nothing.
func (t *Ticket) Finish(status int, msg string) error {
	if t.finished {
		return nil
	}
	t.finished = true
	if t.admitted {
		defer t.g.inFlight.Add(-1)
	}
	end := time.Now()
	if t.slot {
		// The work is done: give the shedder's slot back before the
		// audit write, which in durable mode waits for the disk.
		t.g.opts.Shed.ReleaseAt(t.slotHeld, end)
		t.slot = false
	}
	r := &t.rec
	r.Status, r.Error = status, msg
	if !t.decided {
		// Nothing was authorized: a route that does not exist, or a
		// request refused before it named a target.
		r.Decision, r.Rule = Deny, "no-decision"
	}
	r.Latency = end.Sub(t.start)
	s := t.g.opts.Sink
	if s == nil {
		return nil
	}
	r.Time = t.start
	var err error
	if a, ok := s.(Appender); ok && status >= 400 {
		// A refusal or an error: the answer discloses nothing, so it
		// need not wait for its record.
		err = a.Append(r)
	} else {
		err = s.Write(r)
	}
	if err != nil {
		t.g.auditFailures.Add(1)
		t.g.logAuditFailure(err)
		return errAuditDown
	}
	return nil
}

// ConnRefused audits a connection refused before any request: a failed
// TLS handshake (plain HTTP to the TLS port, a client certificate that
// does not verify, no common protocol version). reason is the TLS error,
// which carries no secret.
func (g *Gate) ConnRefused(transport, client, reason string) {
	g.refusedTLS.Add(1)
	if g.opts.Sink == nil {
		return
	}
	if len(reason) > 200 {
		reason = reason[:200]
	}
	r := &Record{Time: time.Now(), Client: client, Transport: transport, Auth: pipeline.MethodNone,
		Action: "connect", Decision: Deny, Rule: "tls-handshake", Status: http.StatusBadRequest, Error: reason}
	if err := g.opts.Sink.Write(r); err != nil {
		g.auditFailures.Add(1)
		g.logAuditFailure(err)
	}
}

// Event audits something noticed outside a request: an extraction alarm,
// a principal blocked. Without an audit log it is only logged.
func (g *Gate) Event(kind, principal, detail string) error {
	g.opts.Logger.Warn("security event", "kind", kind, "principal", principal, "detail", detail)
	if g.opts.Sink == nil {
		return nil
	}
	if err := g.opts.Sink.Event(kind, principal, detail); err != nil {
		g.auditFailures.Add(1)
		g.logAuditFailure(err)
		return errAuditDown
	}
	return nil
}

// logAuditFailure logs an audit failure at most once a second.
func (g *Gate) logAuditFailure(err error) {
	now := time.Now().UnixNano()
	last := g.lastAuditLog.Load()
	if now-last < int64(time.Second) || !g.lastAuditLog.CompareAndSwap(last, now) {
		return
	}
	g.opts.Logger.Error("audit log cannot be written: refusing requests", "err", err,
		"refused", g.refusedAudit.Load(), "failures", g.auditFailures.Load())
}

type ticketKey struct{}

// WithTicket returns ctx carrying t, and t's principal.
func WithTicket(ctx context.Context, t *Ticket) context.Context {
	return context.WithValue(pipeline.WithPrincipal(ctx, t.principal), ticketKey{}, t)
}

// TicketFrom returns the ticket in ctx, or nil.
func TicketFrom(ctx context.Context) *Ticket {
	t, _ := ctx.Value(ticketKey{}).(*Ticket)
	return t
}
