package authz

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxPolicySize is the largest policy file Parse accepts, in bytes.
const MaxPolicySize = 1 << 20

// ErrEmptyPolicy is returned for a policy file with no content. An empty
// file is more likely a truncated write than an intent to deny everything;
// a policy that denies everything says so with "roles: {}".
var ErrEmptyPolicy = errors.New("policy is empty")

// A PolicyError is a problem in a policy file: where, and what.
type PolicyError struct {
	Line  int    // 1-based line in the file; 0 when unknown
	Field string // the field at fault, e.g. "roles.scorer.permissions[1]"
	Err   error
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *PolicyError) Unwrap() error { return e.Err }

// The policy file, as decoded. docs/authorization.md describes each field.
type (
	policyFile struct {
		Roles    map[string]roleSpec `yaml:"roles"`
		Bindings []bindingSpec       `yaml:"bindings"`
		Deny     []denySpec          `yaml:"deny"`
	}
	roleSpec struct {
		Permissions []string `yaml:"permissions"`
		Models      []string `yaml:"models"`
		Versions    []string `yaml:"versions"`
	}
	bindingSpec struct {
		Role       string   `yaml:"role"`
		Principals []string `yaml:"principals"`
	}
	denySpec struct {
		Name        string   `yaml:"name"`
		Principals  []string `yaml:"principals"`
		Permissions []string `yaml:"permissions"`
		Models      []string `yaml:"models"`
		Versions    []string `yaml:"versions"`
	}
)

// Parse decodes, validates and indexes a policy file. Decoding is strict:
// unknown fields, more than one YAML document and null list items are
// errors. Validation errors are *PolicyError, with the line when known.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("policy is %d bytes, more than %d", len(data), MaxPolicySize)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrEmptyPolicy
		}
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &PolicyError{Line: extra.Line, Err: errors.New("more than one YAML document")}
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		return nil, ErrEmptyPolicy
	}
	top := doc.Content[0]
	if err := noNullItems(top); err != nil {
		return nil, err
	}

	var f policyFile
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode policy: %w", err)
	}

	sum := sha256.Sum256(data)
	c := compiler{loc: locator{top}, pol: &Policy{
		digest: hex.EncodeToString(sum[:]),
		roles:  make(map[string]*role, len(f.Roles)),
	}}
	if err := c.compile(&f); err != nil {
		return nil, err
	}
	return c.pol, nil
}

// noNullItems refuses null list items, which yaml.v3 would silently drop
// from a []string ("permissions: [infer, ~]").
func noNullItems(n *yaml.Node) error {
	for _, child := range n.Content {
		if n.Kind == yaml.SequenceNode && child.Kind == yaml.ScalarNode && child.Tag == "!!null" {
			return &PolicyError{Line: child.Line, Err: errors.New("null list item")}
		}
		if err := noNullItems(child); err != nil {
			return err
		}
	}
	return nil
}

// compiler validates a decoded policy file and builds its Policy.
type compiler struct {
	loc locator
	pol *Policy
}

// at returns a PolicyError for the field reached by steps (map keys as
// strings, list indices as ints).
func (c *compiler) at(steps []any, format string, args ...any) *PolicyError {
	return &PolicyError{Line: c.loc.line(steps), Field: fieldName(steps), Err: fmt.Errorf(format, args...)}
}

// wrap is at for an existing error.
func (c *compiler) wrap(steps []any, err error) *PolicyError {
	return &PolicyError{Line: c.loc.line(steps), Field: fieldName(steps), Err: err}
}

// step returns base with more appended, never sharing base's array.
func step(base []any, more ...any) []any {
	return append(slices.Clip(base), more...)
}

