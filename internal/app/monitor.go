package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/extraction"
	"github.com/aegis-inference/aegis/internal/monitor"
)

// newMonitors builds extraction monitoring: every alert is audited as an
// event and, when configured, posted to the webhook.
func newMonitors(c config.Extraction, gate *access.Gate, log *slog.Logger) *monitor.Monitors {
	hook := newWebhook(c.WebhookURL, log)
	return monitor.New(monitor.Options{
		Policy: c.Policy, GroupByNetwork: c.GroupByNetwork, GroupByTenant: c.GroupByTenant,
		ThrottleRetry: c.ThrottleRetry, Logger: log,
		OnAlert: func(model string, a extraction.Alert) {
			names := make([]string, len(a.Raised))
			for i, d := range a.Raised {
				names[i] = d.String()
			}
			detail := fmt.Sprintf("model %s: risk %.2f, action %s (was %s), raised [%s], %d queries",
				model, a.Risk, a.Action, a.Previous, strings.Join(names, ","), a.Status.Queries)
			gate.Event("extraction-alarm", a.Subject, detail)
			hook.send(model, a)
		},
	})
}

// webhook posts alerts to a URL from one goroutine, dropping alerts when
// more than a few hundred wait (the audit log has them all).
type webhook struct {
	url string
	ch  chan []byte
	log *slog.Logger
}

func newWebhook(url string, log *slog.Logger) *webhook {
	w := &webhook{url: url, log: log}
	if url == "" {
		return w
	}
	w.ch = make(chan []byte, 256)
	go w.run()
	return w
}

func (w *webhook) send(model string, a extraction.Alert) {
	if w.ch == nil {
		return
	}
	b, err := json.Marshal(struct {
		Model string           `json:"model"`
		Alert extraction.Alert `json:"alert"`
	}{model, a})
	if err != nil {
		return
	}
	select {
	case w.ch <- b:
	default:
		w.log.Warn("extraction webhook queue full; alert dropped (it is in the audit log)", "subject", a.Subject)
	}
}

func (w *webhook) run() {
	c := &http.Client{Timeout: 5 * time.Second}
	for b := range w.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(b))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			var resp *http.Response
			if resp, err = c.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
		}
		cancel()
		if err != nil {
			w.log.Warn("extraction webhook failed", "err", err)
		}
	}
}
