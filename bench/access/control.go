package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/audit"
)

// auditStats returns the audit log counters of an instance.
func (b *bench) auditStats(inst string) (audit.Stats, error) {
	var st app.AuditStatus
	var body bytes.Buffer
	if err := b.control(http.MethodGet, "/audit", url.Values{"instance": {inst}}, &body); err != nil {
		return audit.Stats{}, err
	}
	if err := json.Unmarshal(body.Bytes(), &st); err != nil {
		return audit.Stats{}, fmt.Errorf("audit status: %w", err)
	}
	if !st.Healthy {
		return audit.Stats{}, fmt.Errorf("%s: audit log unhealthy: %+v", inst, st.Log)
	}
	return st.Log, nil
}

// control calls the server process's control listener.
func (b *bench) control(method, path string, q url.Values, out io.Writer) error {
	u := "http://" + b.info.Control + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	resp, err := b.ctl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("control %s: status %d: %s", path, resp.StatusCode, msg)
	}
	if out != nil {
		_, err = io.Copy(out, resp.Body)
	}
	return err
}

// profile captures the server process's CPU profile while one client
// sends the MLP at batch 1: the secure instances next to the baseline on
// each transport, and the JWT instance without its token cache.
func (b *bench) profile() ([]string, error) {
	wi := -1
	for i, w := range b.rep.work {
		if w.model == "mlp" && w.batch == 1 {
			wi = i
		}
	}
	if wi < 0 {
		return nil, nil
	}
	w := b.rep.work[wi]
	jobs := []struct {
		inst string
		tr   transport
	}{
		{"secure-apikey", restJSON}, {"baseline", restJSON},
		{"secure-apikey", grpcRaw}, {"baseline", grpcRaw},
		{"secure-jwt-nocache", restJSON}, {"secure-durable", restJSON},
	}
	if err := os.MkdirAll(b.opt.dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, j := range jobs {
		file := filepath.Join(b.opt.dir, fmt.Sprintf("%s-%s.prof", j.inst, j.tr))
		start := func() error {
			return b.control(http.MethodPost, "/profile/start", url.Values{"file": {file}}, nil)
		}
		s, err := b.measure(w, j.tr, 1, j.inst, b.opt.profileRequests, start)
		if stopErr := b.control(http.MethodPost, "/profile/stop", nil, nil); err == nil {
			err = stopErr
		}
		if err != nil {
			return nil, fmt.Errorf("profile %s %s: %w", j.inst, j.tr, err)
		}
		b.logf("profiled %s %s: %d requests, p50 %v -> %s", j.inst, j.tr, s.requests, s.p50(), file)
		files = append(files, file)
	}
	return files, nil
}
