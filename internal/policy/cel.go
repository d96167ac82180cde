package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// The CEL object types behind the policy variables. They are declared to the type checker
// field by field, so a misspelt field (statement.kinnd) is a load-time error with its line,
// not a rule that silently never matches.
const (
	typeIdentity  = "gatehouse.Identity"
	typeTarget    = "gatehouse.Target"
	typeStatement = "gatehouse.Statement"
	typeSession   = "gatehouse.Session"
)

// errNotFacts is returned when a field getter is handed something other than the evaluation
// context; it cannot happen with programs compiled by this package.
var errNotFacts = errors.New("policy: field read from a value that is not a policy evaluation context")

// fieldDef declares one field of a policy variable: its CEL type and how to read it from the
// facts of one decision.
type fieldDef struct {
	object string
	name   string
	typ    *types.Type
	get    func(ec *evalCtx, a types.Adapter) ref.Val
}

// fieldDefs lists every field policies may use. It is a function, not a package variable, so
// nothing at package level can be changed.
func fieldDefs() []fieldDef {
	str := func(s string) ref.Val { return types.String(s) }
	list := func(a types.Adapter, l []string) ref.Val {
		if l == nil {
			l = []string{}
		}
		return types.NewStringList(a, l)
	}
	stringList := types.NewListType(types.StringType)
	return []fieldDef{
		// identity
		{typeIdentity, "subject", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.id.Subject) }},
		{typeIdentity, "kind", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(string(ec.id.Kind)) }},
		{typeIdentity, "groups", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.id.Groups) }},
		{typeIdentity, "claims", types.NewMapType(types.StringType, types.DynType), func(ec *evalCtx, a types.Adapter) ref.Val {
			if ec.id.Claims == nil {
				return a.NativeToValue(map[string]any{})
			}
			return a.NativeToValue(ec.id.Claims)
		}},
		{typeIdentity, "auth_method", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.id.AuthMethod) }},
		{typeIdentity, "issuer", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.id.Issuer) }},
		// target
		{typeTarget, "name", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.tg.Name) }},
		{typeTarget, "environment", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.tg.Environment) }},
		{typeTarget, "production", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(IsProduction(ec.tg.Environment)) }},
		{typeTarget, "engine", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.tg.Engine) }},
		{typeTarget, "labels", types.NewMapType(types.StringType, types.StringType), func(ec *evalCtx, a types.Adapter) ref.Val {
			if ec.tg.Labels == nil {
				return a.NativeToValue(map[string]string{})
			}
			return a.NativeToValue(ec.tg.Labels)
		}},
		// statement
		{typeStatement, "kind", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.Kind) }},
		{typeStatement, "category", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(string(ec.st.Category)) }},
		{typeStatement, "object_type", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.ObjectType) }},
		{typeStatement, "tables", stringList, func(ec *evalCtx, a types.Adapter) ref.Val {
			if len(ec.st.TablesWritten) == 0 {
				return list(a, ec.st.TablesRead)
			}
			if len(ec.st.TablesRead) == 0 {
				return list(a, ec.st.TablesWritten)
			}
			return list(a, append(append(make([]string, 0, len(ec.st.TablesRead)+len(ec.st.TablesWritten)), ec.st.TablesRead...), ec.st.TablesWritten...))
		}},
		{typeStatement, "tables_read", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.st.TablesRead) }},
		{typeStatement, "tables_written", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.st.TablesWritten) }},
		{typeStatement, "columns", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.st.Columns) }},
		{typeStatement, "has_where", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.HasWhere) }},
		{typeStatement, "where_trivial", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.WhereTrivial) }},
		{typeStatement, "changes_role", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ChangesRole(ec.st)) }},
		{typeStatement, "privileged", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.Privileged) }},
		{typeStatement, "program", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.Program) }},
		{typeStatement, "server_file", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.ServerFile) }},
		{typeStatement, "locking", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.Locking) }},
		{typeStatement, "setting", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.Setting) }},
		{typeStatement, "prepared_name", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.PreparedName) }},
		{typeStatement, "has_limit", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.HasLimit) }},
		{typeStatement, "export", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.Export) }},
		{typeStatement, "functions", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, unqualified(ec.st.Functions)) }},
		{typeStatement, "functions_qualified", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.st.Functions) }},
		{typeStatement, "text", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.Redacted) }},
		{typeStatement, "fingerprint", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.st.Fingerprint) }},
		{typeStatement, "parsed", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.st.ParseError == "") }},
		{typeStatement, "sensitive_classes", stringList, func(ec *evalCtx, a types.Adapter) ref.Val { return list(a, ec.sensitive) }},
		// session
		{typeSession, "id", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.sess.ID) }},
		{typeSession, "client_addr", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.sess.ClientAddr) }},
		{typeSession, "application_name", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.sess.ApplicationName) }},
		{typeSession, "purpose", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.sess.Options[purposeOption]) }},
		{typeSession, "purpose_tags", stringList, func(ec *evalCtx, a types.Adapter) ref.Val {
			return list(a, purposeTags(ec.sess.Options[purposeOption]))
		}},
		{typeSession, "tls", types.BoolType, func(ec *evalCtx, _ types.Adapter) ref.Val { return types.Bool(ec.sess.TLS) }},
		{typeSession, "database", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.sess.Database) }},
		{typeSession, "access_level", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(ec.level) }},
		{typeSession, "via", types.StringType, func(ec *evalCtx, _ types.Adapter) ref.Val { return str(string(ec.via)) }},
		{typeSession, "options", types.NewMapType(types.StringType, types.StringType), func(ec *evalCtx, a types.Adapter) ref.Val {
			if ec.sess.Options == nil {
				return a.NativeToValue(map[string]string{})
			}
			return a.NativeToValue(ec.sess.Options)
		}},
	}
}

