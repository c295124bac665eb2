// Package authz decides what an authenticated principal may do: role-based
// grants, explicit deny rules that win over every grant, and the scopes a
// credential carries, from a policy file that can be reloaded without a
// restart.
//
// Decide answers one question, "may p do a?", and names what decided in
// Decision.Rule for the audit log. It takes no lock and does not allocate;
// the policy it reads is swapped atomically by Reload.
//
// Security defaults:
//   - A nil principal, one with an empty ID, or one whose Method is
//     pipeline.MethodNone is denied ("unauthenticated").
//   - An Authorizer with no policy (the zero value, or New(nil)) denies
//     every action ("default-deny").
//   - Anything no role grants is denied ("default-deny").
//   - A deny rule that matches wins over every role.
//   - A credential's Scopes.Models narrows every role it holds.
//   - A role restricted to some versions never grants an action that
//     names no version; a deny rule restricted to some versions does deny
//     one.
//   - A credential restricted to some models may not perform global
//     actions (admin, audit:read) unless its scopes include "*".
//   - A malformed action (unknown permission, a model name the repository
//     would refuse, a version that is not a canonical positive number) is
//     denied ("invalid-action"); such names never reach a pattern.
//   - Policy files are decoded strictly: unknown fields, unknown
//     permissions, bad patterns, bindings to undefined roles and duplicates
//     are errors; a world-writable file is refused; and a file that fails
//     to load never replaces the policy in force.
//
// See docs/authorization.md for the file format and the decision order.
package authz

