package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// Access levels, weakest first.
const (
	LevelRead  = "read"
	LevelWrite = "write"
	LevelAdmin = "admin"
)

// levelRank orders access levels; 0 is no access.
func levelRank(l string) int {
	switch l {
	case LevelRead:
		return 1
	case LevelWrite:
		return 2
	case LevelAdmin:
		return 3
	}
	return 0
}

// Built-in masking profiles: ProfileDefault masks every detected sensitive class (it is sent
// to the gate as the empty profile name); ProfileNone shows raw values.
const (
	ProfileDefault = "default"
	ProfileNone    = "none"
)

// Policy is one compiled, validated policy. It is immutable once built, so the engine can
// swap it atomically while decisions are running.
type Policy struct {
	// Source is the file the policy came from ("built-in" for the default policy).
	Source string
	// Hash identifies the exact text, so the ledger can say which policy decided.
	Hash string

	defaults  ruleOutcome
	grants    []*grant
	rules     []*rule
	masking   masking
	overrides map[string]string
	envs      *celEnvs
	empty     empties
	raw       []byte
	// reusable is true when no condition reads the time: a decision then depends only on
	// the session's attributes, the statement's facts, the via and the sensitive classes,
	// so a gate may reuse it for a repeated statement (gate.ReusablePolicy).
	reusable bool
	// failedOnce remembers conditions whose run-time failure was logged (bookkeeping only;
	// it never changes a decision).
	failedOnce sync.Map
}

// ruleOutcome is what applies when no rule matches.
type ruleOutcome struct {
	action  gate.Action
	message string
	maxRows int64
	// maxAffected caps the rows one UPDATE, DELETE, MERGE or INSERT may change (0: none).
	maxAffected int64
}

// selector matches identities by subject glob, kind and group, plus an optional CEL condition.
// Each non-empty part must match; within a part any entry may match.
type selector struct {
	subjects []string
	kinds    []string
	groups   []string
	when     cel.Program
	whenSrc  string
}

type grant struct {
	name string
	line int
	who  selector
	// target side
	targets      []string
	environments []string
	labels       map[string]string
	production   *bool
	level        string
}

type rule struct {
	name         string
	line         int
	whenSrc      string
	when         cel.Program
	action       gate.Action
	message      string // what the client sees
	maxRows      int64
	maxAffected  int64  // max_affected_rows: rows one write may change, else rolled back
	mask         string // "" leaves the identity's masking profile
	allowUnknown bool
	// covers are the categories beyond the session's access level this allow rule lets
	// through (ddl, admin, unknown); deny and hold rules before it still apply.
	covers []inspect.Category
}

// coversCategory reports whether r is an allow rule that lets statements of cat through
// where the access level does not cover them.
func (r *rule) coversCategory(cat inspect.Category) bool {
	if r.action != gate.Allow {
		return false
	}
	if cat == inspect.Unknown && r.allowUnknown {
		return true
	}
	return slices.Contains(r.covers, cat)
}

type masking struct {
	defaultProfile string
	profiles       map[string]*Profile
	access         []*maskAccess
}

type maskAccess struct {
	name    string
	who     selector
	profile string
}

// Profile is a masking profile: the classes of sensitive data it shows raw, and optionally
// how it masks others. Everything else detected is masked the default way.
type Profile struct {
	Name string
	// Raw lists classes shown unmasked; "*" means all of them.
	Raw []string
	// Strategies maps a class to how it is masked: one of MaskStrategies; the key "*" is
	// every class not listed (and not raw). Classes in neither keep the default strategy.
	Strategies map[string]string
}

// MaskStrategies are the strategies a profile may give a class: partial keeps the shape and a
// little of the value, hash a keyed token (joins still work), redact a fixed text, null SQL
// NULL. Raw is said with the profile's raw list.
var MaskStrategies = []string{"partial", "hash", "redact", "null"}

