// Package approval holds sensitive statements (schema changes, production deletes, whatever
// policy marks require_approval) until someone else says yes. A database client cannot wait
// minutes on an open connection for a person to decide, so the gate refuses a held statement
// with the id of a request filed here; an approver approves or denies it through the HTTP API;
// the requester then runs the very same statement again, and it goes through once.
//
// Requests live in the state database beside the tokens: the embedded SQLite database of one
// instance, or a PostgreSQL database shared by several, so an approval given through any
// instance is usable through every other. They keep the redacted statement and a keyed hash of its exact text, never the
// literals. Every request, decision, use and lapse is written to the ledger.
package approval

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/store"
)

// Status is where a request stands.
type Status string

// The states of a request. Pending requests lapse to expired after the request TTL, approved
// ones after their validity window; used and denied are final.
const (
	Pending  Status = "pending"
	Approved Status = "approved"
	Denied   Status = "denied"
	Expired  Status = "expired"
	Used     Status = "used"
)

// ValidStatus reports whether s names a status, so bad filters are refused early.
func ValidStatus(s Status) bool {
	return slices.Contains([]Status{Pending, Approved, Denied, Expired, Used}, s)
}

// Request is one approval request and what became of it.
type Request struct {
	ID            string `json:"id"`
	Requester     string `json:"requester"`
	RequesterKind string `json:"requester_kind"`
	Target        string `json:"target"`
	Environment   string `json:"environment,omitempty"`
	Database      string `json:"database,omitempty"`
	SessionID     string `json:"session,omitempty"`
	// StatementKind, Category, Statement (redacted: literals replaced), Fingerprint and the
	// tables describe what is held; the exact text exists only as a keyed hash.
	StatementKind string   `json:"statement_kind"`
	Category      string   `json:"category"`
	Statement     string   `json:"statement"`
	Fingerprint   string   `json:"fingerprint,omitempty"`
	TablesRead    []string `json:"tables_read,omitempty"`
	TablesWritten []string `json:"tables_written,omitempty"`
	// Rule held the statement, with its message; Reason is the purpose the client declared.
	Rule      string    `json:"rule"`
	Message   string    `json:"message,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the request lapses if nobody decides it.
	ExpiresAt time.Time `json:"expires_at"`
	Status    Status    `json:"status"`
	// DecidedBy and its kind, DecidedAt and Comment say who approved or denied it.
	DecidedBy   string    `json:"decided_by,omitempty"`
	DecidedKind string    `json:"decided_by_kind,omitempty"`
	DecidedAt   time.Time `json:"decided_at,omitzero"`
	Comment     string    `json:"comment,omitempty"`
	// ValidUntil is when an approval stops being usable.
	ValidUntil time.Time `json:"valid_until,omitzero"`
	// UsedAt and UsedSession say which session ran the approved statement.
	UsedAt      time.Time `json:"used_at,omitzero"`
	UsedSession string    `json:"used_session,omitempty"`

	textHash string
}

// errNoRecorder: a read-only store (the CLI's) was asked to change something.
var errNoRecorder = errors.New("approval store has no ledger to record to")

// Errors the HTTP API maps to statuses.
var (
	// ErrNotFound: no request has that id.
	ErrNotFound = errors.New("no approval request with this id")
	// ErrOwnRequest: nobody may decide their own request, whatever their groups.
	ErrOwnRequest = errors.New("you cannot decide your own approval request: someone else must")
	// ErrNotApprover: the identity is in none of the approver groups.
	ErrNotApprover = errors.New("you are not an approver: approving needs membership of an approver group")
)

// StatusError says a request cannot be decided because it is no longer pending.
type StatusError struct {
	ID     string
	Status Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("approval request %s is %s, not pending: only pending requests can be decided", e.ID, e.Status)
}

// Settings are the approval settings in force (from the configuration's approvals section).
type Settings struct {
	// Approvers are the groups whose members may decide requests.
	Approvers []string
	// RequestTTL is how long a request waits for a decision.
	RequestTTL time.Duration
	// ValidFor is how long an approval stays usable.
	ValidFor time.Duration
}

// SettingsFrom reads the settings out of a configuration, filling in defaults.
func SettingsFrom(a config.Approvals) Settings {
	s := Settings{Approvers: a.Approvers, RequestTTL: time.Duration(a.RequestTTL), ValidFor: time.Duration(a.ValidFor)}
	if len(s.Approvers) == 0 {
		s.Approvers = config.DefaultApprovers
	}
	if s.RequestTTL <= 0 {
		s.RequestTTL = config.DefaultApprovalRequestTTL
	}
	if s.ValidFor <= 0 {
		s.ValidFor = config.DefaultApprovalValidFor
	}
	return s
}

// Recorder receives the approval events for the ledger.
type Recorder interface {
	Record(ctx context.Context, e *ledger.Event) error
}

// Options tune a Store.
type Options struct {
	// Recorder receives approval.requested/approved/denied/used events. Required for a
	// store that files or decides requests; a read-only store (the CLI's list) may omit it.
	Recorder Recorder
	// Key keys the hash of statement texts, so a stolen state database does not let anyone
	// confirm guesses of the literals in a held statement. Required to file or match requests.
	Key []byte
	// Settings returns the settings in force; called on every decision, so a configuration
	// reload applies at once. Default: the configuration defaults.
	Settings func() Settings
	Log      *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// ConsoleURL, when set, returns the web console's base URL (ending in "/"), so a
	// requester's refusal message links to the request's page ("" leaves the link out).
	ConsoleURL func() string
}

// Store files, decides and uses approval requests. Safe for concurrent use.
type Store struct {
	db       *sql.DB
	dialect  store.Dialect
	rec      Recorder
	key      []byte
	settings func() Settings
	log      *slog.Logger
	now      func() time.Time
	console  func() string
}

// migrations are the approval component's schema, applied in order by store.Migrate. Never
// edit a released entry; append.
var migrations = []string{
	`CREATE TABLE approval_requests (
		id             TEXT PRIMARY KEY,
		requester      TEXT NOT NULL,
		requester_kind TEXT NOT NULL,
		target         TEXT NOT NULL,
		environment    TEXT NOT NULL,
		database       TEXT NOT NULL,
		session_id     TEXT NOT NULL,
		statement_kind TEXT NOT NULL,
		category       TEXT NOT NULL,
		redacted       TEXT NOT NULL,
		fingerprint    TEXT NOT NULL,
		text_hash      TEXT NOT NULL,
		tables_read    TEXT NOT NULL,
		tables_written TEXT NOT NULL,
		rule           TEXT NOT NULL,
		message        TEXT NOT NULL,
		reason         TEXT NOT NULL,
		created_at     INTEGER NOT NULL,
		expires_at     INTEGER NOT NULL,
		status         TEXT NOT NULL,
		decided_by     TEXT NOT NULL DEFAULT '',
		decided_kind   TEXT NOT NULL DEFAULT '',
		decided_at     INTEGER NOT NULL DEFAULT 0,
		comment        TEXT NOT NULL DEFAULT '',
		valid_until    INTEGER NOT NULL DEFAULT 0,
		used_at        INTEGER NOT NULL DEFAULT 0,
		used_session   TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX approval_requests_key ON approval_requests(requester, target, text_hash, status);
	CREATE INDEX approval_requests_status ON approval_requests(status, created_at);
	CREATE UNIQUE INDEX approval_requests_one_pending ON approval_requests(requester, requester_kind, target, database, text_hash) WHERE status = 'pending';`,
}

// postgresMigrations are migrations for a PostgreSQL store shared by several instances: the
// same table, indexes and semantics in PostgreSQL's types (nanosecond times need BIGINT),
// plus the table that holds the check value of the instances' shared approval key. Never
// edit a released entry; append.
var postgresMigrations = []string{
	strings.ReplaceAll(migrations[0], " INTEGER ", " BIGINT ") + `
	CREATE TABLE approval_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
}

// Open migrates the approval schema in db (opened with store.Open, or store.OpenPostgres for a
// store shared by several instances) and returns the store.
func Open(ctx context.Context, db *sql.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("approval: nil store")
	}
	if err := store.MigrateDialect(ctx, db, "approval", migrations, postgresMigrations); err != nil {
		return nil, fmt.Errorf("prepare approval store: %w", err)
	}
	s := &Store{db: db, dialect: store.DialectOf(db), rec: opts.Recorder, key: opts.Key, settings: opts.Settings, log: opts.Log, now: opts.Now, console: opts.ConsoleURL}
	if s.settings == nil {
		s.settings = func() Settings { return SettingsFrom(config.Approvals{}) }
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.dialect == store.Postgres && len(s.key) > 0 {
		if err := s.checkSharedKey(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkSharedKey makes sure every instance sharing a PostgreSQL store hashes statements with
// the same key: otherwise an approval given for a statement held by one instance would never
// match the same statement run through another. Only a keyed check value is stored, never
// the key, so the store alone still cannot confirm guesses of held literals.
func (s *Store) checkSharedKey(ctx context.Context) error {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("gatehouse approval key check v1"))
	check := hex.EncodeToString(m.Sum(nil))
	if _, err := s.exec(ctx, `INSERT INTO approval_meta(key, value) VALUES ('key_check', ?) ON CONFLICT DO NOTHING`, check); err != nil {
		return fmt.Errorf("check approval key against the shared store: %w", err)
	}
	var have string
	if err := s.queryRow(ctx, `SELECT value FROM approval_meta WHERE key = 'key_check'`).Scan(&have); err != nil {
		return fmt.Errorf("check approval key against the shared store: %w", err)
	}
	if !hmac.Equal([]byte(have), []byte(check)) {
		return errors.New("approval key differs from the one the other instances sharing this store use: copy " + KeyFile + " from an existing instance's data directory")
	}
	return nil
}

// exec, queryRow and query run a query written with ? placeholders in the store's dialect.
// There is no cache in front of the requests: every decision and use reads and writes the
// (possibly shared) store, so instances never disagree about a request.
func (s *Store) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, store.Rebind(s.dialect, q), args...)
}

func (s *Store) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return s.db.QueryRowContext(ctx, store.Rebind(s.dialect, q), args...)
}