import (
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// Permission is something a role grants and a deny rule takes away.
type Permission string

// Permissions. Infer and Metadata concern one model; List concerns the
// listing, and a model's place in it; Admin and AuditRead are global.
const (
	Infer     Permission = "infer"      // run inference on a model version
	Metadata  Permission = "metadata"   // read a model's or version's metadata
	List      Permission = "list"       // list models (each entry is checked)
	Admin     Permission = "admin"      // operate the server: reload, load, unload
	AuditRead Permission = "audit:read" // read audit records
)

// allPermissions lists every permission, in documentation order.
var allPermissions = []Permission{Infer, Metadata, List, Admin, AuditRead}

// permission bits, for compiled roles and deny rules.
const (
	bitInfer uint8 = 1 << iota
	bitMetadata
	bitList
	bitAdmin
	bitAuditRead

	globalBits = bitAdmin | bitAuditRead
)

// bit returns perm's bit, or 0 for an unknown permission.
func (perm Permission) bit() uint8 {
	switch perm {
	case Infer:
		return bitInfer
	case Metadata:
		return bitMetadata
	case List:
		return bitList
	case Admin:
		return bitAdmin
	case AuditRead:
		return bitAuditRead
	}
	return 0
}

// Global reports whether perm is a global permission: one no role can
// restrict to some models.
func (perm Permission) Global() bool { return perm.bit()&globalBits != 0 }

// Action is what a principal asks to do.
//
// Model is "" for actions that name no model: List (may the principal
// call the listing at all), Admin and AuditRead. Infer and Metadata must
// name a model. Version is "" when the action names no version (model
// metadata, a listing entry, or a request for the newest version that has
// not been resolved yet); a version is only meaningful with a model.
type Action struct {
	Permission Permission
	Model      string
	Version    string
}

// Decision is the outcome of an authorization check.
type Decision struct {
	Allow bool
	// Rule names what decided, for the audit log: "role:<name>" for an
	// allow, and for a denial one of "unauthenticated", "invalid-action",
	// "deny:<name>", "scope:models", "scope:max_batch" or "default-deny".
	Rule string
}

// Rule strings that name no policy entry.
const (
	RuleUnauthenticated = "unauthenticated"
	RuleInvalidAction   = "invalid-action"
	RuleScopeModels     = "scope:models"
	RuleScopeMaxBatch   = "scope:max_batch"
	RuleDefaultDeny     = "default-deny"

	// RolePrefix and DenyPrefix begin the Rule of a decision made by a
	// role or a deny rule; the policy entry's name follows.
	RolePrefix = "role:"
	DenyPrefix = "deny:"
)

var (
	unauthenticated = Decision{Rule: RuleUnauthenticated}
	invalidAction   = Decision{Rule: RuleInvalidAction}
	scopeModels     = Decision{Rule: RuleScopeModels}
	defaultDeny     = Decision{Rule: RuleDefaultDeny}
)

// authenticated reports whether p is a principal authentication vouched
// for.
func authenticated(p *pipeline.Principal) bool {
	return p != nil && p.ID != "" && p.Method != pipeline.MethodNone
}

// valid reports whether a is well formed: a known permission, a model when
// the permission needs one, and names the repository would accept.
func (a Action) valid() bool {
	bit := a.Permission.bit()
	if bit == 0 {
		return false
	}
	if a.Model == "" {
		return a.Version == "" && bit&(bitInfer|bitMetadata) == 0
	}
	return validModelName(a.Model) && (a.Version == "" || validVersion(a.Version))
}

// Decide reports whether p may do a under policy pol, in this order:
//  1. p unauthenticated: deny "unauthenticated";
//  2. a malformed: deny "invalid-action";
//  3. a deny rule matches: deny "deny:<name>" (the first in the file);
//  4. p's Scopes.Models exclude a's model: deny "scope:models";
//  5. a role p holds grants a: allow "role:<name>";
//  6. otherwise deny "default-deny".
//
// A nil *Policy denies everything. Decide is safe for concurrent use.
func (pol *Policy) Decide(p *pipeline.Principal, a Action) Decision {
	if !authenticated(p) {
		return unauthenticated
	}
	if !a.valid() {
		return invalidAction
	}
	if pol == nil {
		if !scopeAllows(p, a) {
			return scopeModels
		}
		return defaultDeny
	}
	bit := a.Permission.bit()
	spiffe := pol.hasSPIFFEPatterns && validSPIFFEID(p.ID)
	if d := pol.denied(p, a, bit, spiffe); d != nil {
		return Decision{Rule: d.rule}
	}
	if !scopeAllows(p, a) {
		return scopeModels
	}
	if r := pol.granted(p, a, bit, spiffe); r != nil {
		return Decision{Allow: true, Rule: r.rule}
	}
	return defaultDeny
}

// denied returns the first deny rule, in file order, that matches p and a.
func (pol *Policy) denied(p *pipeline.Principal, a Action, bit uint8, spiffe bool) *denyRule {
	if len(pol.deny) == 0 {
		return nil
	}
	var first *denyRule
	consider := func(rs []*denyRule) {
		for _, r := range rs {
			if first != nil && r.index >= first.index {
				return // each list is in file order
			}
			if r.applies(a, bit) {
				first = r
				return
			}
		}
	}
	ix := &pol.denyIndex
	consider(ix.byID[p.ID])
	for _, g := range p.Groups {
		consider(ix.byGroup[g])
	}
	consider(ix.anyone)
	if spiffe {
		for i := range ix.spiffe {
			if ix.spiffe[i].pattern.match(p.ID) {
				consider(ix.spiffe[i].items)
			}
		}
	}
	return first
}

// granted returns a role p holds that grants a: the first found among
// roles bound to p's ID, then to each of its groups in order, then to
// "*", then to SPIFFE patterns in file order, then p's own Roles.
func (pol *Policy) granted(p *pipeline.Principal, a Action, bit uint8, spiffe bool) *role {
	ix := &pol.roleIndex
	if r := firstGrant(ix.byID[p.ID], a, bit); r != nil {
		return r
	}
	for _, g := range p.Groups {
		if r := firstGrant(ix.byGroup[g], a, bit); r != nil {
			return r
		}
	}
	if r := firstGrant(ix.anyone, a, bit); r != nil {
		return r
	}
	if spiffe {
		for i := range ix.spiffe {
			if ix.spiffe[i].pattern.match(p.ID) {
				if r := firstGrant(ix.spiffe[i].items, a, bit); r != nil {
					return r
				}
			}
		}
	}
	for _, name := range p.Roles {
		if r := pol.roles[name]; r != nil && r.grants(a, bit) {
			return r
		}
	}
	return nil
}

func firstGrant(rs []*role, a Action, bit uint8) *role {
	for _, r := range rs {
		if r.grants(a, bit) {
			return r
		}
	}
	return nil
}

// scopeAllows reports whether p's credential scopes admit a. Empty
// Scopes.Models narrows nothing. Otherwise an action naming a model needs
// a scope pattern matching it; a listing that names no model passes (each
// entry is checked again); a global action naming no model needs the
// scope "*". A malformed scope pattern matches nothing.
func scopeAllows(p *pipeline.Principal, a Action) bool {
	scopes := p.Scopes.Models
	if len(scopes) == 0 {
		return true
	}
	if a.Model == "" {
		if a.Permission == List {
			return true
		}
		for _, s := range scopes {
			if s == "*" {
				return true
			}
		}
		return false
	}
	for _, s := range scopes {
		if matchModel(s, a.Model) {
			return true
		}
	}
	return false
}

// CheckBatch reports whether p's credential may send a batch of the given
// size: denied "scope:max_batch" when Scopes.MaxBatch is set and batch
// exceeds it, or when MaxBatch is negative. Rule is "scope:max_batch"
// whether or not it allows. A negative batch is "invalid-action".
func CheckBatch(p *pipeline.Principal, batch int64) Decision {
	if !authenticated(p) {
		return unauthenticated
	}
	if batch < 0 {
		return invalidAction
	}
	limit := p.Scopes.MaxBatch
	if limit < 0 || (limit > 0 && batch > limit) {
		return Decision{Rule: RuleScopeMaxBatch}
	}
	return Decision{Allow: true, Rule: RuleScopeMaxBatch}
}

// Visible returns the models in models, in order, that p may see: those on
// which pol allows it Metadata or List. A server lists only these, and
// answers for the others exactly as for a model that does not exist. The
// result is a new slice; models is not modified.
func (pol *Policy) Visible(p *pipeline.Principal, models []string) []string {
	var out []string
	for _, m := range models {
		if pol.Decide(p, Action{Permission: Metadata, Model: m}).Allow ||
			pol.Decide(p, Action{Permission: List, Model: m}).Allow {
			out = append(out, m)
		}
	}
	return out
}
