package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	long := strings.Repeat("a", MaxFieldBytes+10)
	// A 3-byte character straddling the cut must not be split.
	straddle := strings.Repeat("a", MaxFieldBytes-len(TruncatedMark)-1) + strings.Repeat("€", 10)
	tests := []struct {
		name, in, wantJSON, wantValue string
	}{
		{"plain", "key:abc", `"key:abc"`, "key:abc"},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`, `a"b\c`},
		{"newline, return, tab", "a\nb\rc\td", `"a\nb\rc\td"`, "a\nb\rc\td"},
		{"other control", "a\x01\x1fb", `"a\u0001\u001fb"`, "a\x01\x1fb"},
		{"non-ASCII kept", "über €", `"über €"`, "über €"},
		{"invalid UTF-8 replaced", "a\xffb", "\"a\uFFFDb\"", "a\uFFFDb"},
		{"long truncated", long, `"` + long[:MaxFieldBytes-len(TruncatedMark)] + TruncatedMark + `"`, long[:MaxFieldBytes-len(TruncatedMark)] + TruncatedMark},
		{"cut at a character boundary", straddle, `"` + straddle[:MaxFieldBytes-len(TruncatedMark)-1] + TruncatedMark + `"`, straddle[:MaxFieldBytes-len(TruncatedMark)-1] + TruncatedMark},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := appendString(nil, tc.in)
			if string(got) != tc.wantJSON {
				t.Errorf("appendString(%q) = %s, want %s", tc.in, got, tc.wantJSON)
			}
			var dec string
			if err := json.Unmarshal(got, &dec); err != nil {
				t.Fatalf("encoding/json cannot read %s: %v", got, err)
			}
			if dec != tc.wantValue {
				t.Errorf("decodes to %q, want %q", dec, tc.wantValue)
			}
			if len(dec) > MaxFieldBytes || !utf8.ValidString(dec) {
				t.Errorf("decoded value is %d bytes, valid UTF-8 %v", len(dec), utf8.ValidString(dec))
			}
			if again := appendString(nil, dec); string(again) != string(got) {
				t.Errorf("not idempotent: %s, then %s", got, again)
			}
		})
	}
}

// TestRequestLine checks the field names and values through encoding/json.
func TestRequestLine(t *testing.T) {
	r := sample(1)
	r.Seq = 42
	r.Time = time.Date(2026, 3, 4, 5, 6, 7, 8000, time.FixedZone("x", 3600))
	r.Prev = Genesis
	line := appendRequest(nil, r)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	want := map[string]any{
		"type": "request", "seq": 42.0, "time": "2026-03-04T04:06:07.000008000Z", "request_id": "req-1",
		"principal": "key:abc", "auth": "api_key", "client": "127.0.0.1:5555", "transport": "grpc",
		"model": "resnet", "version": "3", "action": "infer", "decision": "allow", "rule": "role:reader",
		"input_hmac": strings.Repeat("ab", 32), "output_hmac": strings.Repeat("cd", 32),
		"input_bytes": 16.0, "output_bytes": 40.0, "status": 200.0, "error": "bad \"input\"\n\ttab",
		"flags": "", "latency_us": 101.0, "prev": Genesis,
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("line %s\ndecodes to %v\nwant %v", line, m, want)
	}
	e, err := parseEntry(line)
	if err != nil {
		t.Fatal(err)
	}
	back := e.record()
	r.Time = r.Time.UTC()
	if !reflect.DeepEqual(back, r) {
		t.Errorf("parse gives %+v, want %+v", back, r)
	}
}