func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, store.Rebind(s.dialect, q), args...)
}

// idAlphabet is Crockford's base32 in lower case: no i, l, o or u, so an id read aloud or
// copied by hand comes out right.
const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// IDPrefix starts every request id, so ids are recognisable in messages and logs.
const IDPrefix = "apr_"

var idRE = regexp.MustCompile(`^apr_[0-9a-hjkmnp-tv-z]{10}$`)

// newID returns "apr_" and 10 random base32 characters (50 bits): short enough to type, and
// unguessable enough for a name that also needs an authenticated approver to mean anything.
func newID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate approval id: %w", err)
	}
	out := []byte(IDPrefix)
	for _, c := range b {
		out = append(out, idAlphabet[c&31])
	}
	return string(out), nil
}

// NormalizeID lower-cases an id someone typed and checks its shape.
func NormalizeID(id string) (string, bool) {
	id = strings.ToLower(strings.TrimSpace(id))
	return id, idRE.MatchString(id)
}

// textHash is the keyed hash of a statement's exact text that an approval is bound to.
func (s *Store) textHash(text string) (string, error) {
	if len(s.key) == 0 {
		return "", errors.New("approval store has no hashing key")
	}
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("gatehouse approval statement v1\x00"))
	m.Write([]byte(text))
	return hex.EncodeToString(m.Sum(nil)), nil
}

