package authz

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// validModelName reports whether name may name a model: the rule of
// repository.ValidModelName (^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$), kept
// here so that authorization does not import the model runtime. Names
// outside it (a "/", "%2e", a NUL) never reach a pattern.
func validModelName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validVersion reports whether v is a canonical positive version number,
// as repository.ParseVersion accepts: "1", "12", never "01", "+1" or "0".
func validVersion(v string) bool {
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 1 && strconv.FormatInt(n, 10) == v
}

// matchModel reports whether a valid model name matches pattern (path.Match
// syntax). A malformed pattern matches nothing.
func matchModel(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	p := compilePattern(pattern)
	return p.match(name)
}

// hasMeta reports whether s holds a path.Match metacharacter.
func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// checkModelPattern validates a model pattern from a policy file.
func checkModelPattern(p string) error {
	if p == "" {
		return errors.New("empty model pattern")
	}
	if !hasMeta(p) {
		if !validModelName(p) {
			return fmt.Errorf("%q is not a valid model name (letters, digits, '_', '.', '-'; at most 128)", p)
		}
		return nil
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !isNameByte(c) && !strings.ContainsRune(`*?[]^\`, rune(c)) {
			return fmt.Errorf("model pattern %q holds %q, which no model name contains", p, c)
		}
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("model pattern %q: %w", p, err)
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == '-'
}

// checkPolicyName validates a role or deny rule name: it is written into
// audit records, so it is kept to a plain, short alphabet.
func checkPolicyName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 64 {
		return fmt.Errorf("name %q is longer than 64 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isNameByte(c) || (i == 0 && !isAlnum(c)) {
			return fmt.Errorf("name %q: want a letter or digit, then letters, digits, '_', '.', '-'", name)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

const spiffeScheme = "spiffe://"

// validSPIFFEID reports whether id is a SPIFFE ID as the SPIFFE spec
// allows one: a lowercase trust domain of [a-z0-9._-], then zero or more
// non-empty path segments of [A-Za-z0-9._-], none "." or "..", no
// trailing "/", no percent-encoding, at most 2048 bytes. Only such IDs are
// matched against SPIFFE patterns. It does not allocate.
func validSPIFFEID(id string) bool { return spiffeOK(id, false) }

// spiffeOK reports whether s is a valid SPIFFE ID or, if pattern, a valid
// SPIFFE pattern: the same, with '*' and '?' allowed in path segments
// (never in the trust domain).
func spiffeOK(s string, pattern bool) bool {
	if len(s) > 2048 {
		return false
	}
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return false
	}
	td, p, hasPath := strings.Cut(rest, "/")
	if td == "" || len(td) > 255 {
		return false
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	if !hasPath {
		return true
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !isNameByte(c) && !(pattern && (c == '*' || c == '?')) {
				return false
			}
		}
	}
	return true
}

// errSPIFFE explains what spiffeOK wants.
var errSPIFFE = errors.New(`want spiffe://<trust domain>[/<segment>...]: a lowercase trust domain ` +
	`of a-z 0-9 . - _, then segments of letters, digits, '.', '-', '_', none empty, "." or "..", no trailing "/"; ` +
	`in a pattern, '*' and '?' match within one segment`)

// pattern is a compiled path.Match pattern, for model names and SPIFFE
// IDs, neither of which a "*" may cross a "/" in.
type pattern struct {
	src    string
	prefix string // the literal text before the first metacharacter
	// star says src is prefix + "*": a name matches if it has the prefix
	// and no "/" after it.
	star bool
}

func compilePattern(src string) pattern {
	i := strings.IndexAny(src, `*?[\`)
	if i < 0 {
		i = len(src)
	}
	return pattern{src: src, prefix: src[:i], star: src[i:] == "*"}
}

// match reports whether s matches; a malformed pattern matches nothing.
func (p *pattern) match(s string) bool {
	if !strings.HasPrefix(s, p.prefix) {
		return false
	}
	if p.star {
		return strings.IndexByte(s[len(p.prefix):], '/') < 0
	}
	ok, err := path.Match(p.src, s)
	return ok && err == nil
}

// selector kinds.
const (
	selID     = iota // an exact principal ID
	selGroup         // "group:<name>"
	selAnyone        // "*"
	selSPIFFE        // a SPIFFE ID pattern
)

// parseSelector parses a principal selector from a policy file: an exact
// principal ID ("key:", "jwt:", "cert:", "spiffe://"), "group:<name>",
// "*" for any authenticated principal, or a SPIFFE ID pattern.
func parseSelector(s string) (kind int, value string, err error) {
	if s == "*" {
		return selAnyone, "", nil
	}
	if s == "" {
		return 0, "", errors.New("empty principal")
	}
	if strings.TrimSpace(s) != s {
		return 0, "", fmt.Errorf("principal %q has leading or trailing space", s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return 0, "", fmt.Errorf("principal %q holds a control character", s)
		}
	}
	if strings.HasPrefix(s, spiffeScheme) {
		if strings.ContainsAny(s, "*?") {
			if !spiffeOK(s, true) {
				return 0, "", fmt.Errorf("SPIFFE pattern %q: %w", s, errSPIFFE)
			}
			return selSPIFFE, s, nil
		}
		if !spiffeOK(s, false) {
			return 0, "", fmt.Errorf("SPIFFE ID %q: %w", s, errSPIFFE)
		}
		return selID, s, nil
	}
	prefix, rest, ok := strings.Cut(s, ":")
	if !ok {
		return 0, "", fmt.Errorf("principal %q: want key:, jwt:, cert:, spiffe://, group: or \"*\"", s)
	}
	switch prefix {
	case "key", "jwt", "cert", "group":
	default:
		return 0, "", fmt.Errorf("principal %q: unknown kind %q: want key:, jwt:, cert:, spiffe://, group: or \"*\"", s, prefix)
	}
	if rest == "" {
		return 0, "", fmt.Errorf("principal %q: empty %s", s, prefix)
	}
	if strings.TrimSpace(rest) != rest {
		return 0, "", fmt.Errorf("principal %q: space after %q", s, prefix+":")
	}
	if strings.Contains(rest, "*") {
		return 0, "", fmt.Errorf("principal %q: patterns are supported only in spiffe:// IDs; use \"*\" for any principal", s)
	}
	if prefix == "group" {
		return selGroup, rest, nil
	}
	return selID, s, nil
}
