package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The benchmark learns of extraction alarms the way an operator does,
// from the server, never from inside it. The interface it expects (see
// docs/extraction.md, "What the benchmark expects from the server"):
//
//	GET /admin/v1/extraction/status   (operator credential: admin or audit:read)
//
//	200 {"alarms": [Alarm...], "principals": [PrincipalRisk...]}
//	404 when the server has no extraction monitoring
//
// alarms lists every alarm raised since the server started, oldest first;
// principals gives each principal's current standing per model. An alarm
// raised on traffic aggregated over principals (a split attack) has scope
// "aggregate" and names the principals it implicates.
//
// Failing that endpoint, the harness reads the audit log: a line with
// "type":"alarm" carrying the Alarm fields, or a request record whose rule
// starts with "extraction" (a request a detector refused or changed).

// Alarm is one extraction alarm.
type Alarm struct {
	Time     time.Time `json:"time"`
	Model    string    `json:"model"`
	Detector string    `json:"detector"` // e.g. "prada", "coverage", "aggregate"
	// Scope is "principal" (one caller's traffic) or "aggregate" (the
	// model's traffic over several callers).
	Scope      string   `json:"scope"`
	Principal  string   `json:"principal,omitempty"`  // scope principal: who, as in the audit log (key:<id>)
	Principals []string `json:"principals,omitempty"` // scope aggregate: whom it implicates
	// Queries is how many queries (input rows) the principal (scope
	// principal) or the model (scope aggregate) had received when the
	// alarm was raised, the query that raised it included.
	Queries int64 `json:"queries"`
	// Action is what followed: "alarm" (nothing else), "throttle",
	// "degrade" (outputs coarsened) or "block".
	Action string  `json:"action"`
	Score  float64 `json:"score,omitempty"`
}

// PrincipalRisk is a principal's standing on a model.
type PrincipalRisk struct {
	Principal string  `json:"principal"`
	Model     string  `json:"model"`
	Queries   int64   `json:"queries"`
	Risk      float64 `json:"risk"` // 0 (benign-looking) .. 1 (extraction)
	Flagged   bool    `json:"flagged"`
}

// ExtractionStatus is the body of GET /admin/v1/extraction/status.
type ExtractionStatus struct {
	Alarms     []Alarm         `json:"alarms"`
	Principals []PrincipalRisk `json:"principals"`
}

// implicates reports whether the alarm names principal.
func (a Alarm) implicates(principal string) bool {
	if a.Principal == principal {
		return true
	}
	for _, p := range a.Principals {
		if p == principal {
			return true
		}
	}
	return false
}

// errUnsupported means the server does not report extraction alarms.
var errUnsupported = errors.New("not supported by the server")

// alarmSource is where the harness reads alarms from.
type alarmSource interface {
	// Status returns every alarm raised so far, oldest first, and the
	// principals' standing (possibly none); errUnsupported when the
	// server has no extraction monitoring.
	Status(ctx context.Context) (ExtractionStatus, error)
}

// serverAlarms reads the status endpoint and, when it is missing, the
// audit log.
type serverAlarms struct{ in *instance }

var _ alarmSource = serverAlarms{}

// Status implements alarmSource.
func (s serverAlarms) Status(ctx context.Context) (ExtractionStatus, error) {
	var st ExtractionStatus
	err := s.in.admin(ctx, http.MethodGet, "/admin/v1/extraction/status", nil, &st)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, errNotFound) {
		return st, err
	}
	alarms, err := auditAlarms(s.in.audit)
	if err != nil {
		return st, err
	}
	if len(alarms) == 0 {
		return st, errUnsupported
	}
	return ExtractionStatus{Alarms: alarms}, nil
}

// auditAlarms reads alarms from the audit log at path and the files
// rotated beside it.
func auditAlarms(path string) ([]Alarm, error) {
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "audit-*.log"))
	sort.Strings(files)
	files = append(files, path)
	var out []Alarm
	for _, f := range files {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			line := sc.Bytes()
			if !strings.Contains(string(line), `"alarm"`) && !strings.Contains(string(line), `"rule":"extraction`) {
				continue
			}
			var rec struct {
				Alarm
				Type     string `json:"type"`
				Rule     string `json:"rule"`
				Decision string `json:"decision"`
			}
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			switch {
			case rec.Type == "alarm":
				out = append(out, rec.Alarm)
			case rec.Type == "request" && strings.HasPrefix(rec.Rule, "extraction"):
				a := rec.Alarm
				a.Detector, a.Scope, a.Action = rec.Rule, "principal", rec.Decision
				out = append(out, a)
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
