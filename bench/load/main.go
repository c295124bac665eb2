// Command load measures how long Aegis takes to load a large encrypted,
// signed model, against the limit of this machine measured in the same run,
// and prints the results as a markdown table (docs/benchmarks.md says how to
// read them).
//
// It writes a fresh fixture under -dir: an ONNX model y = MatMul(x, W) whose
// FP32 initializer W is -size bytes (written directly as protobuf, no
// Python), signed with a new key (OpenSSF model signing) and encrypted with
// seal.EncryptFile to a new age identity, laid out as a model repository
// (DIR/big/1/{model.onnx.age,model.sig}); a plaintext copy is kept outside
// the repository only for the sha256sum limit, and everything is removed at
// the end unless -keep.
//
// It then measures, in rounds that interleave them, each command in its own
// process:
//
//   - limit A: age -d -i IDENTITY model.onnx.age > /dev/null (the age CLI);
//   - limit B: sha256sum of the plaintext;
//   - Aegis decrypt+verify: seal.DecryptFile (protected memory, SHA-256 in
//     the same pass) and deploy.Policy.Check with the digest as a known
//     plaintext digest, exactly as repository.loadVersion does, timed from
//     the open to the verified plaintext;
//   - Aegis full load: the same, then onnx.NewSession from the plaintext
//     (timed separately), Wipe, and one run whose output is checked exactly;
//   - the same decrypt+verify with mlock refused, and, with -experiments,
//     two candidate changes to internal/seal (experiment.go) and full loads
//     under candidate ONNX Runtime settings (ortoptions.go, extinit.go,
//     ortformat.go).
//
// Peak memory is each process's peak RSS (getrusage); one more full load
// samples its RSS every 2 ms. The page cache is warmed first, so the main
// figures are warm-cache; with -cold-reps and permission to write
// /proc/sys/vm/drop_caches, cold-cache rounds follow.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