// purposeOption is the startup option a client declares its purpose with
// (options=-c gatehouse.purpose=incident-123).
const purposeOption = "gatehouse.purpose"

// IsProduction reports whether an environment name means production ("prod" or
// "production", any case), the environments the built-in guardrails protect.
func IsProduction(env string) bool {
	return strings.EqualFold(env, "prod") || strings.EqualFold(env, "production")
}

// unqualified strips schema qualification from function names so pg_catalog.pg_read_file and
// pg_read_file are the same to a policy. It only allocates when a name is qualified.
func unqualified(fns []string) []string {
	qualified := false
	for _, f := range fns {
		if strings.IndexByte(f, '.') >= 0 {
			qualified = true
			break
		}
	}
	if !qualified {
		return fns
	}
	out := make([]string, len(fns))
	for i, f := range fns {
		if j := strings.LastIndexByte(f, '.'); j >= 0 {
			f = f[j+1:]
		}
		out[i] = f
	}
	return out
}

// purposeTags splits a declared purpose ("incident-42, debugging") into its tags.
func purposeTags(p string) []string {
	if p == "" {
		return nil
	}
	return strings.FieldsFunc(p, func(r rune) bool { return r == ',' || r == ' ' || r == ';' })
}

// evalCtx is the activation of one decision: CEL resolves the variables to it, and field
// getters read the facts from it. Converted field values are cached, so a field used by
// several rules is converted once per decision.
type evalCtx struct {
	sess      *gate.Session
	id        *identity.Identity
	tg        *config.Target
	st        *inspect.Statement
	sensitive []string
	via       gate.Via
	level     string
	now       time.Time
	timeVal   ref.Val
	cache     []ref.Val
	pol       *Policy
	// failed is set when a condition failed at run time during the decision: such a
	// decision is counted (and may be logged) per call, so it is never reused.
	failed bool
}

// empties stand in for the missing parts of an input, so field getters never see nil.
type empties struct {
	session   gate.Session
	identity  identity.Identity
	target    config.Target
	statement inspect.Statement
}

