package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/config"
)

func TestKeys(t *testing.T) {
	tests := []struct {
		name      string
		keys      func(t *testing.T) config.Keys
		encrypted bool
		status    Status
		want      string
	}{
		{"identity file 0600", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: identityFile(t, 0o600)}
		}, true, OK, "regular file, mode 0600"},
		{"identity file 0400", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: identityFile(t, 0o400)}
		}, true, OK, "mode 0400"},
		{"group-readable identity file", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: identityFile(t, 0o640)}
		}, true, Fail, "mode 0640, want 0600 or stricter"},
		{"world-readable identity file", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: identityFile(t, 0o604)}
		}, true, Fail, "accessible by group or others"},
		{"identity file is a directory", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: t.TempDir()}
		}, true, Fail, "not a regular file"},
		{"identity file is a link", func(t *testing.T) config.Keys {
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(identityFile(t, 0o600), link); err != nil {
				t.Fatal(err)
			}
			return config.Keys{IdentityFile: link}
		}, true, Fail, "not a regular file"},
		{"missing identity file", func(t *testing.T) config.Keys {
			return config.Keys{IdentityFile: filepath.Join(t.TempDir(), "nope")}
		}, true, Fail, "no such file"},
		{"passphrase set", func(t *testing.T) config.Keys {
			t.Setenv("AEGIS_TEST_PASSPHRASE", "correct horse")
			return config.Keys{PassphraseEnv: "AEGIS_TEST_PASSPHRASE"}
		}, true, Warn, "development only"},
		{"passphrase variable empty", func(t *testing.T) config.Keys {
			t.Setenv("AEGIS_TEST_PASSPHRASE", "")
			return config.Keys{PassphraseEnv: "AEGIS_TEST_PASSPHRASE"}
		}, true, Fail, "$AEGIS_TEST_PASSPHRASE is empty"},
		{"encrypted models, no keys", func(*testing.T) config.Keys { return config.Keys{} }, true, Warn, "1 encrypted models"},
		{"no keys, nothing encrypted", func(*testing.T) config.Keys { return config.Keys{} }, false, OK, "no keys configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			env.Config.Keys = tc.keys(t)
			if tc.encrypted {
				env.Config.ModelRepository = makeRepo(t, "secret/1/model.onnx.age", "plain/1/model.onnx")
			}
			expect(t, env, "keys", tc.status, tc.want)
		})
	}
	t.Run("identity file the server cannot read", func(t *testing.T) {
		env := goodEnv(t)
		env.Config.Keys.IdentityFile = identityFile(t, 0o600)
		env.Process.AccessFunc = func(string, uint32) error { return unix.EACCES }
		expect(t, env, "keys", Fail, "not readable: permission denied")
	})
}

func TestTrustedKeys(t *testing.T) {
	key := func(t *testing.T, mode os.FileMode) string {
		p := filepath.Join(t.TempDir(), "signer.pub")
		writeFile(t, p, mode)
		return p
	}
	tests := []struct {
		name   string
		deploy func(t *testing.T) config.Deploy
		status Status
		want   string
	}{
		{"none", func(*testing.T) config.Deploy { return config.Deploy{} }, OK, "no trusted keys"},
		{"public key and CA readable", func(t *testing.T) config.Deploy {
			return config.Deploy{RequireSignature: true, TrustedKeys: []string{key(t, 0o644)}, TrustedCAs: []string{key(t, 0o444)}}
		}, OK, "2 trusted files readable"},
		{"signature required, nothing trusted", func(*testing.T) config.Deploy {
			return config.Deploy{RequireSignature: true}
		}, Fail, "no trusted keys or CAs"},
		{"missing key", func(t *testing.T) config.Deploy {
			return config.Deploy{TrustedKeys: []string{filepath.Join(t.TempDir(), "gone.pub")}}
		}, Fail, "no such file"},
		{"group-writable key", func(t *testing.T) config.Deploy {
			return config.Deploy{TrustedKeys: []string{key(t, 0o664)}}
		}, Fail, "mode 0664, writable by group or others"},
		{"world-writable CA", func(t *testing.T) config.Deploy {
			return config.Deploy{TrustedCAs: []string{key(t, 0o646)}}
		}, Fail, "writable by group or others"},
		{"a directory", func(t *testing.T) config.Deploy {
			return config.Deploy{TrustedKeys: []string{t.TempDir()}}
		}, Fail, "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			env.Config.Deploy = tc.deploy(t)
			expect(t, env, "trusted_keys", tc.status, tc.want)
		})
	}
}

