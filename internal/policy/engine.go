package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

//go:embed default.yaml
var defaultPolicyText []byte

// DefaultText returns the built-in policy's YAML, so operators can start their own file from it
// (gatehouse policy default > policy.yaml).
func DefaultText() []byte { return bytes.Clone(defaultPolicyText) }

// DefaultSource is the Source of the built-in policy.
const DefaultSource = "built-in default policy"

// Default compiles the built-in policy used when no policy file is configured.
func Default() (*Policy, error) {
	p, err := Parse(DefaultSource, defaultPolicyText)
	if err != nil {
		return nil, fmt.Errorf("compile the built-in policy: %w", err)
	}
	return p, nil
}

// Load reads, validates and compiles a policy file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(path, b)
}

func hashText(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// Options configure an Engine.
type Options struct {
	// Log receives reloads and evaluation errors; slog.Default() when nil.
	Log *slog.Logger
	// Registerer receives the policy metrics; none are registered when nil.
	Registerer prometheus.Registerer
	// PollInterval is how often Watch looks at the policy file (default one second).
	PollInterval time.Duration
}

// Engine holds the policy in force and decides with it. The policy sits behind an atomic
// pointer: a reload swaps it in between two decisions, sessions stay open, and each decision
// uses one policy from start to end. Engine implements gate.Policy.
type Engine struct {
	cur  atomic.Pointer[Policy]
	log  *slog.Logger
	poll time.Duration
	pool sync.Pool

	reloads      prometheus.Counter
	reloadErrors prometheus.Counter
	lastSuccess  prometheus.Gauge
	evalErrors   prometheus.Counter
}

var _ gate.ReusablePolicy = (*Engine)(nil)

// NewEngine returns an engine holding the built-in default policy; call Load to use a file.
func NewEngine(opts Options) (*Engine, error) {
	e := &Engine{log: opts.Log, poll: opts.PollInterval}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.poll <= 0 {
		e.poll = time.Second
	}
	e.pool.New = func() any { return new(evalCtx) }
	e.reloads = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_policy_reloads_total", Help: "Policy files loaded and put in force."})
	e.reloadErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_policy_reload_errors_total", Help: "Policy reloads refused because the file could not be read or was invalid; the previous policy stayed in force."})
	e.lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: "gatehouse_policy_last_reload_success_timestamp_seconds", Help: "When the policy in force was loaded (Unix time)."})
	e.evalErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_policy_eval_errors_total", Help: "Policy conditions that failed at run time (deny and approval rules then apply, allow rules do not)."})
	if opts.Registerer != nil {
		var err error
		if e.reloads, err = register(opts.Registerer, e.reloads); err != nil {
			return nil, err
		}
		if e.reloadErrors, err = register(opts.Registerer, e.reloadErrors); err != nil {
			return nil, err
		}
		if e.lastSuccess, err = register(opts.Registerer, e.lastSuccess); err != nil {
			return nil, err
		}
		if e.evalErrors, err = register(opts.Registerer, e.evalErrors); err != nil {
			return nil, err
		}
	}
	p, err := Default()
	if err != nil {
		return nil, err
	}
	e.cur.Store(p)
	e.lastSuccess.SetToCurrentTime()
	return e, nil
}

// register registers c, or returns the collector already registered under its name (a second
// engine on the same registry shares the metrics).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register policy metrics: %w", err)
	}
	return c, nil
}

// Policy returns the policy in force.
func (e *Engine) Policy() *Policy { return e.cur.Load() }

// Set puts p in force.
func (e *Engine) Set(p *Policy) {
	e.cur.Store(p)
	e.lastSuccess.SetToCurrentTime()
}

// Overrides returns the catalog overrides of the policy in force (see Policy.Overrides).
func (e *Engine) Overrides() map[string]string { return e.cur.Load().Overrides() }

// MaskProfile returns a masking profile of the policy in force (see Policy.MaskProfile).
func (e *Engine) MaskProfile(name string) (*Profile, bool) { return e.cur.Load().MaskProfile(name) }