// reset fills ec for one decision; nil parts read as empty values.
func (ec *evalCtx) reset(in *gate.Input, pol *Policy) {
	nfields, e := pol.envs.nfields, &pol.empty
	ec.pol = pol
	ec.sess, ec.id, ec.tg, ec.st = in.Session, nil, nil, in.Statement
	if ec.sess == nil {
		ec.sess = &e.session
	}
	ec.id, ec.tg = ec.sess.Identity, ec.sess.Target
	if ec.id == nil {
		ec.id = &e.identity
	}
	if ec.tg == nil {
		ec.tg = &e.target
	}
	if ec.st == nil {
		ec.st = &e.statement
	}
	ec.sensitive, ec.via, ec.level = in.SensitiveClasses, in.Via, ""
	ec.now = in.Now
	if ec.now.IsZero() {
		ec.now = time.Now()
	}
	ec.timeVal, ec.failed = nil, false
	if cap(ec.cache) < nfields {
		ec.cache = make([]ref.Val, nfields)
	}
	ec.cache = ec.cache[:nfields]
	clear(ec.cache)
}

// ResolveName implements interpreter.Activation.
func (ec *evalCtx) ResolveName(name string) (any, bool) {
	switch name {
	case "identity", "target", "statement", "session":
		return ec, true
	case "time":
		if ec.timeVal == nil {
			ec.timeVal = types.Timestamp{Time: ec.now}
		}
		return ec.timeVal, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (ec *evalCtx) Parent() interpreter.Activation { return nil }

// provider declares the policy object types to the CEL type checker and interpreter on top of
// the standard registry.
type provider struct {
	*types.Registry
	objects map[string]map[string]*types.FieldType
	names   map[string][]string
}

func newProvider(defs []fieldDef) (*provider, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, fmt.Errorf("create CEL type registry: %w", err)
	}
	p := &provider{Registry: reg, objects: map[string]map[string]*types.FieldType{}, names: map[string][]string{}}
	for i, d := range defs {
		i, get := i, d.get
		m := p.objects[d.object]
		if m == nil {
			m = map[string]*types.FieldType{}
			p.objects[d.object] = m
		}
		m[d.name] = &types.FieldType{
			Type:  d.typ,
			IsSet: func(any) bool { return true },
			GetFrom: func(target any) (any, error) {
				ec, ok := target.(*evalCtx)
				if !ok {
					return nil, errNotFacts
				}
				if v := ec.cache[i]; v != nil {
					return v, nil
				}
				v := get(ec, reg)
				ec.cache[i] = v
				return v, nil
			},
		}
		p.names[d.object] = append(p.names[d.object], d.name)
	}
	return p, nil
}

// FindStructType implements types.Provider.
func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if _, ok := p.objects[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return p.Registry.FindStructType(name)
}

// FindStructFieldNames implements types.Provider.
func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	if n, ok := p.names[name]; ok {
		return n, true
	}
	return p.Registry.FindStructFieldNames(name)
}

// FindStructFieldType implements types.Provider.
func (p *provider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if m, ok := p.objects[name]; ok {
		ft, ok := m[field]
		return ft, ok
	}
	return p.Registry.FindStructFieldType(name, field)
}

// NativeToValue implements types.Adapter. A whole policy variable has no CEL value of its
// own (validation refuses expressions that use one without a field).
func (p *provider) NativeToValue(v any) ref.Val {
	if _, ok := v.(*evalCtx); ok {
		return types.NewErr("policy variables can only be used through their fields (e.g. statement.kind)")
	}
	return p.Registry.NativeToValue(v)
}

// celEnvs are the two CEL environments: grants and masking see who and where, rules also see
// the statement.
type celEnvs struct {
	grant    *cel.Env
	rule     *cel.Env
	nfields  int
	provider *provider
}

