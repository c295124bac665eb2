package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// logCheck is what the audit log of one instance held after the run.
type logCheck struct {
	inst    string
	path    string
	files   int
	report  audit.Report
	sent    int // requests the harness sent to the instance
	refused int // of which meant to be refused (no credential)
	// request records found: served (allow, 200, authenticated by the
	// instance's method, input and output hashed), refused (deny, 401, no
	// principal) and anything else
	served, denied, other uint64
	err                   error
}

// checkLogs verifies the audit log of every instance that keeps one, once
// the server process has shut down: the chain and every checkpoint's
// signature (with the instance's public key), a clean close, and one
// request record for every request sent, each saying what happened.
func (b *bench) checkLogs() ([]logCheck, error) {
	var out []logCheck
	var first error
	for _, in := range instances {
		if !in.audit {
			continue
		}
		c := logCheck{inst: in.name, path: b.info.Instances[in.name].AuditLog, sent: b.sent[in.name], refused: b.refused[in.name]}
		c.err = c.verify(in, filepath.Join(stateDir(b.work, in.name), audit.PublicKeyFile))
		if c.err != nil && first == nil {
			first = fmt.Errorf("%s: %w", in.name, c.err)
		}
		out = append(out, c)
	}
	return out, first
}

func (c *logCheck) verify(in instance, pubFile string) error {
	pub, err := audit.LoadPublicKey(pubFile)
	if err != nil {
		return err
	}
	files, err := audit.Files(c.path)
	if err != nil {
		return err
	}
	c.files = len(files)
	if c.report, err = audit.Verify(files, pub, audit.VerifyOptions{}); err != nil {
		return err
	}
	if !c.report.Closed() {
		return errors.New("log does not end with the checkpoint of a clean close")
	}
	for _, f := range files {
		if err := c.scan(f, in.auth); err != nil {
			return err
		}
	}
	switch {
	case c.report.Requests != uint64(c.sent):
		return fmt.Errorf("%d request records for %d requests sent", c.report.Requests, c.sent)
	case c.served != uint64(c.sent-c.refused) || c.denied != uint64(c.refused) || c.other != 0:
		return fmt.Errorf("records: %d served, %d refused, %d other; want %d served, %d refused",
			c.served, c.denied, c.other, c.sent-c.refused, c.refused)
	}
	return nil
}

// scan classifies the request records of one file.
func (c *logCheck) scan(name, method string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, audit.MaxLineBytes)
	for sc.Scan() {
		var r struct {
			Type       string `json:"type"`
			Principal  string `json:"principal"`
			Auth       string `json:"auth"`
			Action     string `json:"action"`
			Decision   string `json:"decision"`
			Status     int    `json:"status"`
			InputHMAC  string `json:"input_hmac"`
			OutputHMAC string `json:"output_hmac"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if r.Type != audit.TypeRequest {
			continue
		}
		switch {
		case r.Decision == "allow" && r.Status == 200 && r.Action == "infer" && r.Auth == method &&
			r.Principal != "" && r.InputHMAC != "" && r.OutputHMAC != "" &&
			(method != pipeline.MethodJWT || r.Principal == "jwt:"+jwtSubject):
			c.served++
		case r.Decision == "deny" && r.Status == 401 && r.Principal == "" && r.Auth == pipeline.MethodNone:
			c.denied++
		default:
			c.other++
		}
	}
	return sc.Err()
}