// Load reads path and puts it in force if it is valid; otherwise the policy in force stays and
// the error says why. An empty path puts the built-in default policy in force.
func (e *Engine) Load(path string) error {
	var (
		p   *Policy
		err error
	)
	if path == "" {
		p, err = Default()
	} else {
		p, err = Load(path)
	}
	if err != nil {
		return err
	}
	e.Set(p)
	e.reloads.Inc()
	return nil
}

// Watch polls path until ctx ends and puts every valid new version in force. A version that
// does not read or validate leaves the policy in force unchanged, is logged, counted in
// gatehouse_policy_reload_errors_total and passed to onReload (which may be nil); a
// successful reload passes nil. Watch blocks: run it in its own goroutine.
func (e *Engine) Watch(ctx context.Context, path string, onReload func(err error)) {
	// The first poll always reads the file, so a change made between Load and Watch is not
	// missed; text identical to the policy in force is not a reload.
	var lastMod time.Time
	var lastSize int64 = -1
	lastErr := ""
	t := time.NewTicker(e.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				e.reloadFailed(path, fmt.Errorf("read policy: %w", err), onReload)
			}
			lastSize = -1
			continue
		}
		if fi.ModTime().Equal(lastMod) && fi.Size() == lastSize {
			continue
		}
		lastMod, lastSize = fi.ModTime(), fi.Size()
		b, err := os.ReadFile(path)
		if err != nil {
			lastErr = err.Error()
			e.reloadFailed(path, fmt.Errorf("read policy: %w", err), onReload)
			continue
		}
		if hashText(b) == e.cur.Load().Hash {
			lastErr = ""
			continue
		}
		p, err := Parse(path, b)
		if err != nil {
			lastErr = err.Error()
			e.reloadFailed(path, err, onReload)
			continue
		}
		lastErr = ""
		e.Set(p)
		e.reloads.Inc()
		e.log.Info("policy reloaded", "file", path, "hash", p.Hash, "rules", len(p.rules), "grants", len(p.grants))
		if onReload != nil {
			onReload(nil)
		}
	}
}

func (e *Engine) reloadFailed(path string, err error, onReload func(error)) {
	e.reloadErrors.Inc()
	e.log.Error("policy reload refused; the previous policy stays in force", "file", path, "err", err)
	if onReload != nil {
		onReload(err)
	}
}

// Access decides whether the session's identity may use its target at all and at which level.
func (e *Engine) Access(ctx context.Context, s *gate.Session) gate.Decision {
	pol := e.cur.Load()
	ec := e.pool.Get().(*evalCtx)
	in := gate.Input{Session: s}
	ec.reset(&in, pol)
	d, _ := pol.access(ec, e)
	e.release(ec)
	return d
}

// Decide decides one statement.
func (e *Engine) Decide(ctx context.Context, in gate.Input) gate.Decision {
	pol := e.cur.Load()
	ec := e.pool.Get().(*evalCtx)
	ec.reset(&in, pol)
	d := pol.decide(ec, e, nil)
	e.release(ec)
	return d
}

// DecideReusable is Decide that also says whether the decision may be reused for a repeated
// statement of the session, and under which policy: reusable when no condition of the
// policy in force reads the time and none failed at run time (failures are counted per
// call). Engine implements gate.ReusablePolicy.
func (e *Engine) DecideReusable(ctx context.Context, in gate.Input) (gate.Decision, any, bool) {
	pol := e.cur.Load()
	ec := e.pool.Get().(*evalCtx)
	ec.reset(&in, pol)
	d := pol.decide(ec, e, nil)
	reusable := pol.reusable && !ec.failed
	e.release(ec)
	return d, pol, reusable
}

// Epoch returns the policy in force, which identifies the decisions it makes (a reload puts
// another in force), and whether its decisions may be reused at all.
func (e *Engine) Epoch() (any, bool) {
	pol := e.cur.Load()
	return pol, pol.reusable
}

// release returns ec to the pool without keeping the session or statement alive.
func (e *Engine) release(ec *evalCtx) {
	ec.sess, ec.id, ec.tg, ec.st, ec.sensitive, ec.timeVal, ec.pol = nil, nil, nil, nil, nil, nil, nil
	clear(ec.cache)
	e.pool.Put(ec)
}