// ShowsRaw reports whether values of class are shown unmasked under the profile.
func (p *Profile) ShowsRaw(class string) bool {
	if p == nil {
		return false
	}
	return slices.Contains(p.Raw, "*") || slices.Contains(p.Raw, class)
}

// Overrides returns the catalog overrides the policy declares: "schema.table.column" to a
// sensitive class, or "none" for a column that must never be treated as sensitive. The
// classifier reads them; the returned map is a copy.
func (p *Policy) Overrides() map[string]string {
	out := make(map[string]string, len(p.overrides))
	for k, v := range p.overrides {
		out[k] = v
	}
	return out
}

// MaskProfile returns the named profile ("" or "default" for the built-in default, which
// shows nothing raw; "none" shows everything raw).
func (p *Policy) MaskProfile(name string) (*Profile, bool) {
	switch name {
	case "", ProfileDefault:
		return &Profile{Name: ProfileDefault}, true
	case ProfileNone:
		return &Profile{Name: ProfileNone, Raw: []string{"*"}}, true
	}
	pr, ok := p.masking.profiles[name]
	return pr, ok
}

// DefaultMaskProfile names the masking profile of identities no masking.raw_access entry
// names ("default" unless masking.default says otherwise), for the console's data map.
func (p *Policy) DefaultMaskProfile() string {
	if p.masking.defaultProfile == "" {
		return ProfileDefault
	}
	return p.masking.defaultProfile
}

// RuleNames lists the rules in evaluation order, for tools and tests.
func (p *Policy) RuleNames() []string {
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.name
	}
	return out
}

// approvalMessage is the message of a require_approval rule that gives none. The gate adds
// what to do (the approval request filed for the statement) when it holds one.
const approvalMessage = "this statement needs an approval before it runs"

// parser accumulates every problem in a policy file, so one run shows them all.
type parser struct {
	file string
	errs []error
	envs *celEnvs
	// usesTime is set when a condition of the policy reads the time.
	usesTime bool
}

func (p *parser) errf(line int, field, format string, a ...any) {
	p.errs = append(p.errs, &config.FieldError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, a...)})
}

// fields checks a mapping node against the allowed keys and returns the value nodes by key.
func (p *parser) fields(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, path, "expected a mapping with fields %s, got %s", strings.Join(allowed, ", "), nodeKind(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := join(path, k.Value)
		if !slices.Contains(allowed, k.Value) {
			sorted := slices.Clone(allowed)
			sort.Strings(sorted)
			p.errf(k.Line, name, "unknown field; valid fields are %s", strings.Join(sorted, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errf(k.Line, name, "given twice")
			continue
		}
		out[k.Value] = v
	}
	return out
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) str(n *yaml.Node, path string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		p.errf(n.Line, path, "expected a string, got %s", nodeKind(n))
		return ""
	}
	return n.Value
}

// strs accepts a list of strings or a single string.
func (p *parser) strs(n *yaml.Node, path string) []string {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		if n.Value == "" {
			return nil
		}
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, path, "expected a list of strings, got %s", nodeKind(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.Value == "" {
			p.errf(c.Line, fmt.Sprintf("%s[%d]", path, i), "expected a non-empty string, got %s", nodeKind(c))
			continue
		}
		out = append(out, c.Value)
	}
	return out
}

func (p *parser) strMap(n *yaml.Node, path string) map[string]string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, path, "expected a mapping of strings, got %s", nodeKind(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			p.errf(v.Line, join(path, k.Value), "expected a string, got %s", nodeKind(v))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errf(k.Line, join(path, k.Value), "given twice")
			continue
		}
		out[k.Value] = v.Value
	}
	return out
}

func (p *parser) boolPtr(n *yaml.Node, path string) *bool {
	if n == nil {
		return nil
	}
	b, err := strconv.ParseBool(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errf(n.Line, path, "expected true or false, got %s", nodeKind(n))
		return nil
	}
	return &b
}

