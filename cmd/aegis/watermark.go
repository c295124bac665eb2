package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

const watermarkUsage = `usage:
  aegis watermark verify --principal ID --model SUSPECT.onnx STATE [--victim MODEL]
                         [--onnxruntime-lib PATH] [--allow-unpinned-onnxruntime]
                         [--label-output NAME] [--scores-output NAME] [--labels-only]
                         [--alpha 2^-64] [--json]
  aegis watermark list STATE [--json]

STATE is the server's state directory, read with the server stopped:
  --state-dir DIR | --config aegis.yaml

verify runs the suspect model on every input recorded as watermarked for the
principal and reports how often it answers the watermark label and, from its
scores, how often it ranks the watermark label first of the wrong classes,
with the probability that a model built without those answers would do as
well (exact binomial tails; see docs/watermark.md). --labels-only ignores
the suspect's scores.`

// watermarkCmd runs `aegis watermark verify|list`.
func watermarkCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "list") {
		return errors.New(watermarkUsage)
	}
	op := args[0]
	fs := flag.NewFlagSet("watermark "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, watermarkUsage) }
	stateDir := fs.String("state-dir", "", "the server's state `directory`")
	configFile := fs.String("config", "", "the server's configuration `file` (for its state directory and ONNX Runtime library)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var principal, suspect, victim, lib, labelOut, scoresOut *string
	var allowUnpinned, labelsOnly *bool
	alpha := alphaFlag(math.Exp2(-64))
	if op == "verify" {
		principal = fs.String("principal", "", "the principal `ID` whose watermarked answers to check (as in audit records: key:..., jwt:..., spiffe://...)")
		suspect = fs.String("model", "", "the suspect ONNX model `file`")
		victim = fs.String("victim", "", "only pairs answered by this `model` (needed when the principal queried several)")
		lib = fs.String("onnxruntime-lib", os.Getenv("AEGIS_ONNXRUNTIME_LIB"), "ONNX Runtime shared library `path` (env AEGIS_ONNXRUNTIME_LIB)")
		allowUnpinned = fs.Bool("allow-unpinned-onnxruntime", os.Getenv("AEGIS_ONNXRUNTIME_ALLOW_UNPINNED") == "1", "load an ONNX Runtime library whose SHA-256 is not the pinned one")
		labelOut = fs.String("label-output", "", "the suspect's label output `name` (default: found by datatype and shape)")
		scoresOut = fs.String("scores-output", "", "the suspect's scores output `name` (default: found by datatype and shape)")
		labelsOnly = fs.Bool("labels-only", false, "test the suspect's labels only, ignoring its scores")
		fs.Var(&alpha, "alpha", "significance `level` for the verdict: a probability, or 2^-N")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("watermark %s: unexpected argument %q", op, fs.Arg(0))
	}
	cfg := config.Default()
	if *configFile != "" {
		var err error
		if cfg, err = config.Load(*configFile); err != nil {
			return err
		}
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	if cfg.StateDir == "" {
		return errors.New("watermark: set --state-dir or --config")
	}
	if op == "list" {
		return watermarkList(cfg.StateDir, *asJSON, stdout)
	}
	if *principal == "" || *suspect == "" {
		return errors.New(watermarkUsage)
	}
	if *lib != "" {
		cfg.ONNXRuntime.Library = *lib
	}
	if *allowUnpinned {
		cfg.ONNXRuntime.AllowUnpinned = true
	}
	pairs, err := readPairs(cfg.StateDir, *principal)
	if err != nil {
		return err
	}
	if pairs, err = victimPairs(pairs, *victim); err != nil {
		return err
	}
	if _, err := onnx.Init(onnx.LibraryOptions{Path: cfg.ONNXRuntime.Library, AllowUnpinned: cfg.ONNXRuntime.AllowUnpinned}); err != nil {
		return err
	}
	model, err := os.ReadFile(*suspect)
	if err != nil {
		return fmt.Errorf("suspect model: %w", err)
	}
	digest := sha256.Sum256(model)
	sess, err := onnx.NewSession(model, onnx.Options{})
	if err != nil {
		return fmt.Errorf("suspect model %s: %w", *suspect, err)
	}
	defer sess.Close()
	answer := func(p *watermark.Pair) (watermark.Answer, error) {
		in, err := suspectInputs(sess.Inputs(), p.Inputs)
		if err != nil {
			return watermark.Answer{}, err
		}
		res, err := sess.Run(context.Background(), in)
		if err != nil {
			return watermark.Answer{}, fmt.Errorf("suspect model: %w", err)
		}
		defer res.Release()
		a, err := outguard.ReadAnswers(res.Outputs, sess.Outputs(), *labelOut, *scoresOut)
		if err != nil {
			return watermark.Answer{}, fmt.Errorf("suspect model: %w", err)
		}
		if len(a.Labels) != 1 {
			return watermark.Answer{}, fmt.Errorf("suspect model: %d labels for one input", len(a.Labels))
		}
		ans := watermark.Answer{Label: a.Labels[0]}
		if !*labelsOnly {
			ans.Scores = a.Row(0)
		}
		return ans, nil
	}
	res, err := watermark.Verify(pairs, answer)
	if errors.Is(err, watermark.ErrScoreClasses) {
		return fmt.Errorf("watermark verify: %w (--labels-only tests its labels alone)", err)
	}
	if err != nil {
		return fmt.Errorf("watermark verify: %w", err)
	}
	rep := verifyReport{
		Principal:  *principal,
		Victim:     pairs[0].Model,
		Versions:   versionsOf(pairs),
		First:      pairs[0].Time,
		Last:       pairs[len(pairs)-1].Time,
		Suspect:    *suspect,
		SuspectSHA: hex.EncodeToString(digest[:]),
		Result:     res,
		P:          res.P(),
		PAll:       res.PAll(),
		Alpha:      float64(alpha),
		Identified: res.Identified(float64(alpha)),
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.write(stdout)
	return nil
}

// verifyReport is what `watermark verify` prints.
type verifyReport struct {
	Principal  string    `json:"principal"`
	Victim     string    `json:"victim"`
	Versions   []string  `json:"victim_versions"`
	First      time.Time `json:"first_answer"`
	Last       time.Time `json:"last_answer"`
	Suspect    string    `json:"suspect"`
	SuspectSHA string    `json:"suspect_sha256"`
	watermark.Result
	P          float64 `json:"p"`
	PAll       float64 `json:"p_all"`
	Alpha      float64 `json:"alpha"`
	Identified bool    `json:"identified"`
}

func (r *verifyReport) write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "principal\t%s\n", r.Principal)
	fmt.Fprintf(tw, "victim\t%s (versions %s), %d classes\n", r.Victim, strings.Join(r.Versions, ", "), r.Classes)
	fmt.Fprintf(tw, "suspect\t%s (sha256 %s)\n", r.Suspect, r.SuspectSHA)
	fmt.Fprintf(tw, "pairs\t%d watermarked answers, %s to %s\n", r.Pairs, r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339))
	fmt.Fprintf(tw, "agreement\t%d with the watermark label, %d with the true label, %d other\n",
		r.AgreeWatermark, r.AgreeTrue, r.Disagree-r.AgreeWatermark)
	if r.Scored > 0 {
		fmt.Fprintf(tw, "scores\tthe watermark label ranked first of the wrong classes in %d of %d answers\n", r.TopWrong, r.Scored)
		fmt.Fprintf(tw, "chance\tp0 = 1/%d per answer that is not the true label (labels), per answer (ranking)\n", r.Classes-1)
	} else {
		fmt.Fprintf(tw, "chance\tp0 = 1/%d per answer that is not the true label\n", r.Classes-1)
	}
	fmt.Fprintf(tw, "labels\t%s: P[X ≥ %d], X ~ Binomial(%d, 1/%d)\n", pString(r.Log2PLabels), r.AgreeWatermark, r.Disagree, r.Classes-1)
	fmt.Fprintf(tw, "\t%s over all %d pairs\n", pString(r.Log2PAll), r.Pairs)
	if r.Scored > 0 {
		fmt.Fprintf(tw, "ranking\t%s: P[X ≥ %d], X ~ Binomial(%d, 1/%d)\n", pString(r.Log2PScores), r.TopWrong, r.Scored, r.Classes-1)
		fmt.Fprintf(tw, "p-value\t%s: twice the smaller of the two\n", pString(r.Log2P))
	} else {
		fmt.Fprintf(tw, "p-value\t%s: the labels test (the suspect gives no scores)\n", pString(r.Log2P))
	}
	if r.Identified {
		fmt.Fprintf(tw, "verdict\tIDENTIFIED: the suspect reproduces this principal's watermark (p < %s)\n", pString(math.Log2(r.Alpha)))
	} else {
		fmt.Fprintf(tw, "verdict\tnot identified at %s\n", pString(math.Log2(r.Alpha)))
	}
	tw.Flush()
}