// Decision stages, telling in an Explanation where the decision was made.
const (
	StageIdentity = "identity" // no identity or no grant
	StageLevel    = "level"    // the access level does not cover the statement
	StageRule     = "rule"     // a rule matched
	StageDefault  = "default"  // no rule matched; the policy's default applied
	StageUnknown  = "unknown"  // unknown statement refused below admin level
)

// Rule names the engine itself uses in decisions.
const (
	RuleNoGrant     = "no-grant"
	RuleAccessLevel = "access-level"
	RuleUnknown     = "unknown-statement"
	RuleDefault     = "default"
)

// Explanation tells how a decision came about, for `gatehouse policy test` and the console.
type Explanation struct {
	Decision gate.Decision
	// Stage is where the decision was made (StageIdentity, StageLevel, ...).
	Stage string
	// Grant names the grant that gave the access level.
	Grant string
	// Level is the access level in effect.
	Level string
	// Category is the statement category the access level was checked against (role changes
	// count as admin).
	Category string
	// Evaluated lists the rules evaluated, in order, up to the one that decided.
	Evaluated []RuleResult
	// Statement is the statement decided; Policy names the policy used.
	Statement *inspect.Statement
	Policy    string
}

// RuleResult is the outcome of one rule's condition.
type RuleResult struct {
	Name    string
	Line    int
	Matched bool
	// Error is set when the condition failed at run time.
	Error string
}

// Explain decides st for the session and says how; it does not record anything.
func (e *Engine) Explain(ctx context.Context, sess *gate.Session, st *inspect.Statement) Explanation {
	return e.ExplainInput(ctx, gate.Input{Session: sess, Statement: st, Via: gate.ViaQuery, Now: time.Now()})
}

// ExplainInput is Explain with every input a decision can see (sensitive classes, via, time).
func (e *Engine) ExplainInput(ctx context.Context, in gate.Input) Explanation {
	pol := e.cur.Load()
	ec := new(evalCtx)
	ec.reset(&in, pol)
	x := &Explanation{Statement: in.Statement, Policy: pol.Source}
	x.Decision = pol.decide(ec, e, x)
	return *x
}

// access finds the strongest grant the identity holds on the target.
func (pol *Policy) access(ec *evalCtx, e *Engine) (gate.Decision, string) {
	if ec.sess.Identity == nil || ec.id.Subject == "" {
		return gate.Decision{Action: gate.Deny, Rule: RuleNoGrant, Message: "the session has no authenticated identity"}, ""
	}
	if ec.sess.Target == nil {
		return gate.Decision{Action: gate.Deny, Rule: RuleNoGrant, Message: "the session has no target database"}, ""
	}
	var best *grant
	for _, g := range pol.grants {
		if best != nil && levelRank(g.level) <= levelRank(best.level) {
			continue
		}
		if g.matchTarget(ec) && g.who.match(ec, e, g.name) {
			best = g
		}
	}
	if best == nil {
		return gate.Decision{Action: gate.Deny, Rule: RuleNoGrant, Message: fmt.Sprintf("no grant in the policy lets %s use target %q", ec.id.Subject, ec.tg.Name)}, ""
	}
	return gate.Decision{Action: gate.Allow, Rule: best.name, Level: best.level}, best.name
}