func (p *parser) int(n *yaml.Node, path string) int64 {
	if n == nil {
		return 0
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 {
		p.errf(n.Line, path, "expected a whole number of 0 or more, got %s", nodeKind(n))
		return 0
	}
	return v
}

func (p *parser) action(n *yaml.Node, path string, allowApproval bool) gate.Action {
	v := p.str(n, path)
	switch gate.Action(v) {
	case gate.Allow, gate.Deny:
		return gate.Action(v)
	case gate.RequireApproval:
		if allowApproval {
			return gate.RequireApproval
		}
	}
	valid := "allow, deny or require_approval"
	if !allowApproval {
		valid = "allow or deny"
	}
	p.errf(n.Line, path, "%q is not an action, expected %s", v, valid)
	return gate.Deny
}

// cel compiles a condition, reporting errors at the file line where they are.
func (p *parser) cel(env *cel.Env, n *yaml.Node, path string) cel.Program {
	src := p.str(n, path)
	if src == "" || n.Kind != yaml.ScalarNode {
		if n.Kind == yaml.ScalarNode {
			p.errf(n.Line, path, "is empty: give a CEL condition, e.g. statement.kind == \"DELETE\"")
		}
		return nil
	}
	prg, usesTime, errs := compile(env, src)
	p.usesTime = p.usesTime || usesTime
	for _, e := range errs {
		line := n.Line
		if e.line > 1 {
			line += e.line - 1
		}
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			line++ // block scalars start on the line after the indicator
		}
		where := ""
		if e.line > 0 {
			where = fmt.Sprintf(" (expression line %d, column %d)", e.line, e.col+1)
		}
		p.errf(line, path, "%s%s", e.msg, where)
	}
	return prg
}

func (p *parser) selector(f map[string]*yaml.Node, path string) selector {
	s := selector{
		subjects: p.strs(f["subjects"], join(path, "subjects")),
		kinds:    p.strs(f["kinds"], join(path, "kinds")),
		groups:   p.strs(f["groups"], join(path, "groups")),
	}
	for i, k := range s.kinds {
		switch k {
		case "human", "service", "agent":
		default:
			p.errf(f["kinds"].Line, fmt.Sprintf("%s.kinds[%d]", path, i), "%q is not an identity kind, expected human, service or agent", k)
		}
	}
	if n := f["when"]; n != nil {
		s.whenSrc = n.Value
		s.when = p.cel(p.envs.grant, n, join(path, "when"))
	}
	return s
}

func (s *selector) empty() bool {
	return len(s.subjects) == 0 && len(s.kinds) == 0 && len(s.groups) == 0 && s.whenSrc == ""
}

// Parse validates and compiles policy text; file names it in error messages. All problems
// found are returned together, each as a *config.FieldError with file, line and field.
func Parse(file string, data []byte) (*Policy, error) {
	envs, err := newEnvs()
	if err != nil {
		return nil, err
	}
	p := &parser{file: file, envs: envs}
	pol := &Policy{
		Source:    file,
		Hash:      hashText(data),
		envs:      envs,
		defaults:  ruleOutcome{action: gate.Allow},
		overrides: map[string]string{},
		masking:   masking{profiles: map[string]*Profile{}},
		raw:       bytes.Clone(data),
	}
	pol.empty.statement.Kind, pol.empty.statement.Category = "UNKNOWN", "unknown"
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, &config.FieldError{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(root.Content) == 0 {
		return nil, &config.FieldError{File: file, Msg: "the policy is empty: it needs at least one grant (an empty policy would let nobody in)"}
	}
	budget := maxNodes
	if !resolveAliases(root.Content[0], 0, &budget) {
		return nil, &config.FieldError{File: file, Msg: fmt.Sprintf("the policy nests aliases too deeply or expands to more than %d YAML nodes", maxNodes)}
	}
	top := p.fields(withoutExtensions(root.Content[0]), "", "version", "defaults", "grants", "rules", "masking", "overrides")
	if n := top["version"]; n != nil && n.Value != "1" {
		p.errf(n.Line, "version", "%q is not a supported policy version, expected 1", n.Value)
	}
	if n := top["defaults"]; n != nil {
		f := p.fields(n, "defaults", "action", "message", "max_rows", "max_affected_rows")
		if f["action"] != nil {
			pol.defaults.action = p.action(f["action"], "defaults.action", false)
		}
		pol.defaults.message = p.str(f["message"], "defaults.message")
		pol.defaults.maxRows = p.int(f["max_rows"], "defaults.max_rows")
		pol.defaults.maxAffected = p.int(f["max_affected_rows"], "defaults.max_affected_rows")
	}
	if pol.defaults.message == "" {
		pol.defaults.message = "no rule allows this statement"
	}
	p.parseMasking(pol, top["masking"])
	p.parseGrants(pol, top["grants"])
	p.parseRules(pol, top["rules"])
	p.parseOverrides(pol, top["overrides"])
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	pol.reusable = !p.usesTime
	return pol, nil
}

// withoutExtensions drops top-level keys starting with "x-", the conventional place for
// anchors shared by several entries (x-admins: &admins [dba, sre]).
func withoutExtensions(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return n
	}
	out := *n
	out.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !strings.HasPrefix(n.Content[i].Value, "x-") {
			out.Content = append(out.Content, n.Content[i], n.Content[i+1])
		}
	}
	return &out
}