func (c *compiler) compile(f *policyFile) error {
	// Roles, in file order.
	for i, name := range c.loc.keyOrder(f.Roles) {
		at := []any{"roles", name}
		if err := checkPolicyName(name); err != nil {
			return c.wrap(at, err)
		}
		r, err := c.role(f.Roles[name], at)
		if err != nil {
			return err
		}
		r.name, r.rule, r.index = name, RolePrefix+name, i
		c.pol.roles[name] = r
	}

	for i, b := range f.Bindings {
		at := []any{"bindings", i}
		if b.Role == "" {
			return c.at(step(at, "role"), "required")
		}
		r := c.pol.roles[b.Role]
		if r == nil {
			return c.at(step(at, "role"), "role %q is not defined under roles", b.Role)
		}
		if err := c.principals(b.Principals, step(at, "principals"), func(kind int, v string) {
			c.pol.roleIndex.add(kind, v, r)
		}); err != nil {
			return err
		}
	}

	names := map[string]int{}
	for i, spec := range f.Deny {
		at := []any{"deny", i}
		if err := checkPolicyName(spec.Name); err != nil {
			return c.wrap(step(at, "name"), err)
		}
		if j, dup := names[spec.Name]; dup {
			return c.at(step(at, "name"), "deny rule %q is also deny[%d]", spec.Name, j)
		}
		names[spec.Name] = i
		d, err := c.denyRule(spec, at)
		if err != nil {
			return err
		}
		d.name, d.rule, d.index = spec.Name, DenyPrefix+spec.Name, i
		if err := c.principals(spec.Principals, step(at, "principals"), func(kind int, v string) {
			c.pol.denyIndex.add(kind, v, d)
		}); err != nil {
			return err
		}
		c.pol.deny = append(c.pol.deny, d)
	}

	c.pol.roleIndex.finish()
	c.pol.denyIndex.finish()
	c.pol.hasSPIFFEPatterns = len(c.pol.roleIndex.spiffe)+len(c.pol.denyIndex.spiffe) > 0
	return nil
}

func (c *compiler) role(spec roleSpec, at []any) (*role, error) {
	r := &role{}
	var err error
	if r.perms, err = c.permissions(spec.Permissions, step(at, "permissions")); err != nil {
		return nil, err
	}
	if spec.Models == nil {
		return nil, c.at(step(at, "models"), `required: list model name patterns, or ["*"] for every model`)
	}
	if r.models, err = c.models(spec.Models, step(at, "models")); err != nil {
		return nil, err
	}
	if r.versions, err = c.versions(spec.Versions, step(at, "versions")); err != nil {
		return nil, err
	}
	if r.perms&globalBits != 0 && !(r.models.all && r.versions.all) {
		return nil, c.at(at, `grants %s, a global permission, so it needs models ["*"] and no versions; give model-scoped permissions a role of their own`, globalNames(r.perms))
	}
	return r, nil
}

func (c *compiler) denyRule(spec denySpec, at []any) (*denyRule, error) {
	d := &denyRule{}
	var err error
	if d.perms, err = c.permissions(spec.Permissions, step(at, "permissions")); err != nil {
		return nil, err
	}
	if d.models, err = c.models(spec.Models, step(at, "models")); err != nil {
		return nil, err
	}
	if d.versions, err = c.versions(spec.Versions, step(at, "versions")); err != nil {
		return nil, err
	}
	d.scoped = !d.models.all || !d.versions.all
	if d.scoped && d.perms&globalBits != 0 {
		return nil, c.at(at, "denies %s, a global permission, so it cannot be limited to models or versions; give it a rule of its own", globalNames(d.perms))
	}
	return d, nil
}

func globalNames(perms uint8) string {
	var names []string
	for _, p := range allPermissions {
		if p.Global() && perms&p.bit() != 0 {
			names = append(names, string(p))
		}
	}
	return strings.Join(names, " and ")
}

// list checks a list that is present: not empty, no duplicates, each item
// passing check.
func (c *compiler) list(items []string, at []any, check func(string) error) error {
	if len(items) == 0 {
		return c.at(at, "empty list")
	}
	seen := make(map[string]int, len(items))
	for i, s := range items {
		if j, dup := seen[s]; dup {
			return c.at(step(at, i), "%q is also item %d", s, j)
		}
		seen[s] = i
		if err := check(s); err != nil {
			return c.wrap(step(at, i), err)
		}
	}
	return nil
}

