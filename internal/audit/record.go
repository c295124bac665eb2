package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one request as the audit log keeps it. The caller fills the
// request fields; Write assigns Seq and Prev, and Time when it is zero.
//
// No field may hold a secret (API key, token, password) or raw tensor
// data: tensors are recorded as keyed hashes (Hasher).
type Record struct {
	// Seq is the record's position in the chain, from 1. Set by Write; it
	// names a record only if Write returned nil (a failed write's number is
	// used again).
	Seq uint64
	// Time is when the request arrived; Write sets it to the current time
	// when zero. Years 1 to 9999, kept in UTC to the nanosecond.
	Time time.Time
	// RequestID correlates the record with logs and the client's response.
	RequestID string
	// Principal is pipeline.Principal.ID ("key:abc", "jwt:alice",
	// "spiffe://..."), empty when no credential was accepted.
	Principal string
	// Auth is how the principal was authenticated (pipeline.Method*).
	Auth string
	// Client is the peer address ("203.0.113.7:51234").
	Client string
	// Transport is "http" or "grpc".
	Transport string
	// Model, Version and Action say what was asked ("infer", "metadata").
	Model, Version, Action string
	// Decision is "allow" or "deny", and Rule names what decided (an
	// authorization rule, "authn", "limit:...").
	Decision, Rule string
	// InputHMAC and OutputHMAC are Hasher.Sum of the request's inputs and
	// the response's outputs, empty when there were none.
	InputHMAC, OutputHMAC string
	// InputBytes and OutputBytes are the tensors' payload sizes.
	InputBytes, OutputBytes int64
	// Status is the response status (HTTP status code; for gRPC the HTTP
	// equivalent of the code).
	Status int
	// Error is the short, public reason a request failed, if it did.
	Error string
	// Flags are short comma-separated findings that did not refuse the
	// request ("validation:range:input", "ood"), empty when none.
	Flags string
	// LatencyMicros is the time from arrival to response, in microseconds.
	LatencyMicros int64
	// Prev is the hex SHA-256 of the previous line of the log (Genesis for
	// the first record). Set by Write.
	Prev string
}

// Record types, the "type" field of every line.
const (
	TypeRequest    = "request"    // a Record
	TypeCheckpoint = "checkpoint" // a signed statement of the chain head
	TypeOutage     = "outage"     // records lost while the log could not be written
	TypeRecovery   = "recovery"   // a torn last line removed at Open after a crash
	TypeEvent      = "event"      // something the server noticed, not a request (an extraction alarm)
)

// Checkpoint reasons, the "reason" field of a checkpoint.
const (
	ReasonOpen     = "open"     // written by Open, before any request record
	ReasonCount    = "count"    // Config.CheckpointEvery records since the last
	ReasonInterval = "interval" // Config.CheckpointInterval since the last
	ReasonRotate   = "rotate"   // the last line of a file before rotation
	ReasonClose    = "close"    // written by Close
)

// Genesis is the Prev of the first record of a log: 64 zeros.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxFieldBytes bounds every string field of a record. A longer value
// (after invalid UTF-8 is replaced by U+FFFD) is cut at a character
// boundary and ends in TruncatedMark, so that no caller-supplied string can
// make a line unbounded.
const MaxFieldBytes = 1024

// TruncatedMark ends a string field that was cut to MaxFieldBytes.
const TruncatedMark = "…[truncated]"

// timeLayout is fixed-width, so the text of a time is canonical.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// ErrInvalidRecord reports a record Write refuses (its time is outside the
// years 1 to 9999).
var ErrInvalidRecord = errors.New("invalid audit record")

func checkTime(t time.Time) error {
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: time year %d outside 1..9999", ErrInvalidRecord, y)
	}
	return nil
}

// appendRequest appends r as a JSON line without its newline. Field order
// is fixed; it is the canonical form Verify checks.
func appendRequest(b []byte, r *Record) []byte { return appendRequestForm(b, r, true) }

