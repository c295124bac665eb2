package metrics

import (
	"math"
	"testing"
)

func TestExposition(t *testing.T) {
	var w Writer
	w.Family("aegis_requests_total", "Requests.\nBy outcome, with a \\ in it.", Counter)
	w.Sample("aegis_requests_total", 3, "outcome", "shed")
	w.Sample("aegis_requests_total", 1e21, "outcome", `a "quoted"`+"\n"+`\name`, "odd")
	w.Family("aegis_up", "Up.", Gauge)
	w.Sample("aegis_up", Bool(true))
	w.Sample("aegis_up", math.Inf(1), "k", "inf")
	w.Sample("aegis_up", math.Inf(-1), "k", "-inf")
	w.Sample("aegis_up", math.NaN(), "k", "nan")
	w.Sample("aegis_up", 0.25, "a", "1", "b", "2")
	w.Value("aegis_seconds", "Seconds.", Counter, 1.5)
	want := "# HELP aegis_requests_total Requests.\\nBy outcome, with a \\\\ in it.\n" +
		"# TYPE aegis_requests_total counter\n" +
		"aegis_requests_total{outcome=\"shed\"} 3\n" +
		"aegis_requests_total{outcome=\"a \\\"quoted\\\"\\n\\\\name\"} 1e+21\n" +
		"# HELP aegis_up Up.\n# TYPE aegis_up gauge\n" +
		"aegis_up 1\n" +
		"aegis_up{k=\"inf\"} +Inf\n" +
		"aegis_up{k=\"-inf\"} -Inf\n" +
		"aegis_up{k=\"nan\"} NaN\n" +
		"aegis_up{a=\"1\",b=\"2\"} 0.25\n" +
		"# HELP aegis_seconds Seconds.\n# TYPE aegis_seconds counter\naegis_seconds 1.5\n"
	if got := string(w.Bytes()); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
}
