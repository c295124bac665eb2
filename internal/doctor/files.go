package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
)

// encryptedModel is the name of an encrypted model in a version directory.
const encryptedModel = "model.onnx" + seal.Suffix

// repoScan is what one walk of the model repository found.
type repoScan struct {
	err              error    // the repository itself is unusable
	dirs, files      int      // what was walked
	loose            []string // group- or world-writable paths, with their mode
	unreadable       []string // entries the walk could not read
	writableDirs     []string // directories the process may write
	writableFiles    int      // files the process may write
	euid             int
	encrypted        int   // model.onnx.age files
	largestEncrypted int64 // bytes
}

// scanRepository walks the whole repository once. Any directory under it
// with a valid model name would be served, so the walk covers everything,
// not just the model files. Symbolic links are not followed, but the file
// a link names is checked, as the server reads files through links.
func scanRepository(dir string, p Process) repoScan {
	s := repoScan{euid: p.EUIDFunc()}
	if dir == "" {
		s.err = errors.New("model_repository is not set")
		return s
	}
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		s.err = err
		return s
	case !fi.IsDir():
		s.err = fmt.Errorf("%s is not a directory", dir)
		return s
	}
	rel := func(path string) string {
		if r, err := filepath.Rel(dir, path); err == nil {
			return r
		}
		return path
	}
	walkErr := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			s.unreadable = append(s.unreadable, fmt.Sprintf("%s (%v)", rel(path), cause(err)))
			if d != nil && d.IsDir() && path != dir {
				return fs.SkipDir
			}
			return nil
		}
		// os.Stat: the root may be a link, and links are judged by their
		// target; WalkDir itself does not follow them.
		fi, err := os.Stat(path)
		if err != nil {
			s.unreadable = append(s.unreadable, fmt.Sprintf("%s (%v)", rel(path), cause(err)))
			return nil
		}
		if fi.IsDir() {
			s.dirs++
		} else {
			s.files++
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			s.loose = append(s.loose, fmt.Sprintf("%s (%04o)", rel(path), perm))
		}
		if p.AccessFunc(path, unix.W_OK) == nil {
			if fi.IsDir() {
				s.writableDirs = append(s.writableDirs, rel(path))
			} else {
				s.writableFiles++
			}
		}
		if d.Name() == encryptedModel && fi.Mode().IsRegular() {
			s.encrypted++
			s.largestEncrypted = max(s.largestEncrypted, fi.Size())
		}
		return nil
	})
	if walkErr != nil {
		s.err = walkErr
	}
	return s
}

// checkKeys checks the key custody serve will open, without reading key
// material.
func checkKeys(k config.Keys, p Process, scan repoScan) Check {
	const name = "keys"
	switch {
	case k.IdentityFile != "":
		if err := keys.CheckKeyFile(k.IdentityFile); err != nil {
			return Check{name, Fail, fmt.Sprintf("keys.identity_file: %v", err)}
		}
		if err := p.AccessFunc(k.IdentityFile, unix.R_OK); err != nil {
			return Check{name, Fail, fmt.Sprintf("keys.identity_file: %s is not readable: %v", k.IdentityFile, err)}
		}
		fi, err := os.Stat(k.IdentityFile)
		if err != nil {
			return Check{name, Fail, fmt.Sprintf("keys.identity_file: %v", err)}
		}
		return Check{name, OK, fmt.Sprintf("identity file %s is a regular file, mode %04o", k.IdentityFile, fi.Mode().Perm())}
	case k.PassphraseEnv != "":
		if os.Getenv(k.PassphraseEnv) == "" {
			return Check{name, Fail, fmt.Sprintf("keys.passphrase_env: $%s is empty", k.PassphraseEnv)}
		}
		return Check{name, Warn, fmt.Sprintf("keys.passphrase_env: models are decrypted with the passphrase in $%s, for development only", k.PassphraseEnv)}
	case scan.encrypted > 0:
		return Check{name, Warn, fmt.Sprintf("the repository holds %d encrypted models (%s) but no keys are configured: they will not load",
			scan.encrypted, encryptedModel)}
	}
	return Check{name, OK, "no keys configured, and no model is encrypted"}
}

// checkTrust checks the trust anchors of the deployment policy: public,
// so only readable regular files, but not writable by group or others, as
// whoever replaces one can sign models the server will serve.
func checkTrust(d config.Deploy) Check {
	const name = "trusted_keys"
	files := append(append([]string(nil), d.TrustedKeys...), d.TrustedCAs...)
	if len(files) == 0 {
		if d.RequireSignature {
			return Check{name, Fail, "deploy.require_signature is set but no trusted keys or CAs are"}
		}
		return Check{name, OK, "no trusted keys or CAs configured"}
	}
	var bad []string
	for _, f := range files {
		fi, err := os.Stat(f)
		switch {
		case err != nil:
			bad = append(bad, err.Error())
			continue
		case !fi.Mode().IsRegular():
			bad = append(bad, fmt.Sprintf("%s is not a regular file", f))
			continue
		case fi.Mode().Perm()&0o022 != 0:
			bad = append(bad, fmt.Sprintf("%s has mode %04o, writable by group or others", f, fi.Mode().Perm()))
			continue
		}
		r, err := os.Open(f)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		r.Close()
	}
	if len(bad) > 0 {
		return Check{name, Fail, list(bad)}
	}
	return Check{name, OK, fmt.Sprintf("%d trusted files readable, none writable by group or others", len(files))}
}

func checkRepository(dir string, scan repoScan) Check {
	const name = "model_repository"
	switch {
	case scan.err != nil:
		return Check{name, Fail, scan.err.Error()}
	case len(scan.loose) > 0:
		return Check{name, Fail, fmt.Sprintf("writable by group or others, so anyone in them can replace models: %s; chmod go-w", list(scan.loose))}
	case len(scan.unreadable) > 0:
		return Check{name, Warn, fmt.Sprintf("cannot read %s", list(scan.unreadable))}
	}
	return Check{name, OK, fmt.Sprintf("%s: %d directories and %d files, none writable by group or others", dir, scan.dirs, scan.files)}
}

// checkWritable warns when the server may write its own models: a
// compromised server could then replace them. It asks access(2), which
// answers for root too (root writes whatever the mode bits say, except on a
// read-only mount or an immutable file), so mode bits alone would hide the
// risk.
func checkWritable(scan repoScan) Check {
	const name = "model_writable"
	if scan.err != nil {
		return Check{name, Fail, "cannot check: the model repository is unusable"}
	}
	var what string
	switch {
	case len(scan.writableDirs) == 0 && scan.writableFiles == 0:
		return Check{name, OK, "the server cannot write the model repository"}
	case len(scan.writableDirs) == 0:
		what = fmt.Sprintf("model files writable by the server: %d", scan.writableFiles)
	default:
		what = fmt.Sprintf("model directories writable by the server: %s", list(scan.writableDirs))
		if scan.writableFiles > 0 {
			what += fmt.Sprintf(", and %d files", scan.writableFiles)
		}
	}
	msg := what + "; a compromised server could replace its models: give it read-only access " +
		"(files owned by another user, or a read-only mount)"
	if scan.euid == 0 {
		msg += "; as root it writes whatever the mode bits say"
	}
	return Check{name, Warn, msg}
}

// cause drops the path an fs error repeats.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
