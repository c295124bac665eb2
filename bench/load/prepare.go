package main

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/seal"
)

// modelName names the benchmark model in its repository.
const modelName = "big"

// fixture is a model repository holding one encrypted, signed version of
// the benchmark model, its keys, and (for the sha256sum limit only) a
// plaintext copy outside the repository.
type fixture struct {
	work       string // everything below is in here; removed by cleanup
	versionDir string // work/repo/big/1
	sealed     string // versionDir/model.onnx.age
	plain      string // work/plain.onnx
	identity   string // age identity file
	signingKey string
	trustedKey string // the signing key's public half (PEM)
	shape      modelShape
	modelSize  int64  // bytes of the plaintext model file
	sealedSize int64  // bytes of the encrypted file
	digest     string // SHA-256 (hex) of the plaintext model
	recipient  string // the identity's public key

	// The same model in ORT format, for the ORT-format experiment.
	ortVersionDir string // work/repo-ort/big/1, holding model.ort.age and model.sig
	ortDigest     string
}

// prepare writes a fresh fixture into work (which must not exist): new
// keys, the model with layers initializers of weights bytes together, its signature
// (OpenSSF model signing, as `aegis model sign` writes it), and the model
// encrypted with seal.EncryptFile. The plaintext leaves the repository,
// which then holds DIR/big/1/{model.onnx.age,model.sig} only.
func prepare(work string, weights, layers int64, logf func(string, ...any)) (*fixture, error) {
	sh, err := shapeFor(weights, layers)
	if err != nil {
		return nil, err
	}
	// The encrypted model, the plaintext copy and, for the ORT-format
	// experiment, the same two again.
	if err := checkDisk(filepath.Dir(work), 4*weights+64<<20); err != nil {
		return nil, err
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, err
	}
	fx := &fixture{
		work:       work,
		versionDir: filepath.Join(work, "repo", modelName, "1"),
		plain:      filepath.Join(work, "plain.onnx"),
		identity:   filepath.Join(work, "keys", "identity.txt"),
		signingKey: filepath.Join(work, "keys", "signing.pem"),
		trustedKey: filepath.Join(work, "keys", "signing.pem.pub"),
		shape:      sh,
	}
	fx.sealed = filepath.Join(fx.versionDir, "model.onnx"+seal.Suffix)
	gen, err := keys.GenerateIdentityFile(fx.identity)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	fx.recipient = gen.Recipient
	if err := keys.GenerateSigningKey(fx.signingKey, fx.trustedKey); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := os.MkdirAll(fx.versionDir, 0o755); err != nil {
		return nil, err
	}

	plainInRepo := filepath.Join(fx.versionDir, "model.onnx")
	logf("writing a %s model (%d FP32 initializers of %d x %d)", human(weights), sh.Layers, sh.Rows, modelCols)
	if fx.modelSize, err = writeModel(plainInRepo, sh); err != nil {
		return nil, err
	}
	if fx.digest, err = onnx.FileDigest(plainInRepo); err != nil {
		return nil, err
	}

	logf("signing")
	signer, err := keys.LoadSigningKey(fx.signingKey)
	if err != nil {
		return nil, err
	}
	bundle, err := modelsig.Sign(fx.versionDir, signer, modelsig.SignOptions{})
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if err := os.WriteFile(filepath.Join(fx.versionDir, modelsig.SignatureFile), bundle, 0o644); err != nil {
		return nil, err
	}

	logf("encrypting")
	rcpt, err := keys.ParseRecipient(gen.Recipient)
	if err != nil {
		return nil, err
	}
	if err := seal.EncryptFile(plainInRepo, fx.sealed, rcpt); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := os.Rename(plainInRepo, fx.plain); err != nil {
		return nil, err
	}
	fi, err := os.Stat(fx.sealed)
	if err != nil {
		return nil, err
	}
	fx.sealedSize = fi.Size()
	return fx, nil
}

// cleanup removes the fixture: keys, model, ciphertext and plaintext.
func (fx *fixture) cleanup() error { return os.RemoveAll(fx.work) }

// checkDisk refuses to start when dir's file system has less than need
// bytes free.
func checkDisk(dir string, need int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%s has %s free, the run needs %s", dir, human(free), human(need))
	}
	return nil
}

// human formats a byte count in binary units.
func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}
