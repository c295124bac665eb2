// Package doctor checks the environment Aegis runs in: the process it runs
// as, the files it trusts, the addresses it listens on and the ONNX Runtime
// library it loads. `aegis doctor` prints the report; `aegis serve` runs
// the same checks at start-up and logs them.
//
// Every check reports ok, warn or fail. Run never changes the process or
// the files: it reads facts through Process, whose nil fields read the
// running process, so tests fake them.
//
// Defaults that hold for every report:
//   - a check whose status is not ok or warn (the zero Status included)
//     counts as a failure;
//   - strict turns every warning into a failure (Report.Failed);
//   - no check reads key material: key files are checked by mode and type
//     only, the passphrase variable only for being set;
//   - a listener on anything but loopback fails, because Aegis has no TLS
//     and no authentication yet;
//   - a host name other than "localhost" is not taken for loopback.
//
// The process checks describe the process that runs them: run `aegis
// doctor` as `aegis serve` runs (same user, unit or container), for
// example as systemd ExecStartPre=, or rely on the start-up check.
package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
)

// Status is the outcome of one check.
type Status string

// The statuses a check may have. Any other value, the zero value
// included, counts as a failure.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one finding.
type Check struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
}

// Report is the outcome of Run, in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
}

// ErrFailed reports a report that failed; errors from Report.Err wrap it.
var ErrFailed = errors.New("environment checks failed")

// failing reports whether c fails: a failure, an unknown status, or a
// warning under strict.
func (c Check) failing(strict bool) bool {
	switch c.Status {
	case OK:
		return false
	case Warn:
		return strict
	}
	return true
}

// Failed reports whether any check failed; with strict, whether any check
// is not ok.
func (r Report) Failed(strict bool) bool {
	for _, c := range r.Checks {
		if c.failing(strict) {
			return true
		}
	}
	return false
}

// Err returns nil unless r.Failed(strict), and otherwise an error wrapping
// ErrFailed that names the failing checks.
func (r Report) Err(strict bool) error {
	var names []string
	for _, c := range r.Checks {
		if c.failing(strict) {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	mode := ""
	if strict {
		mode = " (strict)"
	}
	return fmt.Errorf("%w%s: %s", ErrFailed, mode, strings.Join(names, ", "))
}

// WriteText writes one line per check: status, name, message.
func (r Report) WriteText(w io.Writer) error {
	for _, c := range r.Checks {
		msg := strings.Join(strings.Fields(c.Message), " ") // one line, whatever the message holds
		if _, err := fmt.Fprintf(w, "%-4s  %-16s  %s\n", c.Status, c.Name, msg); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes the report as one JSON object: the checks, whether
// strict was asked for, and whether the report failed.
func (r Report) WriteJSON(w io.Writer, strict bool) error {
	checks := r.Checks
	if checks == nil {
		checks = []Check{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Strict bool    `json:"strict"`
		Failed bool    `json:"failed"`
		Checks []Check `json:"checks"`
	}{strict, r.Failed(strict), checks})
}

// Env is what Run checks.
type Env struct {
	// Config is the configuration `aegis serve` would run with. It need
	// not be valid: the config check reports why not.
	Config config.Config
	// Process reads the facts of the process; nil fields read the
	// running process.
	Process Process
	// Library, when set, is the library onnx.Init has already verified
	// and loaded; the check reports it rather than hash the file again.
	Library *onnx.LibraryInfo
}

// Run runs every check, in a fixed order, and never stops early.
func Run(env Env) Report {
	p := env.Process.withDefaults()
	cfg := env.Config
	scan := scanRepository(cfg.ModelRepository, p)
	checks := []Check{checkConfig(cfg), checkUser(p)}
	checks = append(checks, checkHardening(cfg, p, scan)...)
	checks = append(checks, checkConfinement(p)...)
	checks = append(checks,
		checkKeys(cfg.Keys, p, scan),
		checkTrust(cfg.Deploy),
		checkRepository(cfg.ModelRepository, scan),
		checkWritable(scan),
		checkListener("http_addr", cfg.HTTPAddr),
		checkListener("grpc_addr", cfg.GRPCAddr),
		checkTLS(cfg.TLS, time.Now()),
		checkAccess(cfg),
		checkLibrary(cfg.ONNXRuntime, env.Library),
	)
	return Report{Checks: checks}
}

// Startup runs the checks for `aegis serve`: failures are logged as
// errors, warnings as warnings, the rest at debug. It returns an error
// (wrapping ErrFailed) only when strict and any check is not ok; without
// strict the server starts, and whatever must refuse (an unpinned library,
// a loose key file) refuses where it is used.
func Startup(env Env, strict bool, log *slog.Logger) (Report, error) {
	r := Run(env)
	for _, c := range r.Checks {
		switch c.Status {
		case OK:
			log.Debug("environment check", "check", c.Name, "status", c.Status, "message", c.Message)
		case Warn:
			log.Warn("environment check", "check", c.Name, "status", c.Status, "message", c.Message)
		default:
			log.Error("environment check", "check", c.Name, "status", c.Status, "message", c.Message)
		}
	}
	if !strict {
		return r, nil
	}
	return r, r.Err(true)
}

func checkConfig(cfg config.Config) Check {
	if err := cfg.Validate(); err != nil {
		return Check{"config", Fail, err.Error()}
	}
	return Check{"config", OK, "valid"}
}

// checkLibrary verifies the ONNX Runtime library without loading it, or
// reports the one already loaded.
func checkLibrary(o config.ONNXRuntime, loaded *onnx.LibraryInfo) Check {
	const name = "onnxruntime"
	info := loaded
	if info == nil {
		i, err := onnx.CheckLibrary(onnx.LibraryOptions{Path: o.Library, AllowUnpinned: o.AllowUnpinned})
		if err != nil {
			return Check{name, Fail, err.Error()}
		}
		info = &i
	}
	if !info.Pinned {
		return Check{name, Warn, fmt.Sprintf("%s has sha256 %s, not the pinned %s; allowed by onnxruntime.allow_unpinned",
			info.Path, info.Digest, onnx.PinnedDigest)}
	}
	return Check{name, OK, fmt.Sprintf("%s has the pinned sha256 %s", info.Path, info.Digest)}
}

// list names up to three items and counts the rest.
func list(items []string) string {
	const max = 3
	if len(items) <= max {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:max], ", "), len(items)-max)
}
