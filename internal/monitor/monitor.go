// Package monitor puts extraction monitoring (internal/extraction) on the
// request path: one Monitor per model whose config.yaml has an extraction
// section, fitted from the model's reference sample the first time it is
// used; before inference the principal's action (block, throttle,
// degrade), after it the observation, off the critical path.
package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/extraction"
	"github.com/aegis-inference/aegis/internal/ood"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Options configure monitoring.
type Options struct {
	// Policy maps risk to actions (extraction.DefaultPolicy when zero).
	Policy extraction.Policy
	// GroupByNetwork and GroupByTenant aggregate principals by client
	// network (/24, /48) and by their identity provider groups.
	GroupByNetwork, GroupByTenant bool
	// ThrottleRetry is the Retry-After of a throttled request.
	ThrottleRetry time.Duration
	// OnAlert receives every alert (to audit and forward it).
	OnAlert func(model string, a extraction.Alert)
	Logger  *slog.Logger
}

// Monitors holds the per-model monitors.
type Monitors struct {
	opts Options
	mu   sync.Mutex
	// byM maps models to their monitors. Read without a lock (the
	// request path); replaced, never modified, under mu.
	byM atomic.Pointer[map[string]*entry]
	// byClient keeps each client address's group keys (clientGroups).
	byClient sync.Map
	nclients atomic.Int32
}

type entry struct {
	mon    *extraction.Monitor
	spec   *repository.ExtractionSpec
	mu     sync.Mutex
	alerts []extraction.Alert // the latest maxAlerts, oldest first
	raised uint64             // alerts since the model's monitor started; guarded by mu
	done   chan struct{}
}

const maxAlerts = 10000

// New returns empty monitors; Close stops them.
func New(opts Options) *Monitors {
	if opts.Policy == (extraction.Policy{}) {
		opts.Policy = extraction.DefaultPolicy()
	}
	if opts.ThrottleRetry <= 0 {
		opts.ThrottleRetry = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &Monitors{opts: opts}
	m.byM.Store(&map[string]*entry{})
	return m
}

func (m *Monitors) get(model string) *entry { return (*m.byM.Load())[model] }

func (m *Monitors) monitorFor(model string, spec *repository.ExtractionSpec) (*entry, error) {
	if e := m.get(model); e != nil {
		return e, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.get(model); e != nil {
		return e, nil
	}
	om, err := ood.Fit(ood.Widen(spec.Reference), ood.DefaultOptions())
	if err != nil {
		return nil, fmt.Errorf("model %s: fit the out-of-distribution scorer: %w", model, err)
	}
	cfg := extraction.Default(spec.Dim)
	cfg.OOD = om
	if cfg.KNN.Threshold, err = extraction.CalibrateKNN(spec.Reference, cfg.KNN.K, 0.001); err != nil {
		return nil, fmt.Errorf("model %s: calibrate the kNN detector: %w", model, err)
	}
	// The axes only speed the search up: a sample that has none (it does
	// not vary) is searched on norms.
	if axes, err := extraction.PrincipalAxes(spec.Reference, extraction.SearchAxes); err == nil {
		cfg.KNN.Axes = axes
	}
	cfg.Policy = m.opts.Policy
	mon, err := extraction.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", model, err)
	}
	e := &entry{mon: mon, spec: spec, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		for a := range mon.Alerts() {
			e.mu.Lock()
			if len(e.alerts) == maxAlerts {
				e.alerts = e.alerts[1:]
			}
			e.alerts = append(e.alerts, a)
			e.raised++
			e.mu.Unlock()
			if m.opts.OnAlert != nil {
				m.opts.OnAlert(model, a)
			}
		}
	}()
	next := maps.Clone(*m.byM.Load())
	next[model] = e
	m.byM.Store(&next)
	m.opts.Logger.Info("extraction monitoring on", "model", model, "features", spec.Dim, "reference_rows", len(spec.Reference),
		"knn_threshold", cfg.KNN.Threshold)
	return e, nil
}

// Close stops every monitor.
func (m *Monitors) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range *m.byM.Load() {
		e.mon.Close()
		<-e.done
	}
	m.byM.Store(&map[string]*entry{})
}

// Errors for refused principals; messages say nothing of the detectors.
var (
	errBlocked = apierr.New(apierr.PermissionDenied, "access to this model is suspended for this credential")
)

