package audit

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxLineBytes bounds a line Verify accepts. The writer stays far below it:
// every string field is at most MaxFieldBytes before escaping.
const MaxLineBytes = 1 << 20

// What Verify finds wrong, for errors.Is on a *VerifyError.
var (
	ErrSyntax    = errors.New("malformed record")                // not JSON, unknown field, not canonical
	ErrGenesis   = errors.New("chain does not start at genesis") // first record not seq 1 with prev Genesis
	ErrSequence  = errors.New("sequence broken")                 // a record missing, repeated or out of order
	ErrChain     = errors.New("hash chain broken")               // a record's hash is not the next one's prev
	ErrSignature = errors.New("checkpoint signature invalid")
	ErrKey       = errors.New("checkpoint signed by another key")
	ErrTorn      = errors.New("incomplete last line")    // a line without its newline
	ErrFileEnd   = errors.New("rotated file incomplete") // a file before the last does not end with its rotation checkpoint
	ErrUnsigned  = errors.New("unsigned tail too long")  // more records after the last checkpoint than it allows, or none
	ErrNoRecords = errors.New("no records")
)

// VerifyError is the first problem Verify found.
type VerifyError struct {
	File string
	Line int    // 1-based line number in File; 0 for the last line of the rotated file Open reads
	Seq  uint64 // the record at that line (for a missing or unreadable one, the seq expected there)
	Err  error  // one of the Err* kinds above
	// Detail says what is wrong in words.
	Detail string
}

func (e *VerifyError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("%v: %s", e.Err, e.Detail)
	}
	return fmt.Sprintf("%s:%d: seq %d: %v: %s", e.File, e.Line, e.Seq, e.Err, e.Detail)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// VerifyOptions relax Verify for two situations that are legitimate but
// must be asked for.
type VerifyOptions struct {
	// AllowTornTail accepts a last line without its newline at the end of
	// the last file: the writer was killed mid-write (never an acknowledged
	// record; Open removes it and says so in a recovery record). The
	// report's TornBytes counts it.
	AllowTornTail bool
	// AllowMidChainStart accepts a first file that does not start the
	// chain (seq 1, prev Genesis): older files were removed by retention.
	// The records before the first one given are then not checked.
	AllowMidChainStart bool
}

// Report is what Verify checked.
type Report struct {
	Files       int
	Records     uint64 // lines, of every type
	Requests    uint64
	Checkpoints uint64
	Outages     uint64
	Lost        uint64 // request records the log reported lost in outages
	Recoveries  uint64
	Events      uint64
	FirstSeq    uint64
	LastSeq     uint64
	Head        string // hash of the last record: the next record's prev
	// SignaturesChecked is false when Verify had no public key: then
	// checkpoints were counted, not verified, and a log rewritten by
	// someone with write access passes.
	SignaturesChecked bool
	KeyID             string // of the key checkpoints were verified with
	// LastCheckpointSeq and LastCheckpointReason describe the last
	// checkpoint; Unsigned counts the records after it, which no signature
	// covers.
	LastCheckpointSeq    uint64
	LastCheckpointReason string
	Unsigned             uint64
	// TornBytes is the size of an incomplete last line accepted with
	// AllowTornTail.
	TornBytes int64

	tornSHA256 string
}

// Closed reports whether the log ends with the checkpoint Close writes:
// nothing after a clean shutdown is missing. Otherwise the server is still
// running, or crashed, or the tail was cut.
func (r *Report) Closed() bool { return r.LastCheckpointReason == ReasonClose && r.Unsigned == 0 }

// Verify checks the log files given in chain order (Files lists them):
// every line is a canonical record; sequence numbers go up by one; each
// record's prev is the SHA-256 of the previous line, the first being
// Genesis; each file before the last ends with its rotation checkpoint;
// every checkpoint's signature verifies with pub and signs the chain head
// before it; and no more records follow the last checkpoint than its
// "every" allows. With pub nil signatures are not checked
// (Report.SignaturesChecked is false).
//
// The error is the first problem found, a *VerifyError naming file, line
// and seq. The report counts what was checked up to there.
func Verify(files []string, pub ed25519.PublicKey, opts VerifyOptions) (Report, error) {
	v := newVerifier(pub, opts)
	for i, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return v.rep, err
		}
		err = v.file(name, f, i == len(files)-1)
		f.Close()
		if err != nil {
			return v.rep, err
		}
	}
	return v.rep, v.finish()
}

