package authz

import "slices"

// Policy is a parsed, validated and indexed policy. It is immutable, and
// safe for concurrent use. A nil *Policy denies everything.
type Policy struct {
	digest string

	roles     map[string]*role // by name, for Principal.Roles
	roleIndex index[*role]

	deny      []*denyRule
	denyIndex index[*denyRule]

	// hasSPIFFEPatterns says whether a principal's ID needs checking
	// against SPIFFE patterns at all.
	hasSPIFFEPatterns bool
}

// Digest is the SHA-256 (hex) of the policy file the policy was parsed
// from, for logs and audit records that say which policy decided.
func (pol *Policy) Digest() string {
	if pol == nil {
		return ""
	}
	return pol.digest
}

// role is a compiled role.
type role struct {
	name     string
	rule     string // "role:<name>"
	index    int    // position in the file
	perms    uint8
	models   modelSet
	versions versionSet
}

func (r *role) order() int { return r.index }

// grants reports whether r grants a (with a's permission bit bit). An
// action naming no model is granted on the permission alone: only List,
// Admin and AuditRead name no model, and a role granting Admin or
// AuditRead covers every model and version (Parse makes sure).
func (r *role) grants(a Action, bit uint8) bool {
	if r.perms&bit == 0 {
		return false
	}
	if a.Model == "" {
		return true
	}
	return r.models.match(a.Model) && r.versions.grants(a.Version)
}

// denyRule is a compiled deny rule.
type denyRule struct {
	name     string
	rule     string // "deny:<name>"
	index    int
	perms    uint8
	scoped   bool // models or versions are restricted
	models   modelSet
	versions versionSet
}

func (d *denyRule) order() int { return d.index }

// applies reports whether d takes a away (whoever asks). A rule with
// neither models nor versions applies to every action with its
// permissions; a scoped rule only to actions naming a model it matches,
// and to every version of it when the action names none.
func (d *denyRule) applies(a Action, bit uint8) bool {
	if d.perms&bit == 0 {
		return false
	}
	if !d.scoped {
		return true
	}
	if a.Model == "" {
		return false
	}
	return d.models.match(a.Model) && d.versions.denies(a.Version)
}

// modelSet is a compiled list of model patterns.
type modelSet struct {
	all      bool
	exact    []string            // literal names, when few
	exactSet map[string]struct{} // literal names, when many
	patterns []pattern
}

// manyExact is the number of literal names above which a map beats a
// linear scan.
const manyExact = 8

func (s *modelSet) match(model string) bool {
	if s.all {
		return true
	}
	if s.exactSet != nil {
		if _, ok := s.exactSet[model]; ok {
			return true
		}
	}
	for _, e := range s.exact {
		if e == model {
			return true
		}
	}
	for i := range s.patterns {
		if s.patterns[i].match(model) {
			return true
		}
	}
	return false
}

// versionSet is a compiled list of versions.
type versionSet struct {
	all bool
	set []string
}

// grants reports whether a role restricted to s grants version v. An
// action naming no version could be served by any version, so only an
// unrestricted role grants it.
func (s *versionSet) grants(v string) bool {
	return s.all || (v != "" && slices.Contains(s.set, v))
}

// denies reports whether a deny rule restricted to s takes version v away.
// An action naming no version could be served by a denied one, so it is
// denied.
func (s *versionSet) denies(v string) bool {
	return s.all || v == "" || slices.Contains(s.set, v)
}

// index finds policy entries (roles or deny rules) by principal selector.
// Each list is in file order, without duplicates.
type index[T interface{ order() int }] struct {
	byID    map[string][]T
	byGroup map[string][]T
	anyone  []T
	spiffe  []patternEntry[T] // in the order patterns first appear
}

type patternEntry[T any] struct {
	pattern pattern
	items   []T
}

func (ix *index[T]) add(kind int, value string, item T) {
	switch kind {
	case selID:
		if ix.byID == nil {
			ix.byID = map[string][]T{}
		}
		ix.byID[value] = append(ix.byID[value], item)
	case selGroup:
		if ix.byGroup == nil {
			ix.byGroup = map[string][]T{}
		}
		ix.byGroup[value] = append(ix.byGroup[value], item)
	case selAnyone:
		ix.anyone = append(ix.anyone, item)
	case selSPIFFE:
		for i := range ix.spiffe {
			if ix.spiffe[i].pattern.src == value {
				ix.spiffe[i].items = append(ix.spiffe[i].items, item)
				return
			}
		}
		ix.spiffe = append(ix.spiffe, patternEntry[T]{pattern: compilePattern(value), items: []T{item}})
	}
}

// finish puts every list in file order and drops duplicates.
func (ix *index[T]) finish() {
	tidy := func(items []T) []T {
		slices.SortFunc(items, func(a, b T) int { return a.order() - b.order() })
		return slices.CompactFunc(items, func(a, b T) bool { return a.order() == b.order() })
	}
	for k, v := range ix.byID {
		ix.byID[k] = tidy(v)
	}
	for k, v := range ix.byGroup {
		ix.byGroup[k] = tidy(v)
	}
	ix.anyone = tidy(ix.anyone)
	for i := range ix.spiffe {
		ix.spiffe[i].items = tidy(ix.spiffe[i].items)
	}
}
