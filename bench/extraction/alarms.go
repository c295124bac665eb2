package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The benchmark learns of extraction alarms the way an operator does,
// from the server, never from inside it. The interface it expects (also
// in README.md) is internal/extraction's Alert and Status, as they
// marshal, per model:
//
//	GET /admin/v1/extraction/status   (operator credential: admin or audit:read)
//
//	200 {"models": [{"model": "digits_mlp",
//	                 "alerts":   [extraction.Alert...],    every alert since start, oldest first
//	                 "subjects": [extraction.Status...]}]} every principal and group tracked now
//	404 when the server has no extraction monitoring
//
// An alert on a group (group: true; e.g. the network group of a client
// address, or a tenant) implicates the principals whose status lists that
// group. The alert's status.queries (the subject's query count when it
// was raised, the raising query included) places it among the harness's
// queries.
//
// Failing that endpoint the harness reads the audit log: the event
// records of kind extraction-alarm the server writes for every alert
// (internal/app: detail "model M: risk R, action A (was P), raised [D],
// N queries"), or a request record whose rule starts with "extraction".

// ExtractionStatus is the body of GET /admin/v1/extraction/status.
type ExtractionStatus struct {
	Models []ModelExtraction `json:"models"`
}

// ModelExtraction is one model's monitor.
type ModelExtraction struct {
	Model    string          `json:"model"`
	Alerts   []Alert         `json:"alerts"`
	Subjects []SubjectStatus `json:"subjects"`
}

// Alert mirrors extraction.Alert: a principal or group escalated.
type Alert struct {
	Time    time.Time     `json:"time"`
	Subject string        `json:"subject"`
	Group   bool          `json:"group"`
	Raised  []string      `json:"raised,omitempty"` // detectors whose alarm this raised: prada, knn, ood_rate
	Risk    float64       `json:"risk"`
	Action  string        `json:"action"` // none, alert, throttle, degrade, block
	Status  SubjectStatus `json:"status"`
}

// SubjectStatus mirrors the fields of extraction.Status the harness reads.
type SubjectStatus struct {
	Subject    string    `json:"subject"`
	Group      bool      `json:"group"`
	Groups     []string  `json:"groups,omitempty"`
	Queries    int64     `json:"queries"`
	Risk       float64   `json:"risk"`
	Action     string    `json:"action"`
	Alarms     []string  `json:"alarms,omitempty"`
	FirstAlarm time.Time `json:"first_alarm,omitzero"`
}

// alarm is an alert as the harness uses it: whom it implicates.
type alarm struct {
	time       time.Time
	model      string
	detector   string
	aggregate  bool     // raised on a group's traffic
	principals []string // implicated
	queries    int64    // the subject's queries when raised; 0 unknown
	action     string
}

// alarms turns the status into alarms, a group's naming the principals
// of that group the monitor tracks.
func (st ExtractionStatus) alarms() []alarm {
	var out []alarm
	for _, m := range st.Models {
		for _, a := range m.Alerts {
			al := alarm{time: a.Time, model: m.Model, aggregate: a.Group, queries: a.Status.Queries, action: a.Action}
			al.detector = strings.Join(a.Raised, "+")
			if al.detector == "" {
				al.detector = "action:" + a.Action
			}
			if !a.Group {
				al.principals = []string{a.Subject}
			} else {
				for _, s := range m.Subjects {
					if !s.Group && slices.Contains(s.Groups, a.Subject) {
						al.principals = append(al.principals, s.Subject)
					}
				}
			}
			out = append(out, al)
		}
	}
	return out
}

// risk returns the highest risk of the given principals on model ("" for
// any model), and false if the status has none of them.
func (st ExtractionStatus) risk(model string, principals []string) (float64, bool) {
	best, ok := 0.0, false
	for _, m := range st.Models {
		if model != "" && m.Model != model {
			continue
		}
		for _, s := range m.Subjects {
			if !s.Group && slices.Contains(principals, s.Subject) && (!ok || s.Risk > best) {
				best, ok = s.Risk, true
			}
		}
	}
	return best, ok
}

func (a alarm) implicates(principal string) bool { return slices.Contains(a.principals, principal) }

// errUnsupported means the server does not report extraction alarms.
var errUnsupported = errors.New("not supported by the server")

// alarmSource is where the harness reads alarms from.
type alarmSource interface {
	// Status returns the monitors' alerts so far and the subjects'
	// standing; errUnsupported when the server has no extraction
	// monitoring.
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
	st, err = auditAlerts(s.in.audit)
	if err != nil {
		return st, err
	}
	if len(st.Models) == 0 {
		return st, errUnsupported
	}
	return st, nil
}

// alarmDetail parses an extraction-alarm event's detail.
var alarmDetail = regexp.MustCompile(`^model (\S+): risk [0-9.]+, action (\w+) \(was \w+\), raised \[([^\]]*)\], (\d+) queries`)

// auditAlerts reads alerts from the audit log at path and the files
// rotated beside it.
func auditAlerts(path string) (ExtractionStatus, error) {
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "audit-*.log"))
	sort.Strings(files)
	files = append(files, path)
	byModel := map[string]*ModelExtraction{}
	var order []string
	add := func(model string, a Alert) {
		m := byModel[model]
		if m == nil {
			m = &ModelExtraction{Model: model}
			byModel[model] = m
			order = append(order, model)
		}
		m.Alerts = append(m.Alerts, a)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return ExtractionStatus{}, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.Contains(line, []byte(`"extraction-alarm"`)) && !bytes.Contains(line, []byte(`"rule":"extraction`)) {
				continue
			}
			var rec struct {
				Type      string    `json:"type"`
				Time      time.Time `json:"time"`
				Kind      string    `json:"kind"`
				Detail    string    `json:"detail"`
				Model     string    `json:"model"`
				Principal string    `json:"principal"`
				Rule      string    `json:"rule"`
				Decision  string    `json:"decision"`
			}
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			switch {
			case rec.Type == "event" && rec.Kind == "extraction-alarm":
				m := alarmDetail.FindStringSubmatch(rec.Detail)
				if m == nil {
					continue
				}
				q, _ := strconv.ParseInt(m[4], 10, 64)
				a := Alert{Time: rec.Time, Subject: rec.Principal, Action: m[2], Status: SubjectStatus{Queries: q},
					Group: strings.HasPrefix(rec.Principal, "net:") || strings.HasPrefix(rec.Principal, "tenant:")}
				if m[3] != "" {
					a.Raised = strings.Split(m[3], ",")
				}
				add(m[1], a)
			case rec.Type == "request" && strings.HasPrefix(rec.Rule, "extraction"):
				add(rec.Model, Alert{Time: rec.Time, Subject: rec.Principal, Raised: []string{rec.Rule}, Action: rec.Decision})
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return ExtractionStatus{}, err
		}
	}
	var st ExtractionStatus
	for _, m := range order {
		st.Models = append(st.Models, *byModel[m])
	}
	return st, nil
}
