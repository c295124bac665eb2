package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/aegis-inference/aegis/internal/oip"
)

// BenchmarkDecodeJSON isolates the REST JSON request decoding that the
// server profile shows as Aegis's largest cost: the MLP's batch-1 body (784
// FP32 numbers) through oip.DecodeInferRequest, against strconv.ParseFloat
// alone on the same 784 numbers (the floor for any decoder that parses
// with strconv), against the single-pass prototype in fastfloat_test.go,
// and against encoding/json for reference.
//
//	go test -run '^$' -bench DecodeJSON ./bench/serving
func BenchmarkDecodeJSON(b *testing.B) {
	m, _ := lookupModel("mlp")
	w, err := newWorkload("", m, 1)
	if err != nil {
		b.Fatal(err)
	}
	body := w.jsonBody
	start := bytes.IndexByte(body, '[') // the shape
	start += bytes.Index(body[start:], []byte(`"data":[`)) + len(`"data":[`)
	end := bytes.IndexByte(body[start:], ']') + start
	tokens := bytes.Split(body[start:end], []byte(","))
	n := float64(len(tokens))

	b.Run("oip.DecodeInferRequest", func(b *testing.B) {
		lim := oip.DefaultLimits()
		for b.Loop() {
			if _, err := oip.DecodeInferRequest(body, nil, lim); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/number")
	})
	b.Run("strconv.ParseFloat-only", func(b *testing.B) {
		out := make([]float32, 0, len(tokens))
		for b.Loop() {
			out = out[:0]
			for _, t := range tokens {
				f, err := strconv.ParseFloat(string(t), 32)
				if err != nil {
					b.Fatal(err)
				}
				out = append(out, float32(f))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/number")
	})
	b.Run("single-pass-prototype", func(b *testing.B) {
		data := body[start:end]
		out := make([]float32, 0, len(tokens))
		for b.Loop() {
			if out, err = decodeFlatFP32(data, out[:0]); err != nil {
				b.Fatal(err)
			}
		}
		for i, t := range tokens {
			want, _ := strconv.ParseFloat(string(t), 32)
			if out[i] != float32(want) {
				b.Fatalf("number %d: got %v, want %v", i, out[i], want)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/number")
	})
	b.Run("encoding/json", func(b *testing.B) {
		var r struct {
			Inputs []struct {
				Name     string    `json:"name"`
				Shape    []int64   `json:"shape"`
				Datatype string    `json:"datatype"`
				Data     []float32 `json:"data"`
			} `json:"inputs"`
		}
		for b.Loop() {
			if err := json.Unmarshal(body, &r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/number")
	})
}