const requestColumns = `id, requester, requester_kind, target, environment, database, session_id, statement_kind, category,
	redacted, fingerprint, text_hash, tables_read, tables_written, rule, message, reason, created_at, expires_at, status,
	decided_by, decided_kind, decided_at, comment, valid_until, used_at, used_session`

type scanner interface{ Scan(dest ...any) error }

func scanRequest(row scanner) (Request, error) {
	var (
		r                                        Request
		read, written                            string
		created, expires, decided, valid, usedAt int64
	)
	err := row.Scan(&r.ID, &r.Requester, &r.RequesterKind, &r.Target, &r.Environment, &r.Database, &r.SessionID,
		&r.StatementKind, &r.Category, &r.Statement, &r.Fingerprint, &r.textHash, &read, &written, &r.Rule, &r.Message,
		&r.Reason, &created, &expires, &r.Status, &r.DecidedBy, &r.DecidedKind, &decided, &r.Comment, &valid, &usedAt, &r.UsedSession)
	if err != nil {
		return r, err
	}
	_ = json.Unmarshal([]byte(read), &r.TablesRead)
	_ = json.Unmarshal([]byte(written), &r.TablesWritten)
	r.CreatedAt, r.ExpiresAt = fromNanos(created), fromNanos(expires)
	r.DecidedAt, r.ValidUntil, r.UsedAt = fromNanos(decided), fromNanos(valid), fromNanos(usedAt)
	return r, nil
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Get returns one request.
func (s *Store) Get(ctx context.Context, id string) (Request, error) {
	id, ok := NormalizeID(id)
	if !ok {
		return Request{}, ErrNotFound
	}
	return s.get(ctx, id)
}

func (s *Store) get(ctx context.Context, id string) (Request, error) {
	r, err := scanRequest(s.queryRow(ctx, `SELECT `+requestColumns+` FROM approval_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	if err != nil {
		return Request{}, fmt.Errorf("read approval request %s: %w", id, err)
	}
	r.lapse(s.now())
	return r, nil
}

// Filter selects requests for List.
type Filter struct {
	// Status narrows to one status ("" for all).
	Status Status
	// Requester narrows to one requester's requests ("" for everyone's).
	Requester string
	// Limit caps the result (default 100, at most 1000); newest first.
	Limit int
}

// List returns requests, newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Request, error) {
	if f.Status != "" && !ValidStatus(f.Status) {
		return nil, fmt.Errorf("%q is not a status, expected pending, approved, denied, expired or used", f.Status)
	}
	now := s.now()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	q := `SELECT ` + requestColumns + ` FROM approval_requests WHERE 1 = 1`
	var args []any
	if f.Status != "" {
		q += ` AND ` + effectiveStatus + ` = ?`
		args = append(args, now.UnixNano(), now.UnixNano(), string(f.Status))
	}
	if f.Requester != "" {
		q += ` AND requester = ?`
		args = append(args, f.Requester)
	}
	q += ` ORDER BY created_at DESC, id LIMIT ?`
	args = append(args, limit)
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list approval requests: %w", err)
	}
	defer rows.Close()
	out := []Request{}
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("read approval request: %w", err)
		}
		r.lapse(now)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list approval requests: %w", err)
	}
	return out, nil
}

// MayDecide reports whether id may decide requests at all: it must be in an approver group.
// (Whether it may decide a given request also depends on who asked: see Approve.)
func (s *Store) MayDecide(id *identity.Identity) bool {
	return id != nil && slices.ContainsFunc(s.settings().Approvers, id.InGroup)
}

// Approvers are the approver groups in force.
func (s *Store) Approvers() []string { return slices.Clone(s.settings().Approvers) }

// maxComment bounds an approver's comment, which is shown to the requester and kept.
const maxComment = 1000

// cleanComment keeps a comment printable and bounded.
func cleanComment(c string) string {
	c = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(c))
	if len(c) > maxComment {
		c = strings.ToValidUTF8(c[:maxComment], "")
	}
	return c
}

// Approve approves a pending request on behalf of approver, who must be someone other than
// the requester and a member of an approver group. The requester may then run the statement
// once within the validity window.
func (s *Store) Approve(ctx context.Context, id string, approver *identity.Identity, comment string) (Request, error) {
	return s.decide(ctx, id, approver, comment, Approved)
}

// Deny denies a pending request on behalf of approver (the same rules as Approve). Running
// the statement again is refused, saying so, until the request's own expiry.
func (s *Store) Deny(ctx context.Context, id string, approver *identity.Identity, comment string) (Request, error) {
	return s.decide(ctx, id, approver, comment, Denied)
}

func (s *Store) decide(ctx context.Context, rawID string, approver *identity.Identity, comment string, to Status) (Request, error) {
	id, ok := NormalizeID(rawID)
	if !ok || approver == nil {
		return Request{}, ErrNotFound
	}
	r, err := s.get(ctx, id)
	if err != nil {
		return Request{}, err
	}
	// Someone else's approval: the same principal never decides its own request, compared
	// as logins compare names (case-insensitively), whatever its kind or groups.
	if strings.EqualFold(r.Requester, approver.Subject) {
		return r, ErrOwnRequest
	}
	if !s.MayDecide(approver) {
		return r, ErrNotApprover
	}
	if r.Status != Pending {
		return r, &StatusError{ID: id, Status: r.Status}
	}
	set := s.settings()
	now := s.now()
	comment = cleanComment(comment)
	var valid int64
	if to == Approved {
		valid = now.Add(set.ValidFor).UnixNano()
	}
	res, err := s.exec(ctx, `UPDATE approval_requests SET status = ?, decided_by = ?, decided_kind = ?, decided_at = ?,
		comment = ?, valid_until = ? WHERE id = ? AND status = 'pending' AND expires_at > ?`,
		string(to), approver.Subject, string(approver.Kind), now.UnixNano(), comment, valid, id, now.UnixNano())
	if err != nil {
		return r, fmt.Errorf("%s approval request %s: %w", verb(to), id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		// Decided or lapsed between the read and the update.
		cur, err := s.get(ctx, id)
		if err != nil {
			return r, err
		}
		if cur.Status == Pending {
			cur.Status = Expired
		}
		return cur, &StatusError{ID: id, Status: cur.Status}
	}
	r.Status, r.DecidedBy, r.DecidedKind, r.DecidedAt, r.Comment = to, approver.Subject, string(approver.Kind), now.UTC(), comment
	r.ValidUntil = fromNanos(valid)

	ev := s.event(r, ledger.EventApprovalApproved, now)
	if to == Denied {
		ev.Type = ledger.EventApprovalDenied
	}
	ev.Subject, ev.IdentityKind, ev.Groups, ev.AuthMethod = approver.Subject, string(approver.Kind), approver.Groups, approver.AuthMethod
	ev.Message = fmt.Sprintf("requested by %s (%s)", r.Requester, r.RequesterKind)
	if to == Approved {
		ev.Message += "; valid until " + r.ValidUntil.Format(time.RFC3339)
	}
	if comment != "" {
		ev.Message += "; comment: " + comment
	}
	if err := s.record(ctx, ev); err != nil {
		// Not on record, not decided: put the request back as it was.
		if _, uerr := s.exec(ctx, `UPDATE approval_requests SET status = 'pending', decided_by = '', decided_kind = '',
			decided_at = 0, comment = '', valid_until = 0 WHERE id = ? AND status = ?`, id, string(to)); uerr != nil {
			s.log.Error("undo unrecorded approval decision", "approval", id, "err", uerr)
		}
		return r, fmt.Errorf("%s approval request %s: %w", verb(to), id, err)
	}
	return r, nil
}

func verb(to Status) string {
	if to == Denied {
		return "deny"
	}
	return "approve"
}

// event is the ledger event describing request r.
func (s *Store) event(r Request, t ledger.EventType, now time.Time) *ledger.Event {
	return &ledger.Event{
		Type: t, Time: now, Target: r.Target, Environment: r.Environment, Database: r.Database,
		ApprovalID: r.ID, Rule: r.Rule, Purpose: r.Reason,
		Statements: []ledger.Statement{{Kind: r.StatementKind, Category: r.Category, Redacted: r.Statement,
			Fingerprint: r.Fingerprint, TablesRead: r.TablesRead, TablesWritten: r.TablesWritten}},
	}
}

func (s *Store) record(ctx context.Context, ev *ledger.Event) error {
	if s.rec == nil {
		return errNoRecorder
	}
	if err := s.rec.Record(ctx, ev); err != nil {
		return fmt.Errorf("record %s event: %w", ev.Type, err)
	}
	return nil
}
