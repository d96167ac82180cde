// Package gate is the one place where identity, inspection, policy, approval, masking and the
// ledger meet. Doors (wire protocols) hand it sessions and statement text and get back
// decisions; they never decide anything themselves, so a new protocol cannot weaken a rule
// and a new rule never touches a protocol.
package gate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/live"
)

// Session is one client connection after authentication. Doors fill it in; the gate, the
// policy and the ledger read it.
type Session struct {
	ID              string
	Identity        *identity.Identity
	Target          *config.Target
	Database        string
	ClientAddr      string
	ApplicationName string
	TLS             bool
	// Options are the client's startup parameters other than user/database (e.g. the
	// purpose a client declares with options=-c gatehouse.purpose=...).
	Options map[string]string
	// AccessLevel is the grant the identity has on the target (read, write, admin) and
	// UpstreamRole the database role the session runs as because of it.
	AccessLevel  string
	UpstreamRole string
	StartedAt    time.Time

	// prepared maps the names of SQL-level prepared statements (PREPARE p AS ...) to the
	// facts of what they run, so EXECUTE p is decided as the statement it executes.
	preparedMu sync.Mutex
	prepared   map[string]*inspect.Statement
	// ddlInTx is set by DDL and cleared by the end of a transaction: a COMMIT after DDL
	// invalidates the catalog again (see schemaChange).
	ddlInTx atomic.Bool

	// memo remembers the policy's reusable decisions on this session's statements.
	memo decisionMemo

	// inBlock is set by the door while the statements it checks certainly run inside an
	// open transaction block (see SetTransactionBlock); unsynced is set while intents of
	// the block are written but not yet fdatasync'd (client loop only, atomic for -race).
	inBlock  atomic.Bool
	unsynced atomic.Bool

	// live is the session's entry in the gate's live registry (nil when not attached).
	live *live.Entry
	// door names the door the session came through (set by Attach), for metrics.
	door string
	// observers are the session's statement-duration observers (metrics.go).
	observers atomic.Pointer[sessionObservers]
}

func (s *Session) preparedFacts(name string) *inspect.Statement {
	s.preparedMu.Lock()
	defer s.preparedMu.Unlock()
	return s.prepared[name]
}

func (s *Session) rememberPrepared(name string, st *inspect.Statement) {
	s.preparedMu.Lock()
	defer s.preparedMu.Unlock()
	if s.prepared == nil {
		s.prepared = make(map[string]*inspect.Statement)
	}
	s.prepared[name] = st
}

// SetTransactionBlock tells the gate whether the statements the door checks next run inside
// an open transaction block (PostgreSQL's ReadyForQuery status 'T', with nothing that could
// end the block forwarded since). Only then may the intent of a change be written without
// its fdatasync: the change cannot take effect before the block ends, and the gate syncs
// the block's intents before it lets anything that may end the block through. A door that
// cannot tell says nothing (false): every intent is then fdatasync'd before forwarding.
func (s *Session) SetTransactionBlock(in bool) { s.inBlock.Store(in) }

// NewSessionID returns a random identifier for a session.
func NewSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Action is what happens to a statement.
type Action string

// The outcomes of a decision.
const (
	Allow           Action = "allow"
	Deny            Action = "deny"
	RequireApproval Action = "require_approval"
)

// Decision is the policy's verdict on one statement (or on the whole session for access).
type Decision struct {
	Action Action
	// Rule names the rule that decided, shown to the client and kept in the ledger.
	Rule string
	// Message explains a deny or a hold, in words a user can act on.
	Message string
	// MaxRows ends a result after this many rows (0: no limit).
	MaxRows int64
	// MaxAffectedRows caps the rows one UPDATE, DELETE, MERGE or INSERT may change (0: no
	// limit). The door runs such a write so that it can still be rolled back once its row
	// count is known, and rolls it back when the count exceeds the cap. The gate keeps it
	// only on checks that hold such a write.
	MaxAffectedRows int64
	// MaskProfile names the masking profile applied to results ("" for the default,
	// "none" for raw values).
	MaskProfile string
	// ApprovalID links a held statement to its approval request.
	ApprovalID string
	// Level is the access level an Access decision grants: read, write or admin.
	Level string
	// SQLState is the SQLSTATE of a refusal that is not a policy's (a statement that does
	// not parse: SyntaxErrorState); empty means 42501. Position is the 1-based character
	// position in the statement text that the error points at (0: none).
	SQLState string
	Position int
}

// Via says how a statement reached the gate, for the ledger and for policies.
type Via string

// The ways a statement arrives.
const (
	ViaQuery    Via = "query"    // simple Query message
	ViaParse    Via = "parse"    // extended protocol Parse
	ViaExecute  Via = "execute"  // extended protocol Execute of a prepared statement
	ViaFunction Via = "function" // FunctionCall message
	ViaMCP      Via = "mcp"      // a tool call of the MCP door
)

// Inspector is what the gate needs from internal/inspect.
type Inspector interface {
	// Inspect returns the facts of every statement in sql (one for each statement of a
	// multi-statement string). Unparseable SQL yields a statement of Category Unknown.
	Inspect(sql string) []*inspect.Statement
}

