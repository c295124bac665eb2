package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/seal"
)

// The ORT-format experiment. ONNX Runtime can run a model saved in its own
// format (flatbuffers) straight from the caller's bytes: with
// session.use_ort_model_bytes_directly and
// session.use_ort_model_bytes_for_initializers it copies neither the model
// nor its weights, and the caller keeps the bytes alive for the session's
// life. For Aegis that would mean keeping the decrypted model in seal's
// protected mapping (mlocked, excluded from core dumps) for as long as the
// version serves, instead of wiping it after handing ONNX Runtime a copy
// in ordinary heap memory. The fixture's model is converted to ORT format
// by ONNX Runtime itself (a session with an optimized-model path), then
// signed and encrypted like the ONNX one.

// ortFormatConfig are the session settings that load an ORT-format model
// in place.
var ortFormatConfig = map[string]string{
	"session.load_model_format":                    "ORT",
	"session.use_ort_model_bytes_directly":         "1",
	"session.use_ort_model_bytes_for_initializers": "1",
}

// ortModelFile is the ORT-format model's name in its version directory.
const ortModelFile = "model.ort"

// convertToORTFormat saves the ONNX model at in as an ORT-format model at
// out (basic graph optimizations only, so that the saved graph stays
// portable, as ONNX Runtime advises for ORT-format conversion).
func convertToORTFormat(in, out string) error {
	model, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer so.Destroy()
	if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelEnableBasic); err != nil {
		return err
	}
	if err := so.AddSessionConfigEntry("session.save_model_format", "ORT"); err != nil {
		return err
	}
	if err := so.SetOptimizedModelFilePath(out); err != nil {
		return err
	}
	s, _, _, err := ort.NewDynamicAdvancedSessionForAllIO(model, so)
	if err != nil {
		return fmt.Errorf("convert to ORT format: %w", err)
	}
	return s.Destroy()
}

// prepareORTFormat adds the ORT-format version of the fixture's model:
// DIR/repo-ort/big/1/{model.ort.age,model.sig}, signed and encrypted with
// the fixture's keys.
func (m *measurer) prepareORTFormat() error {
	fx := m.fx
	fx.ortVersionDir = filepath.Join(fx.work, "repo-ort", modelName, "1")
	if err := os.MkdirAll(fx.ortVersionDir, 0o755); err != nil {
		return err
	}
	plain := filepath.Join(fx.ortVersionDir, ortModelFile)
	if _, err := m.child(childSpec{Op: opConvert, ConvertIn: fx.plain, ConvertOut: plain}, false); err != nil {
		return err
	}
	var err error
	if fx.ortDigest, err = onnx.FileDigest(plain); err != nil {
		return err
	}
	signer, err := keys.LoadSigningKey(fx.signingKey)
	if err != nil {
		return err
	}
	bundle, err := modelsig.Sign(fx.ortVersionDir, signer, modelsig.SignOptions{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(fx.ortVersionDir, modelsig.SignatureFile), bundle, 0o644); err != nil {
		return err
	}
	rcpt, err := keys.ParseRecipient(fx.recipient)
	if err != nil {
		return err
	}
	if err := seal.EncryptFile(plain, plain+seal.Suffix, rcpt); err != nil {
		return err
	}
	return os.Remove(plain)
}

// loadORTFormat creates a session that runs from the protected plaintext
// itself, which is wiped only after the session is closed. The figures
// after creation (HWMEnd, RSSEnd) are taken with both alive: what such a
// version would hold while it serves.
func loadORTFormat(spec childSpec, p *seal.Plaintext, res childResult, stopTrace func() []rssPoint) (childResult, error) {
	t := time.Now()
	s, err := newORTSession(p.Bytes(), spec.Variant)
	if err != nil {
		return res, err
	}
	res.Session = time.Since(t)
	res.HWMEnd, res.RSSEnd = procStatus("VmHWM"), procStatus("VmRSS")
	res.RSSTrace = stopTrace()
	err = s.probe(spec.Shape)
	s.close()
	t = time.Now()
	p.Wipe()
	res.Wipe = time.Since(t)
	if err != nil {
		return res, fmt.Errorf("the loaded model answers wrongly: %w", err)
	}
	res.RunChecked = true
	return res, nil
}