// verifier checks a stream of lines; Verify and Open share it.
type verifier struct {
	pub   ed25519.PublicKey
	keyID string
	opts  VerifyOptions
	rep   Report

	started bool
	seq     uint64
	head    string
	// Where the previous line was, for naming it when the chain breaks.
	prevFile string
	prevLine int
	prevType string
	// The last checkpoint, and the first record after it that exceeds its
	// every.
	lastCP      *checkpoint
	overFile    string
	overLine    int
	overSeq     uint64
	firstOfFile uint64 // seq of the current file's first record
}

func newVerifier(pub ed25519.PublicKey, opts VerifyOptions) *verifier {
	v := &verifier{pub: pub, opts: opts}
	if pub != nil {
		v.keyID = KeyID(pub)
		v.rep.SignaturesChecked = true
		v.rep.KeyID = v.keyID
	}
	return v
}

// file checks the lines of one file. last says whether it is the last
// file, the only one that may end in a torn line (with AllowTornTail) or
// other than with a rotation checkpoint.
func (v *verifier) file(name string, r io.Reader, last bool) error {
	v.rep.Files++
	v.firstOfFile = 0
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	lines := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			if len(long) > MaxLineBytes {
				return v.fail(name, lines+1, v.seq+1, ErrSyntax, fmt.Sprintf("line longer than %d bytes", MaxLineBytes))
			}
			continue
		}
		line := chunk
		if long != nil {
			long = append(long, chunk...)
			line, long = long, nil
		}
		if err == io.EOF {
			if len(line) == 0 {
				break
			}
			lines++
			if last && v.opts.AllowTornTail {
				v.rep.TornBytes = int64(len(line))
				sum := sha256.Sum256(line)
				v.rep.tornSHA256 = hex.EncodeToString(sum[:])
				return nil
			}
			return v.fail(name, lines, v.seq+1, ErrTorn,
				fmt.Sprintf("%d bytes without a newline: the file was cut inside a record, or the writer was killed mid-write", len(line)))
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		lines++
		if len(line)-1 > MaxLineBytes {
			return v.fail(name, lines, v.seq+1, ErrSyntax, fmt.Sprintf("line longer than %d bytes", MaxLineBytes))
		}
		if err := v.line(name, lines, line[:len(line)-1]); err != nil {
			return err
		}
	}
	if !last && lines > 0 && !(v.prevType == TypeCheckpoint && v.lastCP != nil && v.lastCP.Reason == ReasonRotate && v.rep.Unsigned == 0) {
		return v.fail(name, lines, v.seq, ErrFileEnd,
			"the last line is not a rotation checkpoint: records were cut from the end of this file")
	}
	return nil
}

func (v *verifier) fail(file string, line int, seq uint64, kind error, detail string) error {
	return &VerifyError{File: file, Line: line, Seq: seq, Err: kind, Detail: detail}
}

