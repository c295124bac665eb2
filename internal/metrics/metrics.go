// Package metrics writes the Prometheus text exposition format (version
// 0.0.4): families of counters and gauges, each with its HELP and TYPE
// lines, and samples with escaped label values. It holds no state: the
// server reads its counters when scraped and writes them here.
package metrics

import (
	"bytes"
	"math"
	"strconv"
	"strings"
)

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Kinds of family.
const (
	Counter = "counter"
	Gauge   = "gauge"
)

// Writer accumulates an exposition. The zero value is ready to use.
type Writer struct {
	b bytes.Buffer
}

// Family starts the family name (help and kind: Counter or Gauge); its
// samples follow.
func (w *Writer) Family(name, help, kind string) {
	w.b.WriteString("# HELP ")
	w.b.WriteString(name)
	w.b.WriteByte(' ')
	w.b.WriteString(helpEscaper.Replace(help))
	w.b.WriteString("\n# TYPE ")
	w.b.WriteString(name)
	w.b.WriteByte(' ')
	w.b.WriteString(kind)
	w.b.WriteByte('\n')
}

// Sample writes one sample of the family name: labels are name, value
// pairs (an odd one out is dropped).
func (w *Writer) Sample(name string, v float64, labels ...string) {
	w.b.WriteString(name)
	if len(labels) >= 2 {
		w.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b.WriteByte(',')
			}
			w.b.WriteString(labels[i])
			w.b.WriteString(`="`)
			w.b.WriteString(labelEscaper.Replace(labels[i+1]))
			w.b.WriteByte('"')
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	w.b.WriteString(formatValue(v))
	w.b.WriteByte('\n')
}

// Value writes a family of one unlabelled sample.
func (w *Writer) Value(name, help, kind string, v float64) {
	w.Family(name, help, kind)
	w.Sample(name, v)
}

// Bytes returns the exposition written so far.
func (w *Writer) Bytes() []byte { return w.b.Bytes() }

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Bool is 1 for true, 0 for false: a gauge of a condition.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