// maxNodes bounds the YAML tree after alias expansion, so a file of nested aliases cannot
// make loading take forever.
const maxNodes = 100_000

// resolveAliases replaces alias nodes (*name) with the nodes they stand for, so anchors can
// be used to share lists; it fails when the tree is too deep or too large.
func resolveAliases(n *yaml.Node, depth int, budget *int) bool {
	*budget--
	if depth > 64 || *budget < 0 {
		return false
	}
	for i, c := range n.Content {
		for c.Kind == yaml.AliasNode && c.Alias != nil {
			c = c.Alias
			*budget--
			if *budget < 0 {
				return false
			}
		}
		n.Content[i] = c
		if !resolveAliases(c, depth+1, budget) {
			return false
		}
	}
	return true
}

func (p *parser) parseGrants(pol *Policy, n *yaml.Node) {
	if n == nil {
		p.errf(0, "grants", "is required: without grants nobody may use any target")
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, "grants", "expected a list of grants, got %s", nodeKind(n))
		return
	}
	seen := map[string]int{}
	for i, item := range n.Content {
		path := fmt.Sprintf("grants[%d]", i)
		f := p.fields(item, path, "name", "subjects", "kinds", "groups", "when", "targets", "environments", "labels", "production", "level")
		if f == nil {
			continue
		}
		g := &grant{line: item.Line, name: p.str(f["name"], join(path, "name"))}
		if g.name == "" {
			g.name = path
		} else if prev, dup := seen[g.name]; dup {
			p.errf(f["name"].Line, join(path, "name"), "%q is already used by the grant at line %d", g.name, prev)
		}
		seen[g.name] = item.Line
		g.who = p.selector(f, path)
		if g.who.empty() {
			p.errf(item.Line, path, "names nobody: give subjects, kinds, groups or when (subjects: [\"*\"] for everyone)")
		}
		g.targets = p.strs(f["targets"], join(path, "targets"))
		g.environments = p.strs(f["environments"], join(path, "environments"))
		g.labels = p.strMap(f["labels"], join(path, "labels"))
		g.production = p.boolPtr(f["production"], join(path, "production"))
		g.level = p.str(f["level"], join(path, "level"))
		if f["level"] == nil {
			p.errf(item.Line, join(path, "level"), "is required: read, write or admin")
		} else if levelRank(g.level) == 0 {
			p.errf(f["level"].Line, join(path, "level"), "%q is not an access level, expected read, write or admin", g.level)
		}
		pol.grants = append(pol.grants, g)
	}
}