// appendRequestV1 appends r in the first request format, which had no
// "flags" field: the form of the records written before it was added
// (before 2026-11-22), which Verify and Open still accept so that a log
// outlives an upgrade. A record with flags has no such form.
func appendRequestV1(b []byte, r *Record) []byte { return appendRequestForm(b, r, false) }

func appendRequestForm(b []byte, r *Record, flags bool) []byte {
	b = append(b, `{"type":"request","seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = appendTime(append(b, `,"time":`...), r.Time)
	b = appendString(append(b, `,"request_id":`...), r.RequestID)
	b = appendString(append(b, `,"principal":`...), r.Principal)
	b = appendString(append(b, `,"auth":`...), r.Auth)
	b = appendString(append(b, `,"client":`...), r.Client)
	b = appendString(append(b, `,"transport":`...), r.Transport)
	b = appendString(append(b, `,"model":`...), r.Model)
	b = appendString(append(b, `,"version":`...), r.Version)
	b = appendString(append(b, `,"action":`...), r.Action)
	b = appendString(append(b, `,"decision":`...), r.Decision)
	b = appendString(append(b, `,"rule":`...), r.Rule)
	b = appendString(append(b, `,"input_hmac":`...), r.InputHMAC)
	b = appendString(append(b, `,"output_hmac":`...), r.OutputHMAC)
	b = strconv.AppendInt(append(b, `,"input_bytes":`...), r.InputBytes, 10)
	b = strconv.AppendInt(append(b, `,"output_bytes":`...), r.OutputBytes, 10)
	b = strconv.AppendInt(append(b, `,"status":`...), int64(r.Status), 10)
	b = appendString(append(b, `,"error":`...), r.Error)
	if flags {
		b = appendString(append(b, `,"flags":`...), r.Flags)
	}
	b = strconv.AppendInt(append(b, `,"latency_us":`...), r.LatencyMicros, 10)
	return appendPrev(b, r.Prev)
}

// Event is something the server noticed that is not a request: an
// extraction alarm, a principal blocked. It is chained and signed like
// every record.
type Event struct {
	Seq  uint64
	Time time.Time
	// Kind names the event ("extraction-alarm", "principal-blocked").
	Kind string
	// Principal (or a group key such as "group:tenant-a", "net:10.0.0.0/24")
	// the event is about.
	Principal string
	// Detail is a short, non-secret description ("prada W=0.81 < 0.90").
	Detail string
	Prev   string
}

func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"type":"event","seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = appendTime(append(b, `,"time":`...), e.Time)
	b = appendString(append(b, `,"kind":`...), e.Kind)
	b = appendString(append(b, `,"principal":`...), e.Principal)
	b = appendString(append(b, `,"detail":`...), e.Detail)
	return appendPrev(b, e.Prev)
}

// checkpoint is a signed statement that the chain up to Prev is as written.
type checkpoint struct {
	Seq    uint64
	Time   time.Time
	Reason string
	Every  int    // Config.CheckpointEvery in force: the most records after it before the next
	KeyID  string // KeyID of the signing key
	Sig    string // hex Ed25519 signature of checkpointMessage
	Prev   string // the chain head it signs
}

// appendCheckpoint appends c as a JSON line without its newline. With
// withSig false the "sig" field is left out: those bytes, after
// sigContext, are what the signature covers.
func appendCheckpoint(b []byte, c *checkpoint, withSig bool) []byte {
	b = append(b, `{"type":"checkpoint","seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = appendTime(append(b, `,"time":`...), c.Time)
	b = appendString(append(b, `,"reason":`...), c.Reason)
	b = strconv.AppendInt(append(b, `,"every":`...), int64(c.Every), 10)
	b = appendString(append(b, `,"key_id":`...), c.KeyID)
	if withSig {
		b = appendString(append(b, `,"sig":`...), c.Sig)
	}
	return appendPrev(b, c.Prev)
}

// sigContext prefixes the bytes a checkpoint signature covers, so that the
// audit key's signatures cannot be taken for anything else.
const sigContext = "aegis audit checkpoint v1\n"

func checkpointMessage(c *checkpoint) []byte {
	return appendCheckpoint([]byte(sigContext), c, false)
}

// outage records that the log could not be written from Since until the
// record's Time, and that Lost records were refused meanwhile.
type outage struct {
	Seq   uint64
	Time  time.Time
	Since time.Time
	Lost  uint64
	Error string // the failure's kind ("file too large"), not its detail
	Prev  string
}

func appendOutage(b []byte, o *outage) []byte {
	b = append(b, `{"type":"outage","seq":`...)
	b = strconv.AppendUint(b, o.Seq, 10)
	b = appendTime(append(b, `,"time":`...), o.Time)
	b = appendTime(append(b, `,"since":`...), o.Since)
	b = strconv.AppendUint(append(b, `,"lost":`...), o.Lost, 10)
	b = appendString(append(b, `,"error":`...), o.Error)
	return appendPrev(b, o.Prev)
}

// recovery records that Open removed a torn last line: DiscardedBytes
// bytes after the last newline, whose SHA-256 is DiscardedSHA256.
type recovery struct {
	Seq             uint64
	Time            time.Time
	DiscardedBytes  int64
	DiscardedSHA256 string
	Prev            string
}

func appendRecovery(b []byte, r *recovery) []byte {
	b = append(b, `{"type":"recovery","seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = appendTime(append(b, `,"time":`...), r.Time)
	b = strconv.AppendInt(append(b, `,"discarded_bytes":`...), r.DiscardedBytes, 10)
	b = appendString(append(b, `,"discarded_sha256":`...), r.DiscardedSHA256)
	return appendPrev(b, r.Prev)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

func appendPrev(b []byte, prev string) []byte {
	b = append(b, `,"prev":"`...)
	b = append(b, prev...)
	return append(b, `"}`...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: valid UTF-8 (invalid bytes
// become U+FFFD), at most MaxFieldBytes before escaping, with '"', '\\'
// and control characters escaped and everything else as is. It is
// idempotent through a JSON decode, which the canonical check relies on.
func appendString(b []byte, s string) []byte {
	if len(s) > MaxFieldBytes || !utf8.ValidString(s) {
		s = clampString(s)
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// clampString makes s valid UTF-8 of at most MaxFieldBytes bytes.
func clampString(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxFieldBytes {
		return s
	}
	n := MaxFieldBytes - len(TruncatedMark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + TruncatedMark
}

// entry is any line of the log as parsed; which fields a line may carry
// depends on its type, and canonical re-encoding checks that it carries no
// others.
type entry struct {
	Type string `json:"type"`
	Seq  uint64 `json:"seq"`
	Time string `json:"time"`

	RequestID     string `json:"request_id"`
	Principal     string `json:"principal"`
	Auth          string `json:"auth"`
	Client        string `json:"client"`
	Transport     string `json:"transport"`
	Model         string `json:"model"`
	Version       string `json:"version"`
	Action        string `json:"action"`
	Decision      string `json:"decision"`
	Rule          string `json:"rule"`
	InputHMAC     string `json:"input_hmac"`
	OutputHMAC    string `json:"output_hmac"`
	InputBytes    int64  `json:"input_bytes"`
	OutputBytes   int64  `json:"output_bytes"`
	Status        int    `json:"status"`
	Error         string `json:"error"`
	Flags         string `json:"flags"`
	LatencyMicros int64  `json:"latency_us"`

	Kind   string `json:"kind"`
	Detail string `json:"detail"`

	Reason string `json:"reason"`
	Every  int    `json:"every"`
	KeyID  string `json:"key_id"`
	Sig    string `json:"sig"`

	Since string `json:"since"`
	Lost  uint64 `json:"lost"`

	DiscardedBytes  int64  `json:"discarded_bytes"`
	DiscardedSHA256 string `json:"discarded_sha256"`

	Prev string `json:"prev"`

	// Parsed forms, set by parseEntry; v1 marks a request in the first
	// format (appendRequestV1).
	v1    bool
	time  time.Time
	cp    checkpoint
	since time.Time
}

// errNotCanonical reports a line that parses but is not byte for byte what
// the writer produces for its content.
var errNotCanonical = errors.New("not in canonical form")

// parseEntry parses one line (without its newline) and checks that it is
// exactly the canonical encoding of what it holds.
func parseEntry(line []byte) (*entry, error) {
	// Unknown, duplicate or differently spelt keys, other spacing and
	// other escapes all parse here but fail the canonical comparison below.
	var e entry
	if err := json.Unmarshal(line, &e); err != nil {
		return nil, fmt.Errorf("not a valid record: %v", err)
	}
	var err error
	if e.time, err = time.Parse(timeLayout, e.Time); err != nil {
		return nil, fmt.Errorf("not a valid record: time %q", e.Time)
	}
	if !isHash(e.Prev) {
		return nil, fmt.Errorf("not a valid record: prev %q is not a hex SHA-256", e.Prev)
	}
	var canon []byte
	switch e.Type {
	case TypeRequest:
		r := e.record()
		if canon = appendRequest(nil, r); !bytes.Equal(canon, line) && r.Flags == "" {
			canon, e.v1 = appendRequestV1(nil, r), true
		}
	case TypeCheckpoint:
		e.cp = checkpoint{Seq: e.Seq, Time: e.time, Reason: e.Reason, Every: e.Every, KeyID: e.KeyID, Sig: e.Sig, Prev: e.Prev}
		canon = appendCheckpoint(nil, &e.cp, true)
	case TypeOutage:
		if e.since, err = time.Parse(timeLayout, e.Since); err != nil {
			return nil, fmt.Errorf("not a valid record: since %q", e.Since)
		}
		canon = appendOutage(nil, &outage{Seq: e.Seq, Time: e.time, Since: e.since, Lost: e.Lost, Error: e.Error, Prev: e.Prev})
	case TypeRecovery:
		canon = appendRecovery(nil, &recovery{Seq: e.Seq, Time: e.time, DiscardedBytes: e.DiscardedBytes, DiscardedSHA256: e.DiscardedSHA256, Prev: e.Prev})
	case TypeEvent:
		canon = appendEvent(nil, &Event{Seq: e.Seq, Time: e.time, Kind: e.Kind, Principal: e.Principal, Detail: e.Detail, Prev: e.Prev})
	default:
		return nil, fmt.Errorf("not a valid record: unknown type %q", e.Type)
	}
	if !bytes.Equal(canon, line) {
		return nil, errNotCanonical
	}
	return &e, nil
}

func (e *entry) record() *Record {
	return &Record{
		Seq: e.Seq, Time: e.time, RequestID: e.RequestID, Principal: e.Principal, Auth: e.Auth,
		Client: e.Client, Transport: e.Transport, Model: e.Model, Version: e.Version, Action: e.Action,
		Decision: e.Decision, Rule: e.Rule, InputHMAC: e.InputHMAC, OutputHMAC: e.OutputHMAC,
		InputBytes: e.InputBytes, OutputBytes: e.OutputBytes, Status: e.Status, Error: e.Error,
		Flags: e.Flags, LatencyMicros: e.LatencyMicros, Prev: e.Prev,
	}
}

// isHash reports whether s is 64 lowercase hex digits.
func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(hexDigits, rune(s[i])) {
			return false
		}
	}
	return true
}

// lineHash is the hex SHA-256 of a line without its newline: the next
// record's Prev.
func lineHash(line []byte) string {
	var h [64]byte
	sum := sha256.Sum256(line)
	hex.Encode(h[:], sum[:])
	return string(h[:])
}