// decide runs the whole decision for one statement; x, when non-nil, collects the explanation.
func (pol *Policy) decide(ec *evalCtx, e *Engine, x *Explanation) gate.Decision {
	acc, grantName := pol.access(ec, e)
	if acc.Action != gate.Allow {
		if x != nil {
			x.Stage = StageIdentity
		}
		return acc
	}
	level := acc.Level
	// A session never gets more than it was opened with (its upstream role was chosen for
	// that level), and a reload that lowers or removes a grant applies at once.
	if sl := ec.sess.AccessLevel; sl != "" && levelRank(sl) < levelRank(level) {
		level = sl
	}
	ec.level = level
	cat := effectiveCategory(ec.st)
	if x != nil {
		x.Grant, x.Level, x.Category = grantName, level, string(cat)
	}
	decided := pol.firstMatch(ec, e, x)
	if cat != inspect.Unknown && !levelAllows(level, cat) && (decided == nil || !decided.coversCategory(cat)) {
		// Beyond the level, only an allow rule that covers the category lets a statement
		// through, and only as the first rule to match: deny and hold rules before it win.
		if x != nil {
			x.Stage, x.Evaluated = StageLevel, nil
		}
		return gate.Decision{Action: gate.Deny, Rule: RuleAccessLevel, Level: level,
			Message: fmt.Sprintf("your %s access to target %q does not cover %s statements (%s); it needs %s access", level, ec.tg.Name, cat, ec.st.Kind, levelFor(cat))}
	}
	if cat == inspect.Unknown && levelRank(level) < levelRank(LevelAdmin) &&
		(decided == nil || (decided.action == gate.Allow && !decided.coversCategory(inspect.Unknown))) {
		if x != nil {
			x.Stage = StageUnknown
		}
		return gate.Decision{Action: gate.Deny, Rule: RuleUnknown, Level: level,
			Message: fmt.Sprintf("Gatehouse cannot tell what this statement does (%s), so it is refused below admin access unless a policy rule allows it", ec.st.Kind)}
	}
	if decided == nil {
		if x != nil {
			x.Stage = StageDefault
		}
		if pol.defaults.action != gate.Allow {
			return gate.Decision{Action: pol.defaults.action, Rule: RuleDefault, Message: pol.defaults.message, Level: level}
		}
		return gate.Decision{Action: gate.Allow, Rule: RuleDefault, Level: level, MaxRows: pol.defaults.maxRows,
			MaxAffectedRows: pol.defaults.maxAffected, MaskProfile: pol.maskFor(ec, e)}
	}
	if x != nil {
		x.Stage = StageRule
	}
	d := gate.Decision{Action: decided.action, Rule: decided.name, Message: decided.message, Level: level}
	if d.Action == gate.Allow {
		d.MaxRows = decided.maxRows
		if d.MaxRows == 0 {
			d.MaxRows = pol.defaults.maxRows
		}
		d.MaxAffectedRows = decided.maxAffected
		if d.MaxAffectedRows == 0 {
			d.MaxAffectedRows = pol.defaults.maxAffected
		}
		d.MaskProfile = decided.mask
		if d.MaskProfile == "" {
			d.MaskProfile = pol.maskFor(ec, e)
		}
		if d.MaskProfile == ProfileDefault {
			d.MaskProfile = ""
		}
	}
	return d
}

// firstMatch returns the first rule whose condition holds (nil: none); x, when non-nil,
// collects the rules evaluated. A condition that fails at run time matches deny and hold
// rules, never allow rules: it fails closed.
func (pol *Policy) firstMatch(ec *evalCtx, e *Engine, x *Explanation) *rule {
	for _, r := range pol.rules {
		matched, err := evalCond(r.when, ec)
		if err != nil {
			ec.failed = true
			e.evalFailed(pol, r.name, r.line, err)
			matched = r.action != gate.Allow
		}
		if x != nil {
			rr := RuleResult{Name: r.name, Line: r.line, Matched: matched}
			if err != nil {
				rr.Error = err.Error()
			}
			x.Evaluated = append(x.Evaluated, rr)
		}
		if matched {
			return r
		}
	}
	return nil
}

// evalFailed counts a condition that failed at run time and logs it once per condition and
// loaded policy, so a condition that fails for every statement of some identity (a claim
// it lacks, say) cannot flood the log.
func (e *Engine) evalFailed(pol *Policy, name string, line int, err error) {
	e.evalErrors.Inc()
	if pol == nil {
		return
	}
	if _, seen := pol.failedOnce.LoadOrStore(name, true); seen {
		return
	}
	e.log.Warn("policy condition failed at run time (deny and approval rules then apply, allow rules and grants do not); logged once per condition and policy load",
		"policy", pol.Source, "condition", name, "line", line, "err", err)
}

// maskFor returns the masking profile of the identity: the first raw_access entry naming it,
// else the policy's default. The built-in default profile is "" on the wire.
func (pol *Policy) maskFor(ec *evalCtx, e *Engine) string {
	for _, a := range pol.masking.access {
		if a.who.match(ec, e, a.name) {
			return wireProfile(a.profile)
		}
	}
	return wireProfile(pol.masking.defaultProfile)
}

func wireProfile(p string) string {
	if p == ProfileDefault {
		return ""
	}
	return p
}

