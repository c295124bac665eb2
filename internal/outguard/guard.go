package outguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Marker chooses the label each row of a response is answered with: the
// model's, or a forensic watermark label (package watermark).
type Marker interface {
	// Marks reports whether answers of model may be marked. The guard
	// locates labels only for those models, and refuses an answer of one
	// whose label and scores it cannot locate.
	Marks(model pipeline.Target) bool
	// Mark is given the model version that answered, the request's inputs
	// and each row's label as the model answered it (labels[r] for row r;
	// the rows are the inputs' first dimension). It rewrites in labels the
	// rows it marks. classes is the number of classes (the scores' second
	// dimension), or 0 when the response carries no scores. Mark runs on
	// the request path: it must not block on I/O, and must take the same
	// time whether it marks a row or not.
	Mark(ctx context.Context, model pipeline.Target, inputs []tensor.Tensor, labels []int64, classes int)
}

// Guard is the output-hardening stage. It goes in the chain so that it
// wraps the handler that runs the model: it shapes the response after
// inference and before the transport encodes it (and before the audit
// record hashes the outputs).
type Guard struct {
	// Policy returns the policy configured for the model version that
	// answered. Nil means Default() for every model.
	Policy func(pipeline.Target) Policy
	// Marker, if set, watermarks responses before they are shaped.
	Marker Marker

	// resolves remembers resolve's answers: they depend only on the
	// policy and the model's declared outputs, which a request does not
	// change. At most maxResolves are kept.
	resolves sync.Map // resolveKey → resolveAnswer
	nresolve atomic.Int32
	last     atomic.Pointer[resolveEntry] // the latest answer: most requests ask it again
}

type resolveEntry struct {
	k resolveKey
	a resolveAnswer
}

type resolveKey struct {
	specs *tensor.Spec // the declared outputs' array (a model version's, fixed)
	n     int
	p     Policy
}

type resolveAnswer struct {
	p   Policy
	err error
}

const maxResolves = 1024

// resolved is resolve(p, specs), remembered.
func (g *Guard) resolved(p Policy, specs []tensor.Spec) (Policy, error) {
	if len(specs) == 0 {
		return resolve(p, specs)
	}
	k := resolveKey{&specs[0], len(specs), p}
	if e := g.last.Load(); e != nil && e.k == k {
		return e.a.p, e.a.err
	}
	if a, ok := g.resolves.Load(k); ok {
		a := a.(resolveAnswer)
		g.last.Store(&resolveEntry{k, a})
		return a.p, a.err
	}
	rp, err := resolve(p, specs)
	if g.nresolve.Load() < maxResolves {
		if _, loaded := g.resolves.LoadOrStore(k, resolveAnswer{rp, err}); !loaded {
			g.nresolve.Add(1)
		}
	}
	return rp, err
}

var _ pipeline.Stage = (*Guard)(nil).Stage

// outputSpecs is what the guard may learn of the model's declared
// outputs from the request's target (repository.Version has it).
type outputSpecs interface {
	Outputs() []tensor.Spec
}

// Stage returns the guard as a pipeline stage.
func (g *Guard) Stage(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
		resp, err := next.Infer(ctx, req)
		if err != nil || resp == nil {
			return resp, err
		}
		if err := g.shape(ctx, req, resp); err != nil {
			resp.Release()
			return nil, err
		}
		return resp, nil
	})
}

// PolicyFor returns the policy for a request to target by principal: the
// model's narrowed by the principal's scopes.
func (g *Guard) PolicyFor(target pipeline.Target, principal *pipeline.Principal) Policy {
	p := Default()
	if g.Policy != nil && target != nil {
		p = g.Policy(target)
	}
	if principal != nil {
		p = Narrow(p, principal.Scopes)
	}
	return p
}

func (g *Guard) shape(ctx context.Context, req *pipeline.Request, resp *pipeline.Response) (err error) {
	p := g.PolicyFor(req.Target, pipeline.PrincipalFrom(ctx))
	mark := g.Marker != nil && req.Target != nil && g.Marker.Marks(req.Target)
	if p.passThrough() && !mark {
		return nil
	}
	findLayout := needsLayout(p) || mark
	var lp Policy
	if findLayout {
		var specs []tensor.Spec
		if s, ok := req.Target.(outputSpecs); ok {
			specs = s.Outputs()
		}
		lp, err = g.resolved(p, specs)
	}
	var w *work
	if err == nil {
		w, err = prepare(lp, resp.Outputs, findLayout)
	}
	if err != nil {
		return apierr.Wrap(apierr.Internal, fmt.Errorf("output policy: %w", err), "the model's outputs could not be shaped")
	}
	defer w.release()
	marked := false
	if mark {
		if labels := w.rowLabels(); labels != nil {
			w.answered = append(w.answered[:0], labels...)
			answered := w.answered
			g.Marker.Mark(ctx, req.Target, req.Inputs, labels, w.l.classes)
			for r, c := range labels {
				if c != answered[r] {
					w.relabel(r, c)
					marked = true
				}
			}
		}
	}
	if p.passThrough() {
		if !marked {
			return nil
		}
		// Marked rows are written back; nothing else changes.
		if w.labels != nil {
			resp.Outputs[w.l.label].Tensor = withInts(resp.Outputs[w.l.label].Tensor, w.labels)
		}
		if w.scores != nil {
			resp.Outputs[w.l.scores].Tensor = withFloats(resp.Outputs[w.l.scores].Tensor, w.scores)
		}
		return nil
	}
	outs, err := w.finish(p)
	if errors.Is(err, ErrNothingToServe) {
		return apierr.Wrap(apierr.PermissionDenied, err, "the requested outputs are not served to this credential")
	}
	if err != nil {
		return apierr.Wrap(apierr.Internal, fmt.Errorf("output policy: %w", err), "the model's outputs could not be shaped")
	}
	resp.Outputs = outs
	if w.sh != nil {
		w.sh.attach(resp)
	}
	return nil
}