func (p *parser) parseRules(pol *Policy, n *yaml.Node) {
	if n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, "rules", "expected a list of rules, got %s", nodeKind(n))
		return
	}
	seen := map[string]int{}
	for i, item := range n.Content {
		path := fmt.Sprintf("rules[%d]", i)
		f := p.fields(item, path, "name", "when", "action", "message", "max_rows", "max_affected_rows", "mask", "allow_unknown", "covers")
		if f == nil {
			continue
		}
		r := &rule{line: item.Line, name: p.str(f["name"], join(path, "name"))}
		switch {
		case f["name"] == nil || r.name == "":
			p.errf(item.Line, join(path, "name"), "is required: the name is shown to users and kept in the ledger")
		case seen[r.name] != 0:
			p.errf(f["name"].Line, join(path, "name"), "%q is already used by the rule at line %d", r.name, seen[r.name])
		default:
			seen[r.name] = item.Line
		}
		if f["when"] == nil {
			p.errf(item.Line, join(path, "when"), "is required: a CEL condition (use \"true\" for a rule that always applies)")
		} else {
			r.whenSrc = f["when"].Value
			r.when = p.cel(pol.envs.rule, f["when"], join(path, "when"))
		}
		if f["action"] == nil {
			p.errf(item.Line, join(path, "action"), "is required: allow, deny or require_approval")
		} else {
			r.action = p.action(f["action"], join(path, "action"), true)
		}
		r.message = p.str(f["message"], join(path, "message"))
		r.maxRows = p.int(f["max_rows"], join(path, "max_rows"))
		r.maxAffected = p.int(f["max_affected_rows"], join(path, "max_affected_rows"))
		r.mask = p.str(f["mask"], join(path, "mask"))
		if r.mask != "" {
			if _, ok := pol.MaskProfile(r.mask); !ok {
				p.errf(f["mask"].Line, join(path, "mask"), "%q is not a masking profile, expected %s", r.mask, strings.Join(pol.profileNames(), ", "))
			}
		}
		if b := p.boolPtr(f["allow_unknown"], join(path, "allow_unknown")); b != nil {
			r.allowUnknown = *b
		}
		if r.allowUnknown && r.action != gate.Allow {
			p.errf(f["allow_unknown"].Line, join(path, "allow_unknown"), "only means something on an allow rule")
		}
		if n := f["covers"]; n != nil {
			for _, c := range p.strs(n, join(path, "covers")) {
				switch cat := inspect.Category(c); cat {
				case inspect.Write, inspect.DDL, inspect.Admin, inspect.Unknown:
					r.covers = append(r.covers, cat)
				default:
					p.errf(n.Line, join(path, "covers"), "%q is not a category an access level can leave out, expected write, ddl, admin or unknown", c)
				}
			}
			if r.action != gate.Allow {
				p.errf(n.Line, join(path, "covers"), "only means something on an allow rule")
			}
		}
		if r.action != gate.Allow && (r.maxRows > 0 || r.mask != "") {
			p.errf(item.Line, path, "max_rows and mask only apply to allow rules")
		}
		if r.action != gate.Allow && r.maxAffected > 0 {
			p.errf(item.Line, path, "max_affected_rows only applies to allow rules")
		}
		switch {
		case r.action == gate.RequireApproval && r.message == "":
			r.message = approvalMessage
		case r.action == gate.Deny && r.message == "":
			r.message = "refused by policy rule " + strconv.Quote(r.name)
		}
		pol.rules = append(pol.rules, r)
	}
}

func (pol *Policy) profileNames() []string {
	out := []string{ProfileDefault, ProfileNone}
	for n := range pol.masking.profiles {
		out = append(out, n)
	}
	sort.Strings(out[2:])
	return out
}

