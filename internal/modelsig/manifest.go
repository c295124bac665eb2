package modelsig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/blake2b"
)

// Statement is an in-toto Statement v1 with the OMS predicate.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject names the model and its root digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate is the OMS manifest.
type Predicate struct {
	Serialization Serialization `json:"serialization"`
	Resources     []Resource    `json:"resources"`
}

// Serialization records how the model was enumerated and hashed.
type Serialization struct {
	Method        string       `json:"method"`
	HashType      string       `json:"hash_type"`
	ShardSize     *json.Number `json:"shard_size,omitempty"`
	AllowSymlinks bool         `json:"allow_symlinks"`
	IgnorePaths   []string     `json:"ignore_paths,omitempty"`
}

// Resource is one file (or shard) and its digest.
type Resource struct {
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
	Name      string `json:"name"`
}

// parseStatement checks the statement's types and its root digest.
func parseStatement(payload []byte) (*Statement, error) {
	var st Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fail("statement", "not JSON: %v", err)
	}
	switch {
	case st.Type != StatementType:
		return nil, fail("statement", "_type %q, want %q", clip(st.Type), StatementType)
	case st.PredicateType != PredicateType:
		return nil, fail("statement", "predicateType %q, want %q", clip(st.PredicateType), PredicateType)
	case len(st.Subject) != 1:
		return nil, fail("statement", "%d subjects, want exactly 1", len(st.Subject))
	case len(st.Predicate.Resources) == 0:
		return nil, fail("statement", "no resources")
	}
	root, err := RootDigest(st.Predicate.Resources)
	if err != nil {
		return nil, err
	}
	if got := st.Subject[0].Digest["sha256"]; got != root {
		return nil, &Error{Check: "root digest", Msg: fmt.Sprintf("resources do not hash to the subject digest (%s, subject %s)", root, clip(got))}
	}
	return &st, nil
}