// Input is everything a policy may look at for one statement.
type Input struct {
	Session   *Session
	Statement *inspect.Statement
	Via       Via
	Now       time.Time
	// SensitiveClasses are the classes of sensitive data (email, ssn, card, ...) held by the
	// tables the statement touches, from the classification catalog; empty when the catalog
	// knows of none or is not configured.
	SensitiveClasses []string
}

// Catalog is what the gate needs from internal/classify to tell policies which statements
// touch sensitive data.
type Catalog interface {
	// SensitiveColumns returns the sensitive columns of tables as "schema.table.column" →
	// class, for the ledger's record of what a statement touched.
	SensitiveColumns(ctx context.Context, target string, tables []string) map[string]string
	// Invalidate drops what is known of target, after DDL changed its schema. Like the
	// target of SensitiveColumns, it names a catalog: the target's name, or
	// "database@target" for a session on another database of the target
	// (classify.TargetKey).
	Invalidate(target string)
	// Snapshot returns the classified columns of a target (a TargetKey: "target" or
	// "database@target"), for the lineage of values a statement stores (launder.go).
	Snapshot(ctx context.Context, target string) (*classify.Snapshot, error)
	// NotNull reports whether every one of columns of table (as the parser names it) is
	// NOT NULL in target. Unknown tables or columns are not.
	NotNull(ctx context.Context, target, table string, columns []string) bool
	// FunctionEffects says what calling a function does in target, from the target's own
	// catalog (nil when it cannot tell), so catalog queries of psql, JDBC and GUI tools
	// that call built-ins the inspector's list does not name are reads (see
	// inspect.Statement.WithFunctionEffects).
	FunctionEffects(ctx context.Context, target string) inspect.FunctionEffect
}

// Policy is what the gate needs from internal/policy.
type Policy interface {
	// Access decides whether the identity may open a session on the target at all, and at
	// which level (read, write, admin), returned in Decision.Level.
	Access(ctx context.Context, s *Session) Decision
	// Decide decides one statement.
	Decide(ctx context.Context, in Input) Decision
}

// Recorder is what the gate needs from internal/ledger: a durable, ordered record.
type Recorder interface {
	// Record appends an event and returns once it is durable. An error means the event was
	// not recorded; the gate then refuses the statement (fail closed).
	Record(ctx context.Context, ev *ledger.Event) error
	// Submit appends an event without waiting; the Ack says when it is durable. Acks
	// complete in submission order, so a door may keep relaying and hold back only the
	// client-bound bytes that follow a record whose Ack has not completed.
	Submit(ctx context.Context, ev *ledger.Event) *ledger.Ack
	// Healthy is nil while the ledger writes; otherwise nothing runs, not even a read.
	Healthy() error
}

var _ Recorder = (*ledger.Ledger)(nil)

// Gate runs the pipeline for every session of every door.
type Gate struct {
	Inspector Inspector
	Policy    Policy
	Recorder  Recorder
	Validator identity.Validator
	Masker    MaskPlanner
	Catalog   Catalog
	// Approvals, when set, files requests for statements policy holds for approval and lets
	// an approved one run once (see approval.go).
	Approvals Approvals
	Log       *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// Live, when set, lists the sessions open now (doors attach theirs), for the console
	// and the API, which may end them.
	Live *live.Registry
	// Metrics, when set, observe every statement's latency and masking.
	Metrics *Metrics

	launder  launderState
	deferred deferredEvents
}

// Grant is the access policy gives an identity on a target (Decision.Level), without opening
// or recording a session: for a door that lists what its caller may use.
func (g *Gate) Grant(ctx context.Context, s *Session) Decision {
	if g.Policy == nil {
		return Decision{Action: Allow, Rule: "default", Level: "admin"}
	}
	return g.Policy.Access(ctx, s)
}

// Columns is the classification catalog of a session's database (nil when there is none or
// it cannot be read now): what a door describes to its caller.
func (g *Gate) Columns(ctx context.Context, s *Session) *classify.Snapshot {
	if g.Catalog == nil || s == nil || s.Target == nil {
		return nil
	}
	snap, _ := g.Catalog.Snapshot(ctx, catalogKey(s))
	return snap
}

// SeesMasked reports whether a statement decided with masking profile profile shows values
// of class masked.
func (g *Gate) SeesMasked(profile, class string) bool {
	return profile != "none" && g.Masker != nil && g.Masker.MasksClass(profile, class)
}