func (p *parser) parseMasking(pol *Policy, n *yaml.Node) {
	if n == nil {
		return
	}
	f := p.fields(n, "masking", "default", "profiles", "raw_access")
	if pn := f["profiles"]; pn != nil {
		if pn.Kind != yaml.MappingNode {
			p.errf(pn.Line, "masking.profiles", "expected a mapping of profile name to profile, got %s", nodeKind(pn))
		} else {
			for i := 0; i+1 < len(pn.Content); i += 2 {
				k, v := pn.Content[i], pn.Content[i+1]
				path := "masking.profiles." + k.Value
				if k.Value == ProfileDefault || k.Value == ProfileNone || k.Value == "" {
					p.errf(k.Line, path, "%q is built in and cannot be redefined", k.Value)
					continue
				}
				if _, dup := pol.masking.profiles[k.Value]; dup {
					p.errf(k.Line, path, "given twice")
					continue
				}
				pf := p.fields(v, path, "raw", "strategies")
				pol.masking.profiles[k.Value] = &Profile{Name: k.Value, Raw: p.strs(pf["raw"], path+".raw"),
					Strategies: p.strategies(pf["strategies"], path+".strategies")}
			}
		}
	}
	checkProfile := func(n *yaml.Node, path string) string {
		name := p.str(n, path)
		if name == "" {
			return ""
		}
		if _, ok := pol.MaskProfile(name); !ok {
			p.errf(n.Line, path, "%q is not a masking profile, expected %s", name, strings.Join(pol.profileNames(), ", "))
		}
		return name
	}
	if d := f["default"]; d != nil {
		pol.masking.defaultProfile = checkProfile(d, "masking.default")
	}
	if an := f["raw_access"]; an != nil {
		if an.Kind != yaml.SequenceNode {
			p.errf(an.Line, "masking.raw_access", "expected a list, got %s", nodeKind(an))
			return
		}
		for i, item := range an.Content {
			path := fmt.Sprintf("masking.raw_access[%d]", i)
			af := p.fields(item, path, "name", "subjects", "kinds", "groups", "when", "profile")
			if af == nil {
				continue
			}
			a := &maskAccess{name: p.str(af["name"], join(path, "name")), who: p.selector(af, path)}
			if a.name == "" {
				a.name = path
			}
			if a.who.empty() {
				p.errf(item.Line, path, "names nobody: give subjects, kinds, groups or when")
			}
			if af["profile"] == nil {
				p.errf(item.Line, join(path, "profile"), "is required: the masking profile these identities get (\"none\" for raw values)")
			} else {
				a.profile = checkProfile(af["profile"], join(path, "profile"))
			}
			pol.masking.access = append(pol.masking.access, a)
		}
	}
}

// strategies reads a profile's class → strategy mapping.
func (p *parser) strategies(n *yaml.Node, path string) map[string]string {
	m := p.strMap(n, path)
	if len(m) == 0 {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "" || strings.ContainsAny(k.Value, " .") {
			p.errf(k.Line, join(path, k.Value), "%q is not a class: give a class name such as email, or * for every other class", k.Value)
			delete(m, k.Value)
			continue
		}
		if v.Value == "raw" {
			p.errf(v.Line, join(path, k.Value), "list the classes shown raw under raw, not as a strategy")
			delete(m, k.Value)
			continue
		}
		if !slices.Contains(MaskStrategies, v.Value) {
			p.errf(v.Line, join(path, k.Value), "%q is not a strategy, expected %s", v.Value, strings.Join(MaskStrategies, ", "))
			delete(m, k.Value)
		}
	}
	return m
}

func (p *parser) parseOverrides(pol *Policy, n *yaml.Node) {
	if n == nil {
		return
	}
	m := p.strMap(n, "overrides")
	// Lines for messages: find each key's node.
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		lines[n.Content[i].Value] = n.Content[i].Line
	}
	for k, v := range m {
		parts := strings.Split(k, ".")
		if len(parts) != 3 || slices.Contains(parts, "") {
			p.errf(lines[k], "overrides."+k, "expected schema.table.column, e.g. public.users.email")
			continue
		}
		if v == "" || strings.ContainsAny(v, " .") {
			p.errf(lines[k], "overrides."+k, "%q is not a class: give a class name such as email, or none", v)
			continue
		}
		pol.overrides[strings.ToLower(k)] = strings.ToLower(v)
	}
}
