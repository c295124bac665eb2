// Package onnx runs ONNX models on ONNX Runtime. It is the only package in
// Aegis that uses cgo (through github.com/yalue/onnxruntime_go).
//
// Guarantees:
//   - The ONNX Runtime shared library is loaded only if its SHA-256 equals the
//     digest pinned in this package (libonnxruntime.sha256), unless the
//     operator explicitly allows their own library with AllowUnpinned.
//   - Sessions are created from model bytes in memory; no model file is read
//     or written here.
//   - A Session is a pool of ONNX Runtime sessions for one model version;
//     Close waits for every in-flight run before it frees them.
package onnx

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

//go:embed libonnxruntime.sha256
var pinnedDigestFile string

// PinnedDigest is the SHA-256 (hex) of the ONNX Runtime 1.24.1 CPU library
// that Aegis is built and tested against.
var PinnedDigest = strings.TrimSpace(pinnedDigestFile)

// ErrUnpinnedLibrary reports an ONNX Runtime library whose digest is not the
// pinned one, refused because the operator did not allow their own library.
var ErrUnpinnedLibrary = errors.New("onnx runtime library digest is not the pinned digest")

// LibraryOptions says which ONNX Runtime shared library to load.
type LibraryOptions struct {
	// Path is the shared library file.
	Path string
	// AllowUnpinned loads a library whose digest differs from PinnedDigest.
	// It is for operators who deliberately bring their own ONNX Runtime.
	AllowUnpinned bool
}

// LibraryInfo describes the loaded library.
type LibraryInfo struct {
	Path    string
	Digest  string // SHA-256, hex
	Pinned  bool   // Digest == PinnedDigest
	Version string // as reported by ONNX Runtime
}

var (
	initMu   sync.Mutex
	initInfo *LibraryInfo
)

// FileDigest returns the hex SHA-256 of the file at path.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckLibrary verifies the library file named by opts without loading it:
// its digest must be the pinned one unless opts.AllowUnpinned.
func CheckLibrary(opts LibraryOptions) (LibraryInfo, error) {
	digest, err := FileDigest(opts.Path)
	if err != nil {
		return LibraryInfo{}, fmt.Errorf("onnx runtime library: %w", err)
	}
	info := LibraryInfo{Path: opts.Path, Digest: digest, Pinned: digest == PinnedDigest}
	if !info.Pinned && !opts.AllowUnpinned {
		return LibraryInfo{}, fmt.Errorf("%w: %s has sha256 %s, want %s", ErrUnpinnedLibrary, opts.Path, digest, PinnedDigest)
	}
	return info, nil
}

// Init verifies and loads the ONNX Runtime library and creates its process
// environment. ONNX Runtime has one environment per process, so Init succeeds
// once; later calls return the loaded library's info if they name the same
// path, and an error otherwise.
func Init(opts LibraryOptions) (LibraryInfo, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if initInfo != nil {
		if initInfo.Path != opts.Path {
			return LibraryInfo{}, fmt.Errorf("onnx runtime already loaded from %s", initInfo.Path)
		}
		return *initInfo, nil
	}
	info, err := CheckLibrary(opts)
	if err != nil {
		return LibraryInfo{}, err
	}
	ort.SetSharedLibraryPath(opts.Path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return LibraryInfo{}, fmt.Errorf("initialise onnx runtime: %w", err)
	}
	// Telemetry is off by default on Linux builds; make sure.
	_ = ort.DisableTelemetry()
	info.Version = ort.GetVersion()
	initInfo = &info
	return info, nil
}

// Loaded reports the loaded library, if any.
func Loaded() (LibraryInfo, bool) {
	initMu.Lock()
	defer initMu.Unlock()
	if initInfo == nil {
		return LibraryInfo{}, false
	}
	return *initInfo, true
}