// RootDigest is SHA-256 over the raw digests of resources, in the order
// listed (never re-sorted: the reference tool's order is not code point
// order, and the signer's order is what was signed).
func RootDigest(resources []Resource) (string, error) {
	h := sha256.New()
	for _, r := range resources {
		b, err := hex.DecodeString(r.Digest)
		if err != nil {
			return "", &Error{Check: "statement", File: r.Name, Msg: "digest is not hex"}
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// defaultIgnored are never part of a signed model.
var defaultIgnored = []string{".git", ".gitignore", ".gitattributes", ".github"}

// EncryptedSuffix marks an encrypted file standing for its plaintext.
const EncryptedSuffix = ".age"

// Hasher computes the serialization's digests of one file's content.
type hashSpec struct {
	method    string // "files" or "shards"
	hashType  string // "sha256" or "blake2b"
	shardSize int64
}

func newHashSpec(s Serialization) (hashSpec, error) {
	hs := hashSpec{method: s.Method, hashType: s.HashType}
	switch s.HashType {
	case "sha256", "blake2b":
	default:
		return hs, fail("statement", "hash_type %q is not supported (sha256, blake2b)", clip(s.HashType))
	}
	switch s.Method {
	case "files":
	case "shards":
		if s.ShardSize == nil {
			return hs, fail("statement", "shards without shard_size")
		}
		// The reference tool may write 1000000000.0.
		f, err := strconv.ParseFloat(string(*s.ShardSize), 64)
		if err != nil || f < 1 || f > math.MaxInt64/2 || f != math.Trunc(f) {
			return hs, fail("statement", "shard_size %q is not a positive integer", clip(string(*s.ShardSize)))
		}
		hs.shardSize = int64(f)
	default:
		return hs, fail("statement", "serialization method %q is not supported", clip(s.Method))
	}
	return hs, nil
}

func (hs hashSpec) newHash() hash.Hash {
	if hs.hashType == "blake2b" {
		h, _ := blake2b.New512(nil)
		return h
	}
	return sha256.New()
}

// digestReader hashes r whole (files) or in shards, returning resource
// names and digests for the file named name.
func (hs hashSpec) digestReader(name string, r io.Reader) ([]Resource, error) {
	if hs.method == "files" {
		h := hs.newHash()
		if _, err := io.Copy(h, r); err != nil {
			return nil, err
		}
		return []Resource{{Algorithm: hs.hashType, Digest: hex.EncodeToString(h.Sum(nil)), Name: name}}, nil
	}
	var out []Resource
	var start int64
	for {
		h := hs.newHash()
		n, err := io.Copy(h, io.LimitReader(r, hs.shardSize))
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil // empty files have no shards
		}
		out = append(out, Resource{Algorithm: hs.hashType, Digest: hex.EncodeToString(h.Sum(nil)),
			Name: fmt.Sprintf("%s:%d:%d", name, start, start+n)})
		start += n
		if n < hs.shardSize {
			return out, nil
		}
	}
}

// Source gives hashing access to files of a model directory.
type Source struct {
	// Decrypt opens an encrypted file (name.age) as its plaintext. Nil
	// means encrypted files cannot be verified (unless Known covers them).
	Decrypt func(path string) (io.ReadCloser, error)
	// Known gives the SHA-256 of plaintexts already computed elsewhere
	// (such as while decrypting a model into memory), by resource name.
	// Used for sha256 file serialization only.
	Known map[string][sha256.Size]byte
	// Plain gives plaintexts already in memory, by resource name.
	Plain map[string][]byte
}

// localFile is a file of the model directory under its resource name.
type localFile struct {
	name      string // resource name (encrypted files under their plaintext name)
	path      string
	encrypted bool
}

// enumerate lists the model's files under their resource names.
func enumerate(root string, allowSymlinks bool, ignore []string) ([]localFile, error) {
	ignored := func(rel string) bool {
		for _, c := range strings.Split(rel, "/") {
			if slices.Contains(defaultIgnored, c) {
				return true
			}
		}
		for _, p := range ignore {
			p = path.Clean(strings.TrimPrefix(p, "./"))
			if rel == p || strings.HasPrefix(rel, p+"/") {
				return true
			}
		}
		return rel == SignatureFile
	}
	var files []localFile
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ignored(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !utf8.ValidString(rel) {
			return &Error{Check: "file", File: strconv.Quote(rel), Msg: "name is not UTF-8"}
		}
		mode := d.Type()
		if mode&fs.ModeSymlink != 0 {
			if !allowSymlinks {
				return &Error{Check: "file", File: rel, Msg: "is a symbolic link, and the signature does not allow them"}
			}
			fi, err := os.Stat(p)
			if err != nil {
				return &Error{Check: "file", File: rel, Msg: "symbolic link does not resolve"}
			}
			mode = fi.Mode().Type()
		}
		if d.IsDir() || mode.IsDir() {
			return nil
		}
		if !mode.IsRegular() {
			return &Error{Check: "file", File: rel, Msg: "is not a regular file"}
		}
		lf := localFile{name: rel, path: p}
		if strings.HasSuffix(rel, EncryptedSuffix) {
			lf.name, lf.encrypted = strings.TrimSuffix(rel, EncryptedSuffix), true
		}
		if seen[lf.name] {
			return &Error{Check: "file", File: lf.name, Msg: "present both encrypted and in plaintext"}
		}
		seen[lf.name] = true
		files = append(files, lf)
		return nil
	})
	if err != nil {
		var e *Error
		if ok := asError(err, &e); ok {
			return nil, e
		}
		return nil, fail("file", "enumerate %s: %v", root, err)
	}
	if len(files) == 0 {
		return nil, fail("file", "the model directory has no files")
	}
	return files, nil
}

// digestFiles computes the resources of the local files.
func digestFiles(files []localFile, hs hashSpec, src Source) ([]Resource, error) {
	var out []Resource
	for _, f := range files {
		if d, ok := src.Known[f.name]; ok && hs.method == "files" && hs.hashType == "sha256" {
			out = append(out, Resource{Algorithm: "sha256", Digest: hex.EncodeToString(d[:]), Name: f.name})
			continue
		}
		var r io.Reader
		switch b, ok := src.Plain[f.name]; {
		case ok:
			r = bytes.NewReader(b)
		case f.encrypted:
			if src.Decrypt == nil {
				return nil, &Error{Check: "file", File: f.name, Msg: "is encrypted and no key is available to verify it"}
			}
			rc, err := src.Decrypt(f.path)
			if err != nil {
				return nil, &Error{Check: "file", File: f.name, Msg: "cannot be decrypted: " + err.Error()}
			}
			defer rc.Close()
			r = rc
		default:
			fh, err := os.Open(f.path)
			if err != nil {
				return nil, &Error{Check: "file", File: f.name, Msg: err.Error()}
			}
			defer fh.Close()
			r = fh
		}
		rs, err := hs.digestReader(f.name, r)
		if err != nil {
			return nil, &Error{Check: "file", File: f.name, Msg: "read: " + err.Error()}
		}
		out = append(out, rs...)
	}
	return out, nil
}

// compare checks signed resources against local ones, both ways.
func compare(signed, local []Resource, hs hashSpec, allowUnsigned bool) error {
	localBy := make(map[string]string, len(local))
	for _, r := range local {
		localBy[r.Name] = r.Digest
	}
	// The reference tool names the single resource of a one-file model ".".
	if len(signed) == 1 && signed[0].Name == "." && len(local) == 1 {
		signed = []Resource{{Algorithm: signed[0].Algorithm, Digest: signed[0].Digest, Name: local[0].Name}}
	}
	signedNames := make(map[string]bool, len(signed))
	for _, r := range signed {
		if !algorithmMatches(r.Algorithm, hs) {
			return &Error{Check: "file", File: r.Name, Msg: fmt.Sprintf("algorithm %q does not match hash_type %q", clip(r.Algorithm), hs.hashType)}
		}
		if signedNames[r.Name] {
			return &Error{Check: "statement", File: r.Name, Msg: "listed twice"}
		}
		signedNames[r.Name] = true
		got, ok := localBy[r.Name]
		if !ok {
			return &Error{Check: "file", File: fileOf(r.Name, hs), Msg: "is signed but missing from the model"}
		}
		if got != r.Digest {
			return &Error{Check: "file", File: fileOf(r.Name, hs), Msg: "has changed: its digest does not match the signature"}
		}
	}
	if !allowUnsigned {
		for _, r := range local {
			if !signedNames[r.Name] {
				return &Error{Check: "file", File: fileOf(r.Name, hs), Msg: "is not covered by the signature"}
			}
		}
	}
	return nil
}

func algorithmMatches(alg string, hs hashSpec) bool {
	if alg == hs.hashType {
		return true
	}
	// The reference tool writes "sha256-sharded-1000000000" for shards.
	return hs.method == "shards" && strings.HasPrefix(alg, hs.hashType+"-sharded-")
}

// fileOf strips a shard suffix ("path:start:end", parsed from the last
// two colons).
func fileOf(name string, hs hashSpec) string {
	if hs.method != "shards" {
		return name
	}
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return name
	}
	j := strings.LastIndexByte(name[:i], ':')
	if j < 0 {
		return name
	}
	return name[:j]
}