func main() {
	if childMain() {
		return
	}
	opt, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rep, err := run(opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/load:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	os.Stdout.WriteString(md)
	if opt.out != "" {
		if err := os.WriteFile(opt.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench/load:", err)
			os.Exit(1)
		}
	}
}

// options configure one run.
type options struct {
	size        int64 // bytes of the weights
	tensors     int64 // how many initializers hold them
	reps        int   // warm-cache rounds
	coldReps    int   // cold-cache rounds (0: none)
	dir         string
	out         string
	keep        bool
	experiments bool
	profileDir  string // "" for no profiles
	lib         string
	command     string
	logf        func(string, ...any)
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	size := fs.String("size", "1GiB", "size of the model's weights (a multiple of 16KiB times -tensors; KiB, MiB, GiB suffixes)")
	tensors := fs.Int64("tensors", 16, "how many FP32 initializers (MatMul weights) hold the weights")
	reps := fs.Int("reps", 5, "warm-cache repetitions of each measurement")
	cold := fs.Int("cold-reps", 3, "cold-cache repetitions (needs root to drop the page cache; 0 for none)")
	dir := fs.String("dir", "build/bench/load", "working directory; the fixture goes in DIR/work and is removed at the end")
	out := fs.String("o", "build/bench/load/results.md", "also write the markdown report here (\"\" for none)")
	keep := fs.Bool("keep", false, "keep the fixture (keys, encrypted model, plaintext copy)")
	exp := fs.Bool("experiments", true, "also measure the candidate changes to internal/seal")
	prof := fs.String("profile-dir", "build/bench/load", "write CPU profiles of one decrypt+verify and one full load here (\"\" for none)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	n, err := parseSize(*size)
	if err != nil {
		return options{}, fmt.Errorf("-size: %w", err)
	}
	if _, err := shapeFor(n, *tensors); err != nil {
		return options{}, fmt.Errorf("-size: %w", err)
	}
	if *reps < 1 || *cold < 0 {
		return options{}, fmt.Errorf("-reps must be at least 1 and -cold-reps at least 0")
	}
	root, err := benchutil.RepoRoot()
	if err != nil {
		return options{}, err
	}
	lib := os.Getenv("AEGIS_ONNXRUNTIME_LIB")
	if lib == "" {
		lib = filepath.Join(root, "build", "onnxruntime", "libonnxruntime.so.1")
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	return options{
		size: n, tensors: *tensors, reps: *reps, coldReps: *cold,
		dir: abs(*dir), out: abs(*out), keep: *keep, experiments: *exp,
		profileDir: abs(*prof), lib: lib,
		command: strings.TrimSpace("go run ./bench/load " + strings.Join(args, " ")),
		logf: func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		},
	}, nil
}

// parseSize parses a byte count with an optional KiB, MiB or GiB suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return n * mult, nil
}

// run prepares the fixture, measures and cleans up.
func run(opt options) (*report, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.dir, 0o755); err != nil {
		return nil, err
	}
	work := filepath.Join(opt.dir, "work")
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	rep := &report{opt: opt, env: environment(), busyBefore: otherBenchmarks()}
	fx, err := prepare(work, opt.size, opt.tensors, opt.logf)
	if !opt.keep {
		defer os.RemoveAll(work)
	}
	if err != nil {
		return nil, err
	}
	rep.fx = fx
	m := &measurer{fx: fx, self: self, lib: opt.lib, profil: opt.profileDir, logf: opt.logf}

	if opt.experiments {
		opt.logf("converting the model to ORT format")
		if err := m.prepareORTFormat(); err != nil {
			return nil, err
		}
	}
	opt.logf("checking the age CLI's plaintext and warming the page cache")
	if err := m.checkAgeCLI(); err != nil {
		return nil, err
	}
	if err := warmFiles(fx.sealed, fx.plain); err != nil {
		return nil, err
	}
	base, err := m.child(childSpec{Op: opBaseline}, false)
	if err != nil {
		return nil, err
	}
	rep.base = base

	cmds := []string{cmdAge, cmdSHA256sum, cmdVerify, cmdLoad, cmdParts}
	if canDropIPCLock() {
		cmds = append(cmds, cmdNoLock)
	}
	if opt.experiments {
		cmds = append(cmds, cmdPipelined, cmdReaderAt)
		cmds = append(cmds, slices.Sorted(maps.Keys(ortVariants))...)
	}
	opt.logf("warm-up round (not reported)")
	if _, err := m.rounds(cmds, 1, false); err != nil {
		return nil, err
	}
	opt.logf("%d warm-cache rounds", opt.reps)
	if rep.warm, err = m.rounds(cmds, opt.reps, false); err != nil {
		return nil, err
	}
	if opt.coldReps > 0 && canDropCaches() {
		coldCmds := []string{cmdAge, cmdSHA256sum, cmdVerify, cmdLoad}
		if opt.experiments {
			coldCmds = append(coldCmds, cmdPipelined)
		}
		opt.logf("%d cold-cache rounds", opt.coldReps)
		if rep.cold, err = m.rounds(coldCmds, opt.coldReps, true); err != nil {
			return nil, err
		}
		if err := warmFiles(fx.sealed, fx.plain); err != nil {
			return nil, err
		}
	}
	opt.logf("one traced full load")
	if rep.trace, err = m.child(childSpec{Op: opLoad, TraceRSS: true}, false); err != nil {
		return nil, err
	}
	if opt.profileDir != "" {
		for _, op := range []string{opVerify, opLoad} {
			p, err := m.profile(op)
			if err != nil {
				return nil, err
			}
			rep.profiles = append(rep.profiles, p)
		}
	}
	rep.busyAfter = otherBenchmarks()
	rep.env.loadAfter = benchutil.LoadAverage()
	if !opt.keep {
		if err := fx.cleanup(); err != nil {
			return nil, err
		}
	}
	return rep, nil
}