// line checks one line, without its newline.
func (v *verifier) line(file string, n int, line []byte) error {
	want := v.seq + 1
	e, err := parseEntry(line)
	if err != nil {
		return v.fail(file, n, want, ErrSyntax, err.Error())
	}
	if !v.started {
		if !v.opts.AllowMidChainStart && (e.Seq != 1 || e.Prev != Genesis) {
			return v.fail(file, n, e.Seq, ErrGenesis,
				fmt.Sprintf("first record is seq %d with prev %.16s..., want seq 1 with prev Genesis: earlier files are missing", e.Seq, e.Prev))
		}
		v.started = true
		v.seq, v.head = e.Seq-1, e.Prev
		v.rep.FirstSeq = e.Seq
		want = e.Seq
	}
	switch {
	case e.Seq > want:
		missing := fmt.Sprintf("records %d..%d are missing or out of order", want, e.Seq-1)
		if e.Seq == want+1 {
			missing = fmt.Sprintf("record %d is missing or out of order", want)
		}
		return v.fail(file, n, want, ErrSequence, fmt.Sprintf("found seq %d: %s", e.Seq, missing))
	case e.Seq < want:
		return v.fail(file, n, want, ErrSequence, fmt.Sprintf("found seq %d again or out of order", e.Seq))
	}
	if e.Prev != v.head {
		if v.prevFile == "" {
			return v.fail(file, n, e.Seq, ErrChain, "prev does not match the hash of the record before")
		}
		return v.fail(v.prevFile, v.prevLine, e.Seq-1, ErrChain,
			fmt.Sprintf("this record does not hash to the prev of the next one (%s:%d, seq %d): it was altered, or that prev was", file, n, e.Seq))
	}
	if v.firstOfFile == 0 {
		v.firstOfFile = e.Seq
	}
	switch e.Type {
	case TypeCheckpoint:
		if err := v.checkpoint(file, n, e); err != nil {
			return err
		}
	case TypeRequest:
		v.rep.Requests++
	case TypeOutage:
		v.rep.Outages++
		v.rep.Lost += e.Lost
	case TypeRecovery:
		v.rep.Recoveries++
	case TypeEvent:
		v.rep.Events++
	}
	if e.Type != TypeCheckpoint {
		v.rep.Unsigned++
		if v.lastCP != nil && v.overFile == "" && v.rep.Unsigned > uint64(v.lastCP.Every) {
			v.overFile, v.overLine, v.overSeq = file, n, e.Seq
		}
	}
	v.rep.Records++
	v.rep.LastSeq = e.Seq
	v.seq = e.Seq
	v.head = lineHash(line)
	v.rep.Head = v.head
	v.prevFile, v.prevLine, v.prevType = file, n, e.Type
	return nil
}

func (v *verifier) checkpoint(file string, n int, e *entry) error {
	c := &e.cp
	switch c.Reason {
	case ReasonOpen, ReasonCount, ReasonInterval, ReasonRotate, ReasonClose:
	default:
		return v.fail(file, n, c.Seq, ErrSyntax, fmt.Sprintf("checkpoint reason %q", c.Reason))
	}
	if c.Every < 1 {
		return v.fail(file, n, c.Seq, ErrSyntax, fmt.Sprintf("checkpoint every %d", c.Every))
	}
	if v.pub != nil {
		if c.KeyID != v.keyID {
			return v.fail(file, n, c.Seq, ErrKey, fmt.Sprintf("key id %q, verifying with %q", c.KeyID, v.keyID))
		}
		sig, err := hex.DecodeString(c.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(v.pub, checkpointMessage(c), sig) {
			from := uint64(1)
			if v.lastCP != nil {
				from = v.lastCP.Seq + 1
			}
			return v.fail(file, n, c.Seq, ErrSignature,
				fmt.Sprintf("records %d..%d, which it covers, were altered and re-chained, or the checkpoint was", from, c.Seq))
		}
	}
	v.rep.Checkpoints++
	v.rep.LastCheckpointSeq = c.Seq
	v.rep.LastCheckpointReason = c.Reason
	v.rep.Unsigned = 0
	v.lastCP = c
	v.overFile = ""
	return nil
}

// finish checks the end of the log: at least one record and one
// checkpoint, and no more records after the last checkpoint than it
// allows.
func (v *verifier) finish() error {
	if v.rep.Records == 0 {
		return &VerifyError{Err: ErrNoRecords, Detail: "the files hold no records"}
	}
	if v.lastCP == nil {
		return v.fail(v.prevFile, v.prevLine, v.seq, ErrUnsigned, "no checkpoint: no record is covered by a signature")
	}
	if v.overFile != "" {
		return v.fail(v.overFile, v.overLine, v.overSeq, ErrUnsigned,
			fmt.Sprintf("%d records after the checkpoint at seq %d, which allows %d: later checkpoints were removed",
				v.rep.Unsigned, v.lastCP.Seq, v.lastCP.Every))
	}
	return nil
}