// Complete reports the collaborators a production gate must have and lacks. Tests may run a
// partial gate; a server refuses to start with one, so no control is silently off.
func (g *Gate) Complete() error {
	var missing []string
	for _, part := range []struct {
		name string
		set  bool
	}{
		{"inspector", g.Inspector != nil}, {"policy", g.Policy != nil}, {"ledger", g.Recorder != nil},
		{"identity validator", g.Validator != nil}, {"masking", g.Masker != nil},
		{"classification catalog", g.Catalog != nil}, {"approvals", g.Approvals != nil},
	} {
		if !part.set {
			missing = append(missing, part.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("gate: %s not configured; refusing to start with controls off", strings.Join(missing, ", "))
	}
	return nil
}

// Check is the gate's answer for one statement text: its facts and the decision. The door
// keeps it until the statement completes and hands it back to Done.
type Check struct {
	Statements []*inspect.Statement
	Decision   Decision
	Via        Via
	Started    time.Time
	// Denied is the statement that caused a deny or hold, for the error message.
	Denied *inspect.Statement
	// LedgerDown is set when the statement was refused because the ledger could not record.
	LedgerDown bool

	// sensitive caches, per statement, the catalog's sensitive columns of its tables, so the
	// decision, the intent and the completion record ask the catalog once.
	sensitive []sensitiveCols
	// oneSensitive backs sensitive for a check of one statement, the common case, so
	// asking the catalog allocates no slice.
	oneSensitive [1]sensitiveCols
	// approvals found for held statements, used when the whole check is allowed.
	approvals []heldApproval
	// only holds the one-statement checks Only hands out, allocated together on first use:
	// one allocation for a string of N statements instead of one per result.
	only []Check
}

// sensitiveColumns returns the sensitive columns of statement i's tables ("schema.table.
// column" → class), asking the catalog at most once per check.
func (g *Gate) sensitiveColumns(ctx context.Context, s *Session, c *Check, i int) map[string]string {
	st := c.Statements[i]
	if g.Catalog == nil || s == nil || s.Target == nil || (len(st.TablesRead) == 0 && len(st.TablesWritten) == 0) {
		return nil
	}
	if c.sensitive == nil {
		if len(c.Statements) == 1 {
			c.sensitive = c.oneSensitive[:]
		} else {
			c.sensitive = make([]sensitiveCols, len(c.Statements))
		}
	}
	if sc := &c.sensitive[i]; !sc.asked {
		sc.cols, sc.asked = g.Catalog.SensitiveColumns(ctx, catalogKey(s), tablesOf(st)), true
	}
	return c.sensitive[i].cols
}

// sensitiveCols is the catalog's answer for one statement of a check, once asked.
type sensitiveCols struct {
	cols  map[string]string
	asked bool
}

// classesOf is the sorted set of classes among sensitive columns.
func classesOf(cols map[string]string) []string {
	out := make([]string, 0, len(cols))
	for _, class := range cols {
		if !slices.Contains(out, class) {
			out = append(out, class)
		}
	}
	slices.Sort(out)
	return out
}

// Allowed reports whether the statement may be forwarded.
func (c *Check) Allowed() bool { return c.Decision.Action == Allow }

// Only returns the check narrowed to its statement i, with the same decision, for work that
// concerns one statement of a multi-statement string (planning the masking of that
// statement's result): looking at all N statements for each of N results would make a
// string of N statements cost O(N²). It returns c itself when c holds one statement or i is
// out of range (the door lost count): then every statement is considered, as before. The
// narrowed checks of one string share one allocation; each call fills statement i's afresh.
func (c *Check) Only(i int) *Check {
	if len(c.Statements) <= 1 || i < 0 || i >= len(c.Statements) {
		return c
	}
	if c.only == nil {
		c.only = make([]Check, len(c.Statements))
	}
	one := &c.only[i]
	*one = Check{Statements: c.Statements[i : i+1 : i+1], Decision: c.Decision, Via: c.Via, Started: c.Started, Denied: c.Denied, LedgerDown: c.LedgerDown}
	if c.sensitive != nil {
		one.sensitive = c.sensitive[i : i+1 : i+1]
	}
	return one
}

// OpenSession decides whether an authenticated identity may use the target and records the
// session start. A non-nil error or a non-Allow decision means the door must refuse.
func (g *Gate) OpenSession(ctx context.Context, s *Session) (Decision, error) {
	if s.StartedAt.IsZero() {
		s.StartedAt = g.now()
	}
	d := Decision{Action: Allow, Rule: "default", Level: "admin"}
	if g.Policy != nil {
		d = g.Policy.Access(ctx, s)
	}
	s.AccessLevel = d.Level
	if d.Action == Allow && s.Target != nil {
		s.UpstreamRole = leastRole(s.Target.Roles, d.Level)
	}
	ev := g.sessionEvent(ledger.EventSessionStart, s)
	ev.Decision = string(d.Action)
	ev.Rule = d.Rule
	if err := g.record(ctx, ev); err != nil {
		return Decision{Action: Deny, Rule: "ledger", Message: "the audit ledger cannot record this session; try again shortly"}, err
	}
	return d, nil
}

// Attach lists an open session in the live registry until CloseSession; end is how the door
// ends it when someone with the right asks (by names them), in its protocol's words.
func (g *Gate) Attach(s *Session, door string, end func(by string)) {
	if s == nil {
		return
	}
	s.door = door
	if g.Live == nil {
		return
	}
	ls := live.Session{ID: s.ID, Door: door, ClientAddr: s.ClientAddr, Application: s.ApplicationName,
		Database: s.Database, Since: s.StartedAt}
	if s.Identity != nil {
		ls.Subject, ls.Kind, ls.Groups = s.Identity.Subject, string(s.Identity.Kind), s.Identity.Groups
	}
	if s.Target != nil {
		ls.Target, ls.Environment = s.Target.Name, s.Target.Environment
	}
	s.live = g.Live.Add(ls, end)
}

// CloseSession records the end of a session.
func (g *Gate) CloseSession(ctx context.Context, s *Session, reason string) {
	s.live.Remove()
	if g.Masker != nil {
		g.Masker.Forget(s.ID)
	}
	ev := g.sessionEvent(ledger.EventSessionEnd, s)
	ev.Duration = g.now().Sub(s.StartedAt)
	ev.Message = reason
	g.recordOrDefer(ctx, ev, "session end")
}

// LoginFailed records a failed authentication. Cause is for the ledger and logs only; the
// client sees the same message whatever it was.
// SessionRefused records a connection that authenticated but was refused before its session
// began for a reason of the door's own (an unknown target, a startup parameter Gatehouse does
// not pass), as a session.start event decided "deny" by rule, so every refused connection is
// on the ledger with its identity. A ledger failure is logged: the client is refused anyway.
func (g *Gate) SessionRefused(ctx context.Context, s *Session, rule, cause string) {
	if s.StartedAt.IsZero() {
		s.StartedAt = g.now()
	}
	ev := g.sessionEvent(ledger.EventSessionStart, s)
	ev.Decision = string(Deny)
	ev.Rule = rule
	ev.Message = cause
	g.recordOrDefer(ctx, ev, "refused session")
}

// LoginFailed records a failed login (user is the name the client gave, cause why it failed).
func (g *Gate) LoginFailed(ctx context.Context, s *Session, user, cause string) {
	ev := g.sessionEvent(ledger.EventLoginFailed, s)
	ev.Subject = user
	ev.Message = cause
	g.recordOrDefer(ctx, ev, "login failure")
}

// Check inspects sql and decides it. Every statement that reaches a door — each statement
// of a simple Query, every Parse, every Execute, every COPY — passes through here before it
// is forwarded. When any statement of a multi-statement string is refused, the whole string
// is refused, so nothing of it runs.
func (g *Gate) Check(ctx context.Context, s *Session, sql string, via Via) *Check {
	c := &Check{Via: via, Started: g.now(), Decision: Decision{Action: Allow, Rule: "default"}}
	if g.Inspector != nil {
		c.Statements = g.Inspector.Inspect(sql)
	} else {
		c.Statements = []*inspect.Statement{{Text: sql, Kind: "UNKNOWN", Category: inspect.Unknown, Redacted: "<not inspected>"}}
	}
	c.Statements = g.resolveExecute(s, c.Statements)
	if g.Recorder != nil {
		// While the ledger cannot write, nothing runs: not even a read, whose rows would
		// otherwise stream out before its record is known to be impossible.
		if err := g.Recorder.Healthy(); err != nil {
			c.Decision = ledgerDown
			c.LedgerDown = true
			return c
		}
	}
	if refuseUnparsed(c) || refuseNonStandardStrings(c) {
		return c
	}
	if g.Policy == nil {
		return c
	}
	var capped *inspect.Statement // the write whose affected-rows limit applies, and its rule
	var capRule string
	for i := range c.Statements {
		g.resolveFunctions(ctx, s, c, i)
		st := g.resolveNotNull(ctx, s, c, i)
		in := Input{Session: s, Statement: st, Via: via, Now: c.Started}
		if cols := g.sensitiveColumns(ctx, s, c, i); len(cols) > 0 {
			in.SensitiveClasses = classesOf(cols)
		}
		d := g.decide(ctx, s, in)
		if d.Action == RequireApproval {
			d = g.approve(ctx, s, c, st, d)
		}
		if d.Action == Allow {
			// Masked sessions may not copy masked values where masking no longer sees them.
			if ld, refused := g.launders(ctx, s, st, d.MaskProfile, in.SensitiveClasses); refused {
				d = ld
			}
		}
		if d.Action != Allow {
			c.Decision = d
			c.Denied = st
			return c
		}
		// The strictest limits of the statements apply to the whole string.
		if d.MaxRows > 0 && (c.Decision.MaxRows == 0 || d.MaxRows < c.Decision.MaxRows) {
			c.Decision.MaxRows = d.MaxRows
		}
		if d.MaxAffectedRows > 0 && CapsWrites(st) && (c.Decision.MaxAffectedRows == 0 || d.MaxAffectedRows < c.Decision.MaxAffectedRows) {
			c.Decision.MaxAffectedRows = d.MaxAffectedRows
			capped, capRule = st, d.Rule
		}
		// Statements that disagree on the masking profile get the default one, which masks
		// everything detected: one statement's "mask: none" must not unmask its neighbours.
		if i == 0 {
			c.Decision.MaskProfile = d.MaskProfile
		} else if d.MaskProfile != c.Decision.MaskProfile {
			c.Decision.MaskProfile = ""
		}
		c.Decision.Rule = d.Rule
	}
	if capped != nil && len(c.Statements) > 1 {
		// A door caps a write by the row count of its own completion and rolls back what it
		// changed; in a string of several statements the counts and the rollback would
		// belong to the whole string, so a capped write must come on its own.
		c.Decision = Decision{Action: Deny, Rule: capRule, Level: c.Decision.Level,
			Message: fmt.Sprintf("this write is limited to %d affected rows, which Gatehouse can only enforce for a statement sent on its own; send it as a separate query", c.Decision.MaxAffectedRows)}
		c.Denied = capped
		return c
	}
	if c.Allowed() && len(c.approvals) > 0 {
		g.useApprovals(ctx, c, via)
	}
	if c.Allowed() {
		for _, st := range c.Statements {
			if st.PreparedName != "" && st.Kind != "EXECUTE" && st.Kind != "DEALLOCATE" {
				s.rememberPrepared(st.PreparedName, st)
			}
		}
		// Maskers that follow statements across messages (a DECLARE for its FETCHes) see
		// every allowed statement before it is forwarded.
		if g.Masker != nil {
			g.Masker.Observe(ctx, s, c)
		}
	}
	if c.Allowed() && via != ViaParse {
		if err := g.recordIntent(ctx, s, c); err != nil {
			g.log().Error("ledger refused a statement intent; refusing the statement", "session", s.ID, "err", err)
			c.Decision = ledgerDown
			c.LedgerDown = true
		}
	}
	return c
}

// blockRecorder is a Recorder that can write a record without its fdatasync and sync later
// (ledger.Ledger); with another Recorder every intent is recorded with Record.
type blockRecorder interface {
	RecordWritten(ctx context.Context, ev *ledger.Event) error
	Sync(ctx context.Context) error
}

// recordIntent puts an allowed statement's intent on record before it is forwarded (a Parse
// only prepares; its Execute is the statement that runs and the one whose intent is
// recorded), so a crash between forwarding and completion still leaves its trace. No
// record, no forwarding: the ledger fails closed.
//
// The durable-intent rule is "no change takes effect without a durable record of its
// intent". Inside a transaction block a change takes effect only when the block commits (if
// Gatehouse dies first, the upstream connection drops and PostgreSQL rolls it back), so
// there an intent is only written (write(2): a kill -9 of Gatehouse cannot lose it) before
// forwarding, and the block's intents are fdatasync'd together before whatever may end the
// block is forwarded: one sync per transaction instead of one per statement. Statements
// with effects that outlive a rollback (nextval, advisory locks, dblink and other
// functions the inspector does not vouch for as reads, admin statements, COPY to or from
// the server) and every statement outside a block keep forward-after-fsync.
func (g *Gate) recordIntent(ctx context.Context, s *Session, c *Check) error {
	br, canDefer := g.Recorder.(blockRecorder)
	deferred := canDefer && s != nil && s.inBlock.Load() && c.staysInBlock()
	if c.mayChange() {
		ev := g.statementEvent(ctx, EventStatementIntent, s, c)
		if deferred {
			if err := br.RecordWritten(ctx, ev); err != nil {
				return fmt.Errorf("record %s event: %w", ev.Type, err)
			}
			s.unsynced.Store(true)
			return nil
		}
		// A synced record covers everything written before it.
		if err := g.record(ctx, ev); err != nil {
			return err
		}
		if s != nil {
			s.unsynced.Store(false)
		}
		return nil
	}
	if canDefer && !deferred && s != nil && s.unsynced.Load() {
		// This may end the block (COMMIT, PREPARE TRANSACTION, ...) or run outside it: the
		// block's written intents become durable first.
		if err := br.Sync(ctx); err != nil {
			return fmt.Errorf("sync the transaction's intents: %w", err)
		}
		s.unsynced.Store(false)
	}
	return nil
}

// staysInBlock reports whether every statement of c runs inside an open transaction block
// without ending it, and changes nothing that a rollback of the block would not undo.
func (c *Check) staysInBlock() bool {
	for _, st := range c.Statements {
		switch st.Category {
		case inspect.Read, inspect.SessionCat:
		case inspect.Write, inspect.DDL:
			if st.Privileged || st.Program || st.ServerFile {
				return false
			}
			for _, f := range st.Functions {
				if !inspect.VouchedRead(f) {
					return false
				}
			}
		case inspect.Transaction:
			switch st.Kind {
			case "BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SET CONSTRAINTS":
			default:
				return false // COMMIT (AND CHAIN), ROLLBACK, PREPARE TRANSACTION, ...
			}
		default:
			return false
		}
	}
	return true
}

// EndsBlock reports whether forwarding c may end the session's transaction block (COMMIT,
// ROLLBACK, PREPARE TRANSACTION, or a statement the gate cannot vouch for): after it, a door
// no longer knows that the session is inside a block until the server says so again.
func (c *Check) EndsBlock() bool {
	if !c.Allowed() {
		return false // what is forwarded in its place fails, and a failure ends no block
	}
	for _, st := range c.Statements {
		switch st.Category {
		case inspect.Transaction:
			switch st.Kind {
			case "BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SET CONSTRAINTS":
			default:
				return true
			}
		case inspect.Unknown, inspect.Admin:
			return true // CALL of a procedure that commits, text the parser could not read
		}
	}
	return false
}

// resolveExecute replaces EXECUTE p by the facts of the statement p prepares, keeping the
// EXECUTE's own text for the record. The inspector's slices are shared through its cache, so
// a changed list is a copy. An EXECUTE of a name this session never prepared through the gate
// stays unknown, and policies fail closed on it.
func (g *Gate) resolveExecute(s *Session, sts []*inspect.Statement) []*inspect.Statement {
	var out []*inspect.Statement
	for i, st := range sts {
		if st.Kind != "EXECUTE" || st.PreparedName == "" || s == nil {
			continue
		}
		p := s.preparedFacts(st.PreparedName)
		if p == nil {
			continue
		}
		if out == nil {
			out = append([]*inspect.Statement(nil), sts...)
		}
		// The facts and the text (for result lineage) are the PREPARE's; the record keeps the
		// EXECUTE's own redacted text and fingerprint.
		resolved := *p
		resolved.Redacted, resolved.Fingerprint = st.Redacted, st.Fingerprint
		resolved.PreparedName = ""
		out[i] = &resolved
	}
	if out == nil {
		return sts
	}
	return out
}

// CapsWrites reports whether st is a write whose affected rows an affected-rows limit
// (Decision.MaxAffectedRows) counts: UPDATE, DELETE, MERGE and INSERT, including a read
// whose CTE writes (the inspector names those by the write) and the EXECUTE of a prepared
// write, but not the PREPARE of one, which changes nothing (its EXECUTE is capped).
func CapsWrites(st *inspect.Statement) bool {
	if st.PreparedName != "" {
		return false
	}
	switch st.Kind {
	case "UPDATE", "DELETE", "MERGE", "INSERT":
		return true
	}
	return false
}

// ledgerDown is the decision while the ledger cannot record.
var ledgerDown = Decision{Action: Deny, Rule: "ledger-unavailable", Message: "the audit ledger cannot record right now, so statements are refused until it recovers"}

// mayChange reports whether any statement can change data or schema (anything but reads,
// transaction control and session settings), so its intent must be recorded first.
func (c *Check) mayChange() bool {
	for _, st := range c.Statements {
		switch st.Category {
		case inspect.Read, inspect.Transaction, inspect.SessionCat:
		default:
			return true
		}
	}
	return false
}

func tablesOf(st *inspect.Statement) []string {
	if len(st.TablesWritten) == 0 {
		return st.TablesRead
	}
	if len(st.TablesRead) == 0 {
		return st.TablesWritten
	}
	return append(append(make([]string, 0, len(st.TablesRead)+len(st.TablesWritten)), st.TablesRead...), st.TablesWritten...)
}

// Outcome is what happened to a statement after the door forwarded it (or refused it).
type Outcome struct {
	Rows     int64
	Bytes    int64
	SQLState string
	Error    string
	Masked   int64
}

// Done is the recording point: it writes the statement's event and returns once it is
// durable. Doors call it before they release the statement's completion to the client; an
// error means the ledger could not record, and the door must fail the statement.
func (g *Gate) Done(ctx context.Context, s *Session, c *Check, o Outcome) error {
	return g.Finish(ctx, s, c, o).Wait(ctx)
}

// Finish is Done without the wait: it submits the statement's event and returns its Ack. A
// door that pipelines keeps relaying and releases the statement's completion (and anything
// after it) to the client only once the Ack is answered without error.
func (g *Gate) Finish(ctx context.Context, s *Session, c *Check, o Outcome) *ledger.Ack {
	ev := g.statementEvent(ctx, ledger.EventStatement, s, c)
	ev.Duration = ev.Time.Sub(c.Started) // the event's time is the completion's: one clock read
	ev.Rows, ev.Bytes, ev.SQLState, ev.ValuesMasked = o.Rows, o.Bytes, o.SQLState, o.Masked
	ev.Message = recordedMessage(o.SQLState, o.Error, c.Statements)
	if c.Decision.SQLState == SyntaxErrorState && c.Denied != nil {
		// The client saw the parser's own words, which may quote its text: the record keeps
		// only the message and position.
		ev.Message = c.Denied.ParseError
	}
	if s != nil {
		g.Metrics.statement(s, c.Decision.Action, ev.Duration, o.Masked)
		if s.live != nil {
			s.live.Count(liveStatement(ev))
		}
	}
	if g.Catalog != nil && s.Target != nil && o.SQLState == "" && c.Allowed() && s.schemaChange(c) {
		g.Catalog.Invalidate(catalogKey(s))
	}
	return g.submit(ctx, ev)
}

// catalogKey names the catalog a session's statements are classified and masked with: the
// target's, or "database@target" when the session reached another database of the target.
func catalogKey(s *Session) string { return classify.TargetKey(s.Target, s.Database) }

// schemaChange reports whether the completed statements of c may have changed what the
// catalog knows of the session's database: DDL (DO blocks included), and the COMMIT of a
// transaction that ran DDL (the rescan that followed the DDL itself could not see the
// uncommitted tables).
func (s *Session) schemaChange(c *Check) bool {
	changed := false
	for _, st := range c.Statements {
		switch {
		case st.Category == inspect.DDL || st.Kind == "DO" || st.Kind == "IMPORT FOREIGN SCHEMA":
			// A DO block is how migrations wrap conditional DDL (IF NOT EXISTS ...).
			s.ddlInTx.Store(true)
			changed = true
		case st.Kind == "COMMIT" || st.Kind == "COMMIT PREPARED":
			changed = s.ddlInTx.Swap(false) || changed
		case st.Kind == "ROLLBACK":
			s.ddlInTx.Store(false)
		}
	}
	return changed
}

// statementRecord is a statement event and the statement list of a one-statement check,
// allocated together: one allocation per record instead of two.
type statementRecord struct {
	ev  ledger.Event
	one [1]ledger.Statement
}

func (g *Gate) statementEvent(ctx context.Context, t ledger.EventType, s *Session, c *Check) *ledger.Event {
	var ev *ledger.Event
	if len(c.Statements) == 1 {
		rec := &statementRecord{}
		ev = &rec.ev
		ev.Statements = rec.one[:]
	} else {
		ev = &ledger.Event{Statements: make([]ledger.Statement, len(c.Statements))}
	}
	g.fillSession(ev, t, s)
	ev.Via = string(c.Via)
	ev.Decision = string(c.Decision.Action)
	ev.Rule = c.Decision.Rule
	ev.ApprovalID = c.Decision.ApprovalID
	for i, st := range c.Statements {
		ls := ledger.Statement{
			Kind: st.Kind, Category: string(st.Category), Redacted: st.Redacted, Fingerprint: st.Fingerprint,
			TablesRead: st.TablesRead, TablesWritten: st.TablesWritten,
		}
		ls.Sensitive = touched(g.sensitiveColumns(ctx, s, c, i), st.Columns)
		if p, tp := sqlComment(st.Text); p != "" || tp != "" {
			if ev.Purpose == "" {
				ev.Purpose = p
			}
			if ev.Traceparent == "" {
				ev.Traceparent = tp
			}
		}
		ev.Statements[i] = ls
	}
	return ev
}

// touched narrows the sensitive columns of a statement's tables to those it names; a
// statement that names none of them explicitly (SELECT *, whole-row references) touches all.
func touched(sensitive map[string]string, columns []string) map[string]string {
	if len(sensitive) == 0 || len(columns) == 0 {
		return sensitive
	}
	if slices.Contains(columns, "*") {
		return sensitive
	}
	// A statement names few columns and a table holds few sensitive ones: a scan of the
	// list beats building a set for every statement.
	var out map[string]string
	for key, class := range sensitive {
		col := key
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			col = key[i+1:]
		}
		if slices.Contains(columns, col) {
			if out == nil {
				out = make(map[string]string, len(sensitive))
			}
			out[key] = class
		}
	}
	return out
}

// liveStatement is a finished statement's line in its session's live view.
func liveStatement(ev *ledger.Event) live.Statement {
	st := live.Statement{Time: ev.Time, Decision: ev.Decision, Rule: ev.Rule, Rows: ev.Rows, Duration: ev.Duration, SQLState: ev.SQLState}
	switch len(ev.Statements) {
	case 0:
	case 1:
		st.Text = ev.Statements[0].Redacted
	default:
		texts := make([]string, len(ev.Statements))
		for i := range ev.Statements {
			texts[i] = ev.Statements[i].Redacted
		}
		st.Text = strings.Join(texts, "; ")
	}
	return st
}

// StillValid is called periodically by doors for each live session, so a revoked token ends
// its sessions within seconds.
func (g *Gate) StillValid(ctx context.Context, s *Session) error {
	if g.Validator == nil {
		return nil
	}
	return g.Validator.StillValid(ctx, s.Identity)
}

// DenyMessage is the text a client sees for a refused statement.
func (c *Check) DenyMessage() string {
	d := c.Decision
	if d.SQLState == SyntaxErrorState {
		return d.Message
	}
	msg := d.Message
	if msg == "" {
		msg = "statement refused by policy"
	}
	if d.Action == RequireApproval {
		if d.ApprovalID != "" && !strings.Contains(msg, d.ApprovalID) {
			return fmt.Sprintf("gatehouse: rule %q requires approval: %s (approval request %s)", d.Rule, msg, d.ApprovalID)
		}
		return fmt.Sprintf("gatehouse: rule %q requires approval: %s", d.Rule, msg)
	}
	return fmt.Sprintf("gatehouse: denied by rule %q: %s", d.Rule, msg)
}

func (g *Gate) record(ctx context.Context, ev *ledger.Event) error {
	if g.Recorder == nil {
		return nil
	}
	if err := g.Recorder.Record(ctx, ev); err != nil {
		return fmt.Errorf("record %s event: %w", ev.Type, err)
	}
	return nil
}

// submit hands ev to the ledger without waiting (an answered Ack when there is no ledger).
func (g *Gate) submit(ctx context.Context, ev *ledger.Event) *ledger.Ack {
	if g.Recorder == nil {
		return ledger.AnsweredAck(nil)
	}
	return g.Recorder.Submit(ctx, ev)
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Gate) log() *slog.Logger {
	if g.Log != nil {
		return g.Log
	}
	return slog.Default()
}

func (g *Gate) sessionEvent(t ledger.EventType, s *Session) *ledger.Event {
	ev := &ledger.Event{}
	g.fillSession(ev, t, s)
	return ev
}

// fillSession fills in what an event of type t says of its session, and the time.
func (g *Gate) fillSession(ev *ledger.Event, t ledger.EventType, s *Session) {
	ev.Type, ev.Time = t, g.now()
	if s == nil {
		return
	}
	ev.SessionID = s.ID
	ev.ClientAddr = s.ClientAddr
	ev.ApplicationName = s.ApplicationName
	ev.TLS = s.TLS
	ev.Database = s.Database
	ev.UpstreamRole = s.UpstreamRole
	if s.Identity != nil {
		ev.Subject = s.Identity.Subject
		ev.IdentityKind = string(s.Identity.Kind)
		ev.Groups = s.Identity.Groups
		ev.AuthMethod = s.Identity.AuthMethod
	}
	if s.Target != nil {
		ev.Target = s.Target.Name
		ev.Environment = s.Target.Environment
	}
	if s.Options != nil {
		ev.Purpose = s.Options["gatehouse.purpose"]
		ev.Traceparent = s.Options["gatehouse.traceparent"]
	}
}

// Column describes one result column as a door sees it on the wire, so masking can map it to
// the catalog (table OID + attribute number) and keep values valid for the type.
type Column struct {
	Name     string
	TableOID uint32
	AttNum   uint16
	TypeOID  uint32
	Format   int16 // 0 text, 1 binary
}

// RowMasker rewrites the values of one result's rows in place before they leave Gatehouse.
type RowMasker interface {
	// MaskRow replaces sensitive values in values (one per column; nil is SQL NULL) and
	// returns how many it masked.
	MaskRow(values [][]byte) int
	// MaskedByClass reports the values masked per class since its last call (for metrics)
	// and starts counting again.
	MaskedByClass(fn func(class string, n int64))
}

// MaskPlanner is what the gate needs from internal/mask and internal/classify: for a result
// shape, which columns to mask and how, and the masking of COPY output and free text. Every
// method is required, so a masker whose signatures drift fails to compile instead of
// silently turning a control off.
type MaskPlanner interface {
	Plan(ctx context.Context, s *Session, c *Check, cols []Column) RowMasker
	CopyPlanner
	TextMasker
	ClassMasker
	ErrorClassifier
	// ShowsRaw reports whether masking profile shows every class raw.
	ShowsRaw(profile string) bool
	// Observe sees every allowed statement before it is forwarded, for maskers that
	// follow statements across messages (a DECLARE for its FETCHes).
	Observe(ctx context.Context, s *Session, c *Check)
	// Forget drops what the masker keeps for a session that ended.
	Forget(sessionID string)
}

// ResultMasker returns the masker for a result with these columns, or nil when nothing in it
// needs masking for this session. Doors call it on every row description.
func (g *Gate) ResultMasker(ctx context.Context, s *Session, c *Check, cols []Column) RowMasker {
	if g.Masker == nil || c.Decision.MaskProfile == "none" {
		return nil
	}
	return g.Masker.Plan(ctx, s, c, cols)
}

// leastRole picks the least-privileged upstream role that covers level: the role declared for
// the level itself, else the next higher level's (a read grant on a target that declares only
// a write role runs as that role rather than as the target's own login).
func leastRole(roles map[string]string, level string) string {
	order := []string{"read", "write", "admin"}
	start := 0
	for i, l := range order {
		if l == level {
			start = i
		}
	}
	for _, l := range order[start:] {
		if r := roles[l]; r != "" {
			return r
		}
	}
	return ""
}

// EventStatementIntent is recorded, durably, before a statement that can change data is
// forwarded; the statement's own event follows when it completes. Together they let an
// auditor see a statement that reached the database even if Gatehouse crashed mid-way.
const EventStatementIntent ledger.EventType = "statement.intent"

// CopyMasker masks the rows of one COPY ... TO STDOUT, one CopyData message at a time,
// keeping the output loadable by COPY FROM.
type CopyMasker interface {
	// MaskData returns the row with sensitive fields masked and how many it masked.
	MaskData(data []byte) ([]byte, int, error)
}

// CopyPlanner is the part of MaskPlanner that masks COPY output.
type CopyPlanner interface {
	// PlanCopy returns the masker for c's COPY ... TO STDOUT, nil when nothing needs
	// masking. An error means the output could not be classified: the door must refuse the
	// COPY rather than send unmasked data.
	PlanCopy(ctx context.Context, s *Session, c *Check) (CopyMasker, error)
}

// TextMasker is the part of MaskPlanner that scrubs free text (notices, error details)
// with its value detectors, following the masking profile a decision named ("" is the
// default profile).
type TextMasker interface {
	MaskText(profile, s string) (string, int)
}

// ErrorClassifier tells whether a value PostgreSQL quotes
// in an error (`invalid input syntax for type integer: "<value>"`, `Key (a)=(<value>)`)
// may be sensitive for the session, so a door redacts only those and leaves ordinary errors
// as helpful as the server wrote them.
type ErrorClassifier interface {
	// ErrorValueSensitive reports whether a value of table's columns (table "schema.table"
	// and the columns the error names), or, when table is "", a value any of c's statements
	// reads, may be sensitive for c's masking profile.
	ErrorValueSensitive(ctx context.Context, s *Session, c *Check, table string, columns []string) bool
}

// ErrorValueSensitive reports whether a value quoted in an error may be sensitive (see
// ErrorClassifier); no value is when nothing is masked.
func (g *Gate) ErrorValueSensitive(ctx context.Context, s *Session, c *Check, table string, columns []string) bool {
	if g.Masker == nil || c != nil && c.Decision.MaskProfile == "none" {
		return false
	}
	return g.Masker.ErrorValueSensitive(ctx, s, c, table, columns)
}

// CopyOutMasker returns the masker for a COPY ... TO STDOUT, or nil when nothing needs it.
// Doors call it before forwarding such a statement and refuse it on error.
func (g *Gate) CopyOutMasker(ctx context.Context, s *Session, c *Check) (CopyMasker, error) {
	if g.Masker == nil || c.Decision.MaskProfile == "none" {
		return nil, nil
	}
	return g.Masker.PlanCopy(ctx, s, c)
}

// MaskText scrubs sensitive values out of free text a door relays (NoticeResponse messages,
// error details) with the masking profile of c's decision (the default one before the
// session's first statement), unless the session may see raw values.
func (g *Gate) MaskText(c *Check, text string) (string, int) {
	if g.Masker == nil || (c != nil && c.Decision.MaskProfile == "none") {
		return text, 0
	}
	profile := ""
	if c != nil {
		profile = c.Decision.MaskProfile
	}
	return g.Masker.MaskText(profile, text)
}
