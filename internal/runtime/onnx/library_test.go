package onnx_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
)

func TestPinnedLibraryPasses(t *testing.T) {
	info, err := onnx.CheckLibrary(onnx.LibraryOptions{Path: servertest.LibraryPath(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Pinned || info.Digest != onnx.PinnedDigest {
		t.Errorf("got %+v, want the pinned digest %s", info, onnx.PinnedDigest)
	}
}

// TestTamperedLibraryRefused flips one byte of a copy of the library: the
// check must refuse it unless the operator allows their own library.
func TestTamperedLibraryRefused(t *testing.T) {
	src, err := os.Open(servertest.LibraryPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	dst, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.WriteAt([]byte{0x5a}, 4096); err != nil {
		t.Fatal(err)
	}
	dst.Close()

	_, err = onnx.CheckLibrary(onnx.LibraryOptions{Path: path})
	if !errors.Is(err, onnx.ErrUnpinnedLibrary) {
		t.Fatalf("got %v, want ErrUnpinnedLibrary", err)
	}
	// Init refuses it too, before loading anything.
	if _, err := onnx.Init(onnx.LibraryOptions{Path: path}); !errors.Is(err, onnx.ErrUnpinnedLibrary) {
		t.Fatalf("Init: got %v, want ErrUnpinnedLibrary", err)
	}
	info, err := onnx.CheckLibrary(onnx.LibraryOptions{Path: path, AllowUnpinned: true})
	if err != nil || info.Pinned {
		t.Fatalf("allowed: got %+v, %v; want unpinned info and no error", info, err)
	}
}

func TestMissingLibrary(t *testing.T) {
	if _, err := onnx.CheckLibrary(onnx.LibraryOptions{Path: filepath.Join(t.TempDir(), "nope.so")}); err == nil {
		t.Fatal("missing library accepted")
	}
}
