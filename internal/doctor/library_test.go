package doctor_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/doctor"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// An external test package: servertest imports app, which runs the doctor
// at start-up.

func TestLibrary(t *testing.T) {
	pinned := servertest.LibraryPath(t)
	b, err := os.ReadFile(pinned)
	if err != nil {
		t.Fatal(err)
	}
	b[4096] ^= 0x5a
	tampered := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		lib     string
		allow   bool
		loaded  *onnx.LibraryInfo
		status  doctor.Status
		message string
	}{
		{"the pinned library", pinned, false, nil, doctor.OK, "has the pinned sha256 " + onnx.PinnedDigest},
		{"the pinned library, unpinned allowed", pinned, true, nil, doctor.OK, "has the pinned sha256"},
		{"a modified copy is refused", tampered, false, nil, doctor.Fail, "not the pinned digest"},
		{"a modified copy, allowed", tampered, true, nil, doctor.Warn, "allowed by onnxruntime.allow_unpinned"},
		{"a missing library", filepath.Join(t.TempDir(), "nope.so"), false, nil, doctor.Fail, "no such file"},
		{"a library already loaded is not hashed again", "/nonexistent", false,
			&onnx.LibraryInfo{Path: "/loaded.so", Digest: onnx.PinnedDigest, Pinned: true}, doctor.OK, "/loaded.so"},
		{"a loaded unpinned library", "/nonexistent", true,
			&onnx.LibraryInfo{Path: "/own.so", Digest: "00", Pinned: false}, doctor.Warn, "/own.so has sha256 00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.ModelRepository = servertest.Models(t)
			cfg.ONNXRuntime = config.ONNXRuntime{Library: tc.lib, AllowUnpinned: tc.allow}
			r := doctor.Run(doctor.Env{Config: cfg, Library: tc.loaded})
			c := r.Checks[len(r.Checks)-1]
			if c.Name != "onnxruntime" || c.Status != tc.status || !strings.Contains(c.Message, tc.message) {
				t.Errorf("got %+v, want onnxruntime %s containing %q", c, tc.status, tc.message)
			}
			if tc.status == doctor.Warn && !r.Failed(true) {
				t.Error("an unpinned library passes under strict")
			}
		})
	}
}
