package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Rotation naming: the active file is Config.Path; when it rotates it is
// renamed to <stem>-<first seq, 20 digits><ext> beside it, where Path is
// <stem><ext> ("audit.log" becomes "audit-00000000000000000001.log"). The
// zero-padded first sequence number makes lexical order chain order, so a
// shell glob lists rotated files as Verify wants them.
const seqDigits = 20

func splitPath(path string) (stem, ext string) {
	ext = filepath.Ext(path)
	return strings.TrimSuffix(path, ext), ext
}

func rotatedName(path string, firstSeq uint64) string {
	stem, ext := splitPath(path)
	return fmt.Sprintf("%s-%0*d%s", stem, seqDigits, firstSeq, ext)
}

// rotatedFiles lists the rotated files of the log at path, in chain order.
func rotatedFiles(path string) ([]string, error) {
	stem, ext := splitPath(path)
	matches, err := filepath.Glob(globEscape(stem) + "-*" + globEscape(ext))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		digits := strings.TrimSuffix(strings.TrimPrefix(m, stem+"-"), ext)
		if len(digits) != seqDigits {
			continue
		}
		if _, err := strconv.ParseUint(digits, 10, 64); err != nil {
			continue
		}
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}

func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Files lists the files of the log whose active file is path, in chain
// order: the rotated files, then path itself if it exists. It is what
// Verify takes to check a whole log.
func Files(path string) ([]string, error) {
	files, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		files = append(files, path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return files, nil
}

// maxTail bounds how far back lastLine reads; a line is far shorter (every
// string field is at most MaxFieldBytes before escaping).
const maxTail = MaxLineBytes + 1

// lastLine returns the last line of the file at path, which must end in a
// newline, without it.
func lastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := min(fi.Size(), maxTail)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, fi.Size()-n); err != nil && err != io.EOF {
		return nil, err
	}
	if len(buf) == 0 || buf[len(buf)-1] != '\n' {
		return nil, fmt.Errorf("%s: does not end with a complete line", path)
	}
	buf = buf[:len(buf)-1]
	i := bytes.LastIndexByte(buf, '\n')
	if i < 0 && n < fi.Size() {
		return nil, fmt.Errorf("%s: last line longer than %d bytes", path, MaxLineBytes)
	}
	return buf[i+1:], nil
}

// openActive opens (creating if missing) the active file for appending.
// It refuses a symbolic link or anything but a regular file.
func openActive(path string) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		created = true
	}
	if err != nil {
		return nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, false, fmt.Errorf("%s is not a regular file", path)
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, false, err
		}
	}
	return f, created, nil
}

// syncDir makes a directory's entries (a created or renamed file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ErrLocked reports a log another process (or another Log) has open.
var ErrLocked = errors.New("audit log is in use")

// lockLog takes an exclusive lock on <path>.lock, so that two servers
// never append to one chain.
func lockLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s.lock is held", ErrLocked, path)
		}
		return nil, fmt.Errorf("lock %s.lock: %w", path, err)
	}
	return f, nil
}
