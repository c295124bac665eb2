package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestMain lets the test binary serve as the benchmark's child process.
func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	os.Exit(m.Run())
}

// TestSmallRun runs the whole benchmark on a 1 MiB model, with one
// initializer and (with the experiments) with four, and checks only that it
// worked: every Aegis process decrypted the signed digest, every full load
// (today's settings and each experiment) answered exactly, and the report
// carries every row. Timings are not checked.
func TestSmallRun(t *testing.T) {
	for _, tool := range []string{"age", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install age coreutils)", tool)
		}
	}
	lib := servertest.LibraryPath(t)
	for _, tensors := range []int64{1, 4} {
		opt := options{
			size: 1 << 20, tensors: tensors, reps: 1, experiments: tensors > 1,
			dir: t.TempDir(), lib: lib, command: "go test ./bench/load",
			logf: t.Logf,
		}
		rep, err := run(opt)
		if err != nil {
			t.Fatalf("%d tensors: run: %v", tensors, err)
		}
		md := rep.markdown()
		wants := []string{
			"limit A: `age -d", "limit B: `sha256sum", "**Aegis decrypt+verify**",
			"**ONNX Runtime session creation**", "Where the time goes", "Aegis decrypt+verify / slower limit",
		}
		if opt.experiments {
			wants = append(wants, "SHA-256 on a second goroutine", "in-memory external data", "`session.disable_prepacking=1`")
		}
		for _, want := range wants {
			if !strings.Contains(md, want) {
				t.Errorf("%d tensors: report lacks %q:\n%s", tensors, want, md)
			}
		}
		for cmd, ss := range rep.warm {
			if len(ss) != 1 {
				t.Errorf("%d tensors: %s has %d samples, want 1", tensors, cmd, len(ss))
			}
		}
		if entries, err := os.ReadDir(opt.dir); err != nil || len(entries) != 0 {
			t.Errorf("%d tensors: the fixture was not removed: %v %v", tensors, entries, err)
		}
	}
}

// TestModelEncoding checks the streamed model against its own declared
// lengths: every length-delimited field of the model, graph and tensors
// must end exactly where its parent does.
func TestModelEncoding(t *testing.T) {
	for _, sh := range []modelShape{{Layers: 1, Rows: 3}, {Layers: 5, Rows: 2}} {
		var buf bytes.Buffer
		n, err := writeModelTo(&buf, sh)
		if err != nil {
			t.Fatal(err)
		}
		if int(n) != buf.Len() {
			t.Fatalf("%+v: writeModelTo reported %d bytes, wrote %d", sh, n, buf.Len())
		}
		var tensors int64
		err = eachField(buf.Bytes(), 0, func(num protowire.Number, _ protowire.Type, _, graph []byte, _ int) error {
			if num != modelGraph {
				return nil
			}
			return eachField(graph, 0, func(num protowire.Number, _ protowire.Type, _, tensor []byte, _ int) error {
				if num != graphInitializer {
					return nil
				}
				tensors++
				return eachField(tensor, 0, func(num protowire.Number, _ protowire.Type, _, raw []byte, _ int) error {
					if num == tensorRawData && int64(len(raw)) != sh.tensorBytes() {
						t.Errorf("%+v: raw_data is %d bytes, want %d", sh, len(raw), sh.tensorBytes())
					}
					return nil
				})
			})
		})
		if err != nil {
			t.Fatalf("%+v: %v", sh, err)
		}
		if tensors != sh.Layers {
			t.Errorf("%+v: %d initializers, want %d", sh, tensors, sh.Layers)
		}
	}
}

// TestExternalize checks that externalize moves exactly the raw_data of
// each initializer out, and that the references point at it.
func TestExternalize(t *testing.T) {
	sh := modelShape{Layers: 3, Rows: 4}
	var buf bytes.Buffer
	if _, err := writeModelTo(&buf, sh); err != nil {
		t.Fatal(err)
	}
	model := buf.Bytes()
	out, moved, err := externalize(model)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(sh.Layers * sh.tensorBytes()); moved != want {
		t.Errorf("moved %d bytes, want %d", moved, want)
	}
	if got, want := len(out), len(model)-moved; got > want+400 || got < want {
		t.Errorf("externalized model is %d bytes, want a little over %d", got, want)
	}
	// The first initializer's raw_data starts right after its header.
	hdr := tensorHeader(sh, 0)
	off := bytes.Index(model, hdr) + len(hdr)
	if !bytes.Contains(out, []byte("offset")) || !bytes.Contains(out, []byte(strconv.Itoa(off))) {
		t.Errorf("no external-data reference to offset %d", off)
	}
}