func (c *compiler) permissions(items []string, at []any) (uint8, error) {
	if items == nil {
		return 0, c.at(at, "required")
	}
	var bits uint8
	err := c.list(items, at, func(s string) error {
		b := Permission(s).bit()
		if b == 0 {
			return fmt.Errorf("unknown permission %q: want one of %s", s, permissionNames())
		}
		bits |= b
		return nil
	})
	return bits, err
}

func permissionNames() string {
	names := make([]string, len(allPermissions))
	for i, p := range allPermissions {
		names[i] = string(p)
	}
	return strings.Join(names, ", ")
}

// models compiles model patterns; absent means every model.
func (c *compiler) models(items []string, at []any) (modelSet, error) {
	var s modelSet
	if items == nil {
		s.all = true
		return s, nil
	}
	err := c.list(items, at, func(p string) error {
		if p == "*" {
			if len(items) > 1 {
				return errors.New(`"*" matches every model: list nothing else`)
			}
			s.all = true
			return nil
		}
		if err := checkModelPattern(p); err != nil {
			return err
		}
		if hasMeta(p) {
			s.patterns = append(s.patterns, compilePattern(p))
		} else {
			s.exact = append(s.exact, p)
		}
		return nil
	})
	if len(s.exact) > manyExact {
		s.exactSet = make(map[string]struct{}, len(s.exact))
		for _, e := range s.exact {
			s.exactSet[e] = struct{}{}
		}
		s.exact = nil
	}
	return s, err
}

// versions compiles a version list; absent means every version.
func (c *compiler) versions(items []string, at []any) (versionSet, error) {
	var s versionSet
	if items == nil {
		s.all = true
		return s, nil
	}
	err := c.list(items, at, func(v string) error {
		if v == "*" {
			if len(items) > 1 {
				return errors.New(`"*" matches every version: list nothing else`)
			}
			s.all = true
			return nil
		}
		if !validVersion(v) {
			return fmt.Errorf("version %q: want a positive number without leading zeros, or \"*\"", v)
		}
		s.set = append(s.set, v)
		return nil
	})
	return s, err
}

// principals checks a list of principal selectors and hands each to add.
func (c *compiler) principals(items []string, at []any, add func(kind int, value string)) error {
	if items == nil {
		return c.at(at, "required")
	}
	return c.list(items, at, func(s string) error {
		kind, v, err := parseSelector(s)
		if err != nil {
			return err
		}
		add(kind, v)
		return nil
	})
}

// fieldName renders steps as roles.scorer.permissions[1].
func fieldName(steps []any) string {
	var b strings.Builder
	for _, s := range steps {
		switch s := s.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		case int:
			b.WriteString("[" + strconv.Itoa(s) + "]")
		}
	}
	return b.String()
}

// locator finds line numbers in the decoded YAML tree.
type locator struct {
	top *yaml.Node
}

// line returns the line of the field steps reach: a map key's line for a
// string step, an item's for an int step. Where the tree cannot be
// followed (a merge key, say), the last line reached.
func (l locator) line(steps []any) int {
	n, line := l.top, l.top.Line
	for _, s := range steps {
		n = resolve(n)
		var next *yaml.Node
		switch s := s.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == s {
						line, next = n.Content[i].Line, n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && s < len(n.Content) {
				next = n.Content[s]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// keyOrder returns the keys of roles in the order the file lists them
// (Go maps have none), and any the tree did not show, sorted.
func (l locator) keyOrder(roles map[string]roleSpec) []string {
	order := make([]string, 0, len(roles))
	seen := map[string]bool{}
	for i := 0; i+1 < len(l.top.Content); i += 2 {
		if l.top.Content[i].Value != "roles" {
			continue
		}
		m := resolve(l.top.Content[i+1])
		for j := 0; j+1 < len(m.Content); j += 2 {
			k := m.Content[j].Value
			if _, ok := roles[k]; ok && !seen[k] {
				seen[k] = true
				order = append(order, k)
			}
		}
	}
	var rest []string
	for k := range roles {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(order, rest...)
}