// pString writes a probability given as log2: 2^-168.0 (2.7e-51).
func pString(log2 float64) string {
	if log2 == 0 {
		return "1"
	}
	if log2 > -20 {
		return strconv.FormatFloat(math.Exp2(log2), 'g', 3, 64)
	}
	// 10^(log2·log10(2)), written out without underflowing.
	l10 := log2 * math.Log10(2)
	e := math.Floor(l10)
	return fmt.Sprintf("2^%.1f (%.2fe%d)", log2, math.Pow(10, l10-e), int(e))
}

// alphaFlag is a probability given as a number or as 2^-N.
type alphaFlag float64

func (a *alphaFlag) String() string { return pString(math.Log2(float64(*a))) }

func (a *alphaFlag) Set(s string) error {
	var v float64
	var err error
	if rest, ok := strings.CutPrefix(s, "2^"); ok {
		var e float64
		e, err = strconv.ParseFloat(rest, 64)
		v = math.Exp2(e)
	} else {
		v, err = strconv.ParseFloat(s, 64)
	}
	if err != nil || !(v > 0 && v < 1) {
		return fmt.Errorf("%q is not a probability in (0, 1)", s)
	}
	*a = alphaFlag(v)
	return nil
}

// openState opens the state store, which the server must not hold.
func openState(dir string) (*state.Bolt, error) {
	if _, err := os.Stat(filepath.Join(dir, "aegis.db")); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	s, err := state.OpenBolt(dir)
	if err != nil {
		return nil, fmt.Errorf("%w (is the server running? stop it first)", err)
	}
	return s, nil
}