func newEnvs() (*celEnvs, error) {
	defs := fieldDefs()
	p, err := newProvider(defs)
	if err != nil {
		return nil, err
	}
	base := []cel.EnvOption{
		cel.CustomTypeProvider(p),
		cel.CustomTypeAdapter(p),
		cel.Variable("identity", types.NewObjectType(typeIdentity)),
		cel.Variable("target", types.NewObjectType(typeTarget)),
		cel.Variable("session", types.NewObjectType(typeSession)),
		cel.Variable("time", types.TimestampType),
		ext.Strings(),
		ext.Sets(),
		ext.Lists(),
	}
	g, err := cel.NewEnv(base...)
	if err != nil {
		return nil, fmt.Errorf("create CEL environment for grants: %w", err)
	}
	r, err := g.Extend(cel.Variable("statement", types.NewObjectType(typeStatement)))
	if err != nil {
		return nil, fmt.Errorf("create CEL environment for rules: %w", err)
	}
	return &celEnvs{grant: g, rule: r, nfields: len(defs), provider: p}, nil
}

// exprError is one problem in a CEL expression, located relative to the expression text.
type exprError struct {
	line, col int // 1-based line within the expression, 0-based column; 0 line if unknown
	msg       string
}

// compile type-checks expr as a boolean condition and plans it for fast evaluation. It also
// reports whether the condition reads the time, which makes every decision that evaluates
// it particular to its moment (see Policy.reusable).
func compile(env *cel.Env, src string) (prg cel.Program, usesTime bool, errs []exprError) {
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		var out []exprError
		for _, e := range iss.Errors() {
			out = append(out, exprError{line: e.Location.Line(), col: e.Location.Column(), msg: e.Message})
		}
		return nil, false, out
	}
	if !ast.OutputType().IsExactType(types.BoolType) && !ast.OutputType().IsExactType(types.DynType) {
		return nil, false, []exprError{{line: 1, msg: fmt.Sprintf("must be a condition (bool), but its type is %s", ast.OutputType())}}
	}
	if errs := wholeObjectUses(ast); len(errs) > 0 {
		return nil, false, errs
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, false, []exprError{{line: 1, msg: err.Error()}}
	}
	return prg, readsTime(ast), nil
}

// readsTime reports whether a checked condition names the time variable anywhere (a
// comprehension variable of that name counts too: erring that way only costs reuse). The
// other variables are the session's attributes and the statement's facts, fixed for a
// given session and statement; the standard library and the strings, sets and lists
// extensions have no function that reads a clock or anything else outside its arguments.
func readsTime(ast *cel.Ast) bool {
	nav := celast.NavigateAST(ast.NativeRep())
	for _, e := range celast.MatchDescendants(nav, celast.KindMatcher(celast.IdentKind)) {
		if e.AsIdent() == "time" {
			return true
		}
	}
	return false
}

// wholeObjectUses finds variables used without a field (identity == x), which have no value.
func wholeObjectUses(ast *cel.Ast) []exprError {
	native := ast.NativeRep()
	info := native.SourceInfo()
	var out []exprError
	checkExpr(native, func(id int64, name string) {
		loc := info.GetStartLocation(id)
		out = append(out, exprError{line: loc.Line(), col: loc.Column(), msg: fmt.Sprintf("%s can only be used through one of its fields, e.g. %s", name, exampleField(name))})
	})
	return out
}

func exampleField(v string) string {
	switch v {
	case "identity":
		return "identity.subject"
	case "target":
		return "target.environment"
	case "statement":
		return "statement.kind"
	}
	return "session.client_addr"
}

// checkExpr walks the checked AST and reports identifiers of object variables whose parent is
// not a field selection on them.
func checkExpr(native *celast.AST, report func(id int64, name string)) {
	nav := celast.NavigateAST(native)
	for _, e := range celast.MatchDescendants(nav, celast.KindMatcher(celast.IdentKind)) {
		name := e.AsIdent()
		switch name {
		case "identity", "target", "statement", "session":
		default:
			continue
		}
		if p, ok := e.Parent(); ok && p.Kind() == celast.SelectKind && p.AsSelect().Operand().ID() == e.ID() {
			continue
		}
		report(e.ID(), name)
	}
}