func TestModelRepository(t *testing.T) {
	tests := []struct {
		name   string
		repo   func(t *testing.T) string
		status Status
		want   string
	}{
		{"tight modes", func(t *testing.T) string {
			return makeRepo(t, "digits/1/model.onnx", "digits/2/model.onnx.age", "digits/2/model.sig", "mlp/1/model.onnx")
		}, OK, "6 directories and 4 files, none writable"},
		{"read-only modes", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			chmod(t, filepath.Join(dir, "digits/1/model.onnx"), 0o444)
			chmod(t, filepath.Join(dir, "digits/1"), 0o555)
			return dir
		}, OK, "none writable"},
		{"unset", func(*testing.T) string { return "" }, Fail, "not set"},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, Fail, "no such file"},
		{"a file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "models")
			writeFile(t, p, 0o644)
			return p
		}, Fail, "is not a directory"},
		{"world-writable root", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			chmod(t, dir, 0o777)
			return dir
		}, Fail, ". (0777)"},
		{"world-writable model directory", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			chmod(t, filepath.Join(dir, "digits"), 0o757)
			return dir
		}, Fail, "digits (0757)"},
		{"group-writable version directory", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			chmod(t, filepath.Join(dir, "digits/1"), 0o775)
			return dir
		}, Fail, "digits/1 (0775)"},
		{"group-writable model file", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			chmod(t, filepath.Join(dir, "digits/1/model.onnx"), 0o664)
			return dir
		}, Fail, "digits/1/model.onnx (0664)"},
		{"group-writable model config", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx", "digits/config.yaml")
			chmod(t, filepath.Join(dir, "digits/config.yaml"), 0o620)
			return dir
		}, Fail, "digits/config.yaml (0620)"},
		{"a link to a world-writable model", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/placeholder")
			target := filepath.Join(t.TempDir(), "model.onnx")
			writeFile(t, target, 0o666)
			if err := os.Symlink(target, filepath.Join(dir, "digits/1/model.onnx")); err != nil {
				t.Fatal(err)
			}
			return dir
		}, Fail, "digits/1/model.onnx (0666)"},
		{"a link to a tight model", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/placeholder")
			target := filepath.Join(t.TempDir(), "model.onnx")
			writeFile(t, target, 0o644)
			if err := os.Symlink(target, filepath.Join(dir, "digits/1/model.onnx")); err != nil {
				t.Fatal(err)
			}
			return dir
		}, OK, "none writable"},
		{"a dangling link", func(t *testing.T) string {
			dir := makeRepo(t, "digits/1/model.onnx")
			if err := os.Symlink(filepath.Join(t.TempDir(), "gone"), filepath.Join(dir, "digits/1/model.sig")); err != nil {
				t.Fatal(err)
			}
			return dir
		}, Warn, "cannot read digits/1/model.sig (no such file or directory)"},
		{"many loose paths are counted", func(t *testing.T) string {
			dir := makeRepo(t, "a/1/model.onnx", "b/1/model.onnx", "c/1/model.onnx")
			for _, p := range []string{"a", "b", "c", "a/1"} {
				chmod(t, filepath.Join(dir, p), 0o777)
			}
			return dir
		}, Fail, "and 1 more"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			env.Config.ModelRepository = tc.repo(t)
			expect(t, env, "model_repository", tc.status, tc.want)
		})
	}
}

func TestModelWritable(t *testing.T) {
	deny := func(string, uint32) error { return unix.EACCES }
	readOnlyMount := func(string, uint32) error { return unix.EROFS }
	allowVersionDir := func(p string, mode uint32) error {
		if mode == unix.W_OK && strings.HasSuffix(p, "digits/1") {
			return nil
		}
		return unix.EACCES
	}
	allowModelFile := func(p string, mode uint32) error {
		if mode == unix.W_OK && strings.HasSuffix(p, "model.onnx") {
			return nil
		}
		return unix.EACCES
	}
	tests := []struct {
		name   string
		euid   int
		access func(string, uint32) error
		status Status
		want   string
	}{
		{"read-only to the server", 1000, deny, OK, "cannot write"},
		{"a read-only mount, even as root", 0, readOnlyMount, OK, "cannot write"},
		{"one writable version directory", 1000, allowVersionDir, Warn, "model directories writable by the server: digits/1;"},
		{"a writable model file", 1000, allowModelFile, Warn, "model files writable by the server: 1;"},
		{"root", 0, unix.Access, Warn, "model directories writable by the server: ., digits, digits/1, and 1 files; " +
			"a compromised server could replace its models"},
		{"root is named", 0, unix.Access, Warn, "as root it writes whatever the mode bits say"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			env.Process.EUIDFunc = func() int { return tc.euid }
			env.Process.AccessFunc = tc.access
			expect(t, env, "model_writable", tc.status, tc.want)
		})
	}
	t.Run("unusable repository", func(t *testing.T) {
		env := goodEnv(t)
		env.Config.ModelRepository = filepath.Join(t.TempDir(), "nope")
		expect(t, env, "model_writable", Fail, "cannot check")
	})
}

// TestModelWritableAsThisProcess asks access(2) for real about a repository
// whose modes forbid writing. Root may write it all the same, and the check
// says so rather than trust the mode bits; any other user may not.
func TestModelWritableAsThisProcess(t *testing.T) {
	env := goodEnv(t)
	env.Process.EUIDFunc = os.Geteuid
	env.Process.AccessFunc = nil // the real access(2)
	dir := env.Config.ModelRepository
	for _, p := range []string{"digits/1/model.onnx", "digits/1", "digits", "."} {
		mode := os.FileMode(0o555)
		if p == "digits/1/model.onnx" {
			mode = 0o444
		}
		chmod(t, filepath.Join(dir, p), mode)
	}
	t.Cleanup(func() {
		chmod(t, filepath.Join(dir, "digits/1"), 0o755)
		chmod(t, filepath.Join(dir, "digits"), 0o755)
		chmod(t, dir, 0o755)
	})
	expect(t, env, "model_repository", OK, "none writable")
	if os.Geteuid() == 0 {
		expect(t, env, "model_writable", Warn, "as root it writes whatever the mode bits say")
	} else {
		expect(t, env, "model_writable", OK, "cannot write")
	}
}