func readPairs(dir, principal string) ([]watermark.Pair, error) {
	s, err := openState(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	pairs, err := watermark.Pairs(s.DB(), principal)
	if err != nil {
		return nil, err
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w for principal %q", watermark.ErrNoPairs, principal)
	}
	return pairs, nil
}

// victimPairs keeps the pairs of one model: victim, or the only one there
// is.
func victimPairs(pairs []watermark.Pair, victim string) ([]watermark.Pair, error) {
	var models []string
	for _, p := range pairs {
		if !slices.Contains(models, p.Model) {
			models = append(models, p.Model)
		}
	}
	if victim == "" {
		if len(models) > 1 {
			return nil, fmt.Errorf("the principal's pairs come from models %s: choose one with --victim", strings.Join(models, ", "))
		}
		return pairs, nil
	}
	var out []watermark.Pair
	for _, p := range pairs {
		if p.Model == victim {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w from model %q (the principal's pairs come from %s)", watermark.ErrNoPairs, victim, strings.Join(models, ", "))
	}
	return out, nil
}

func versionsOf(pairs []watermark.Pair) []string {
	var vs []string
	for _, p := range pairs {
		if !slices.Contains(vs, p.Version) {
			vs = append(vs, p.Version)
		}
	}
	return vs
}

// suspectInputs arranges a pair's recorded inputs for the suspect model:
// by name when the names match, else by position for a single input. The
// datatypes must match; a recorded row whose shape differs from a fixed
// declared shape with as many elements is reshaped to it.
func suspectInputs(specs []tensor.Spec, recorded []tensor.Tensor) ([]*tensor.Tensor, error) {
	if len(specs) != len(recorded) {
		return nil, fmt.Errorf("the suspect takes %d inputs, the recorded answers %d", len(specs), len(recorded))
	}
	in := make([]*tensor.Tensor, len(specs))
	for i, s := range specs {
		j := slices.IndexFunc(recorded, func(t tensor.Tensor) bool { return t.Name == s.Name })
		if j < 0 {
			if len(specs) != 1 {
				return nil, fmt.Errorf("the suspect's input %q is not among the recorded inputs", s.Name)
			}
			j = 0
		}
		t := recorded[j]
		if t.DType != s.DType {
			return nil, fmt.Errorf("the suspect's input %q is %s, the recorded one %s", s.Name, s.DType, t.DType)
		}
		if shape := fitShape(s.Shape, t.Shape); shape != nil {
			t.Shape = shape
		}
		t.Name = s.Name
		in[i] = &t
	}
	return in, nil
}

// fitShape returns the declared shape with its variable first dimension
// set to 1 when it has as many elements as got and differs from it; nil
// to keep got.
func fitShape(declared, got []int64) []int64 {
	if len(declared) == 0 || slices.Equal(declared, got) {
		return nil
	}
	want := slices.Clone(declared)
	if want[0] < 0 {
		want[0] = 1
	}
	if slices.Contains(want, -1) {
		return nil
	}
	n, err := tensor.NumElements(want)
	m, err2 := tensor.NumElements(got)
	if err != nil || err2 != nil || n != m || slices.Equal(want, got) {
		return nil
	}
	return want
}

func watermarkList(dir string, asJSON bool, stdout io.Writer) error {
	s, err := openState(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	ps, err := watermark.Principals(s.DB())
	if err != nil {
		return err
	}
	if asJSON {
		if ps == nil {
			ps = []watermark.Principal{}
		}
		return json.NewEncoder(stdout).Encode(ps)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRINCIPAL\tPAIRS")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%d\n", p.ID, p.Pairs)
	}
	return tw.Flush()
}