func TestParseEntryRejects(t *testing.T) {
	r := sample(0)
	r.Seq, r.Time, r.Prev = 1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Genesis
	good := string(appendRequest(nil, r))
	if _, err := parseEntry([]byte(good)); err != nil {
		t.Fatalf("good line refused: %v", err)
	}
	tests := []struct{ name, line string }{
		{"space after colon", strings.Replace(good, `"seq":1`, `"seq": 1`, 1)},
		{"keys reordered", strings.Replace(good, `"type":"request","seq":1`, `"seq":1,"type":"request"`, 1)},
		{"duplicate key", strings.Replace(good, `"seq":1,`, `"seq":1,"seq":1,`, 1)},
		{"key in capitals", strings.Replace(good, `"seq"`, `"SEQ"`, 1)},
		{"unknown field", strings.Replace(good, `"seq":1,`, `"seq":1,"x":1,`, 1)},
		{"field of another type", strings.Replace(good, `"seq":1,`, `"seq":1,"reason":"open",`, 1)},
		{"escaped where the writer does not", strings.Replace(good, `"model":"resnet"`, `"model":"\u0072esnet"`, 1)},
		{"data after the object", good + " "},
		{"time not fixed width", strings.Replace(good, "00:00:00.000000000Z", "00:00:00Z", 1)},
		{"prev not a hash", strings.Replace(good, Genesis, "00", 1)},
		{"unknown type", strings.Replace(good, `"type":"request"`, `"type":"other"`, 1)},
		{"seq as float", strings.Replace(good, `"seq":1`, `"seq":1.0`, 1)},
		{"not JSON", "hello"},
		{"flags out of place", strings.Replace(good, `,"flags":"","latency_us":100`, `,"latency_us":100,"flags":""`, 1)},
	}
	// The first format, which had no flags, is still read.
	if e, err := parseEntry(appendRequestV1(nil, r)); err != nil || !e.v1 || e.Flags != "" {
		t.Errorf("first-format line: %+v, %v", e, err)
	}
	for _, tc := range tests {
		if tc.line == good {
			t.Fatalf("%s: the edit did not apply", tc.name)
		}
		if _, err := parseEntry([]byte(tc.line)); err == nil {
			t.Errorf("%s: parseEntry accepted %s", tc.name, tc.line)
		}
	}
}

func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("req-1", "key:abc", "m\"odel", "bad\ninput", int64(10), 200)
	f.Add("\xff\xfe", "", "€", strings.Repeat("x", MaxFieldBytes+1), int64(-1), -5)
	f.Fuzz(func(t *testing.T, id, principal, model, errText string, n int64, status int) {
		r := &Record{Seq: 7, Time: time.Unix(1700000000, 123).UTC(), RequestID: id, Principal: principal,
			Model: model, Error: errText, InputBytes: n, Status: status, Prev: Genesis}
		line := appendRequest(nil, r)
		if !json.Valid(line) {
			t.Fatalf("invalid JSON: %s", line)
		}
		e, err := parseEntry(line)
		if err != nil {
			t.Fatalf("parseEntry(%s): %v", line, err)
		}
		got := e.record()
		for _, p := range [][2]string{{got.RequestID, id}, {got.Principal, principal}, {got.Model, model}, {got.Error, errText}} {
			if p[0] != clampString(p[1]) {
				t.Errorf("field %q came back as %q", p[1], p[0])
			}
		}
		if got.InputBytes != n || got.Status != status {
			t.Errorf("numbers %d %d came back as %d %d", n, status, got.InputBytes, got.Status)
		}
	})
}

// FuzzParseEntry: any line either is refused or is exactly the canonical
// encoding of what it parses to.
func FuzzParseEntry(f *testing.F) {
	r := sample(2)
	r.Seq, r.Time, r.Prev = 3, time.Unix(0, 0), Genesis
	f.Add(appendRequest(nil, r))
	f.Add(appendRequestV1(nil, r))
	f.Add(appendCheckpoint(nil, &checkpoint{Seq: 1, Time: time.Unix(0, 0), Reason: "open", Every: 5, KeyID: "ab", Sig: "cd", Prev: Genesis}, true))
	f.Add(appendOutage(nil, &outage{Seq: 1, Time: time.Unix(0, 0), Since: time.Unix(0, 0), Lost: 3, Error: "x", Prev: Genesis}))
	f.Add([]byte(`{"type":"recovery"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := parseEntry(line)
		if err != nil {
			return
		}
		if got := encode(e); string(got) != string(line) {
			t.Fatalf("accepted %q, which encodes as %q", line, got)
		}
	})
}

// TestEventLine: events are chained records that Verify counts.
func TestEventLine(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv})
	if err := l.Write(sample(1)); err != nil {
		t.Fatal(err)
	}
	ev := &Event{Kind: "extraction-alarm", Principal: "key:abc", Detail: "prada W=0.81 < 0.90"}
	if err := l.Event(ev); err != nil {
		t.Fatal(err)
	}
	r := sample(2)
	r.Flags = "validation:range:input"
	if err := l.Write(r); err != nil {
		t.Fatal(err)
	}
	if ev.Seq == 0 || ev.Seq+1 != r.Seq {
		t.Errorf("event seq %d, next record %d", ev.Seq, r.Seq)
	}
	l.Close()
	files, _ := Files(path)
	rep, err := Verify(files, pub, VerifyOptions{})
	if err != nil || rep.Events != 1 || rep.Requests != 2 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"type":"event"`) || !strings.Contains(string(b), `"kind":"extraction-alarm"`) ||
		!strings.Contains(string(b), `"flags":"validation:range:input"`) {
		t.Errorf("log: %s", b)
	}
}