// evalCond evaluates a compiled condition against ec.
func evalCond(prg cel.Program, ec *evalCtx) (bool, error) {
	if prg == nil {
		return false, errors.New("condition not compiled")
	}
	v, _, err := prg.Eval(ec)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	if !ok {
		return false, fmt.Errorf("condition gave %v (%s), not true or false", v, v.Type())
	}
	return bool(b), nil
}

func (s *selector) match(ec *evalCtx, e *Engine, name string) bool {
	if len(s.subjects) > 0 && !anyGlob(s.subjects, ec.id.Subject, true) {
		return false
	}
	if len(s.kinds) > 0 && !contains(s.kinds, string(ec.id.Kind)) {
		return false
	}
	if len(s.groups) > 0 {
		found := false
		for _, g := range ec.id.Groups {
			if contains(s.groups, g) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if s.when != nil {
		ok, err := evalCond(s.when, ec)
		if err != nil {
			ec.failed = true
			e.evalFailed(ec.pol, name, 0, err)
			return false
		}
		return ok
	}
	return true
}

func (g *grant) matchTarget(ec *evalCtx) bool {
	if len(g.targets) > 0 && !anyGlob(g.targets, ec.tg.Name, false) {
		return false
	}
	if len(g.environments) > 0 {
		found := false
		for _, env := range g.environments {
			if strings.EqualFold(env, ec.tg.Environment) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for k, v := range g.labels {
		if ec.tg.Labels[k] != v {
			return false
		}
	}
	if g.production != nil && *g.production != IsProduction(ec.tg.Environment) {
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s || v == "*" {
			return true
		}
	}
	return false
}

func anyGlob(globs []string, s string, fold bool) bool {
	for _, g := range globs {
		if glob(g, s, fold) {
			return true
		}
	}
	return false
}

// glob matches s against a pattern where * is any run of characters and ? one character.
func glob(pattern, s string, fold bool) bool {
	if fold {
		pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	}
	// Iterative matcher with single backtracking point: linear for typical patterns.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// effectiveCategory is the category the access level is checked against: statements that
// change the session's role count as admin, whatever the inspector filed them under, because
// they would escape the least-privileged upstream role.
func effectiveCategory(st *inspect.Statement) inspect.Category {
	if ChangesRole(st) {
		return inspect.Admin
	}
	if st.Category == "" {
		return inspect.Unknown
	}
	return st.Category
}

// ChangesRole reports whether a statement changes the role the upstream session runs as:
// SET ROLE, SET SESSION AUTHORIZATION and their RESET forms (including set_config('role', ...),
// which the inspector reports as SET ROLE), DISCARD ALL (it runs SET SESSION AUTHORIZATION
// DEFAULT), and set_config() whose setting name cannot be read from the text.
func ChangesRole(st *inspect.Statement) bool {
	switch strings.ToUpper(st.Kind) {
	case "SET ROLE", "RESET ROLE", "SET SESSION AUTHORIZATION", "RESET SESSION AUTHORIZATION":
		return true
	case "DISCARD":
		// DISCARD ALL | PLANS | SEQUENCES | TEMP: only ALL touches the role. A comment
		// saying "all" errs on the safe side.
		return strings.Contains(strings.ToUpper(st.Text), "ALL") || st.Text == ""
	}
	switch st.Setting {
	case "role", "session_authorization":
		return true
	}
	for _, f := range st.Functions {
		if j := strings.LastIndexByte(f, '.'); j >= 0 {
			f = f[j+1:]
		}
		if f == "set_config" && (st.Setting == "" || st.Category == inspect.Unknown) {
			return true
		}
	}
	return false
}

// levelAllows says which categories each level covers. Transaction control and session
// settings are for everyone; unknown is handled by the caller.
func levelAllows(level string, cat inspect.Category) bool {
	switch cat {
	case inspect.Read, inspect.Transaction, inspect.SessionCat:
		return levelRank(level) >= 1
	case inspect.Write:
		return levelRank(level) >= 2
	default: // ddl, admin, unknown and anything new
		return levelRank(level) >= 3
	}
}

func levelFor(cat inspect.Category) string {
	switch cat {
	case inspect.Read, inspect.Transaction, inspect.SessionCat:
		return LevelRead
	case inspect.Write:
		return LevelWrite
	}
	return LevelAdmin
}