// Stage returns the pipeline stage.
func (m *Monitors) Stage() pipeline.Stage {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
			p := pipeline.PrincipalFrom(ctx)
			if p == nil {
				return next.Infer(ctx, req)
			}
			degrade := false
			if e := m.get(req.Model); e != nil {
				switch e.mon.Decision(p.ID) {
				case extraction.ActionBlock:
					return nil, errBlocked
				case extraction.ActionThrottle:
					// Throttled principals get one request per
					// ThrottleRetry at most: the rate limiter is per
					// principal; here the simplest bound is to refuse and
					// ask to wait.
					return nil, &apierr.Error{Kind: apierr.ResourceExhausted, Msg: "rate limit exceeded", RetryAfter: m.opts.ThrottleRetry}
				case extraction.ActionDegrade:
					degrade = true
				}
			}
			resp, err := next.Infer(ctx, req)
			if err != nil {
				return resp, err
			}
			v, _ := req.Target.(*repository.Version)
			if v == nil || v.Extraction() == nil {
				return resp, nil
			}
			e, err := m.monitorFor(req.Model, v.Extraction())
			if err != nil {
				m.opts.Logger.Error("extraction monitoring unavailable", "err", err)
				return resp, nil
			}
			m.observe(ctx, e, p, req, resp)
			if degrade {
				keepLabelOnly(resp, e.spec.LabelOutput)
				req.Flags = append(req.Flags, "extraction:degraded")
			}
			return resp, nil
		})
	}
}

// observe hands the request's rows and predicted labels to the monitor.
func (m *Monitors) observe(ctx context.Context, e *entry, p *pipeline.Principal, req *pipeline.Request, resp *pipeline.Response) {
	var in, lab *tensor.Tensor
	for i := range req.Inputs {
		if req.Inputs[i].Name == e.spec.Input {
			in = &req.Inputs[i]
		}
	}
	for i := range resp.All {
		if resp.All[i].Name == e.spec.LabelOutput {
			lab = &resp.All[i]
		}
	}
	if in == nil || lab == nil || in.DType != tensor.FP32 || lab.DType != tensor.Int64 {
		return
	}
	if len(in.Data) != len(lab.Data)/8*e.spec.Dim*4 {
		return
	}
	e.mon.ObserveEncoded(p.ID, m.groups(ctx, p), in.Data, lab.Data)
}

// groups returns the principal's group keys (never modified afterwards:
// the monitor keeps them). A connection's requests usually come from one
// principal, so the keys are kept per client address and reused while the
// principal's groups are the same.
func (m *Monitors) groups(ctx context.Context, p *pipeline.Principal) []string {
	client := ""
	if m.opts.GroupByNetwork {
		if t := access.TicketFrom(ctx); t != nil {
			client = t.Client()
		}
	}
	if v, ok := m.byClient.Load(client); ok {
		if e := v.(*clientGroups); slices.Equal(e.tenants, p.Groups) {
			return e.keys
		}
	}
	var keys []string
	if client != "" {
		if ap, err := netip.ParseAddrPort(client); err == nil {
			keys = append(keys, extraction.NetGroup(ap.Addr()))
		}
	}
	if m.opts.GroupByTenant {
		for _, name := range p.Groups {
			keys = append(keys, extraction.TenantGroup(name))
		}
	}
	if m.nclients.Add(1) > maxClients {
		m.byClient.Clear() // connections come and go: start over
		m.nclients.Store(1)
	}
	m.byClient.Store(client, &clientGroups{tenants: slices.Clone(p.Groups), keys: keys})
	return keys
}

// clientGroups is the group keys of a client address's principal.
type clientGroups struct {
	tenants []string // the principal's groups the keys were made from
	keys    []string
}

// maxClients bounds the client addresses whose group keys are kept.
const maxClients = 4096

// keepLabelOnly drops every output but the predicted label.
func keepLabelOnly(resp *pipeline.Response, label string) {
	out := resp.Outputs[:0]
	for _, o := range resp.Outputs {
		if o.Name == label {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		for i := range resp.All {
			if resp.All[i].Name == label {
				out = append(out, pipeline.OutputTensor{Tensor: resp.All[i]})
			}
		}
	}
	resp.Outputs = out
}

// ModelStatus is one model's monitoring state, for the admin API.
type ModelStatus struct {
	Model  string             `json:"model"`
	Alerts []extraction.Alert `json:"alerts"`
	// AlertsRaised counts every alert since the model's monitor started
	// (Alerts keeps the latest 10,000).
	AlertsRaised uint64              `json:"alerts_raised"`
	Subjects     []extraction.Status `json:"subjects"`
	Stats        extraction.Stats    `json:"stats"`
}

// Status returns every model's alerts (oldest first) and subjects
// (riskiest first).
func (m *Monitors) Status() map[string][]ModelStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []ModelStatus{}
	for name, e := range *m.byM.Load() {
		e.mon.Flush()
		e.mu.Lock()
		alerts, raised := append([]extraction.Alert{}, e.alerts...), e.raised
		e.mu.Unlock()
		out = append(out, ModelStatus{Model: name, Alerts: alerts, AlertsRaised: raised, Subjects: e.mon.Snapshot(), Stats: e.mon.Stats()})
	}
	return map[string][]ModelStatus{"models": out}
}
