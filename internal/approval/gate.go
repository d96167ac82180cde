package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
)

// The Store is the gate's approval workflow.
var _ gate.Approvals = (*Store)(nil)

// key is what binds an approval to one statement: the same identity, on the same target and
// database, running exactly the same text (the redacted text and the keyed hash of the exact
// text must both match, so approving DROP TABLE a never approves DROP TABLE b, nor the same
// shape with other literals).
type key struct {
	requester, kind, target, environment, database, redacted, hash string
}

func (s *Store) keyOf(h gate.Held) (key, error) {
	if h.Session == nil || h.Session.Identity == nil || h.Session.Identity.Subject == "" || h.Session.Target == nil || h.Statement == nil {
		return key{}, errors.New("a held statement needs a session with an identity and a target")
	}
	hash, err := s.textHash(h.Statement.Text)
	if err != nil {
		return key{}, err
	}
	return key{
		requester: h.Session.Identity.Subject, kind: string(h.Session.Identity.Kind),
		target: h.Session.Target.Name, environment: h.Session.Target.Environment, database: h.Session.Database,
		redacted: h.Statement.Redacted, hash: hash,
	}, nil
}

const keyWhere = `requester = ? AND requester_kind = ? AND target = ? AND database = ? AND text_hash = ? AND redacted = ?`

func (k key) args() []any {
	return []any{k.requester, k.kind, k.target, k.database, k.hash, k.redacted}
}

// Approved implements gate.Approvals: the oldest usable approval for exactly this statement.
func (s *Store) Approved(ctx context.Context, h gate.Held) (string, error) {
	k, err := s.keyOf(h)
	if err != nil {
		return "", err
	}
	var id string
	err = s.queryRow(ctx, `SELECT id FROM approval_requests WHERE `+keyWhere+`
		AND status = 'approved' AND valid_until > ? ORDER BY decided_at, id LIMIT 1`,
		append(k.args(), s.now().UnixNano())...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up approvals: %w", err)
	}
	return id, nil
}

// Use implements gate.Approvals. The conditional update is the lock: of sessions racing for
// one approval, exactly one changes the row.
func (s *Store) Use(ctx context.Context, id string, h gate.Held) (bool, error) {
	k, err := s.keyOf(h)
	if err != nil {
		return false, err
	}
	now := s.now()
	res, err := s.exec(ctx, `UPDATE approval_requests SET status = 'used', used_at = ?, used_session = ?
		WHERE id = ? AND status = 'approved' AND valid_until > ? AND `+keyWhere,
		append([]any{now.UnixNano(), h.Session.ID, id, now.UnixNano()}, k.args()...)...)
	if err != nil {
		return false, fmt.Errorf("use approval %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, nil
	}
	r, err := s.get(ctx, id)
	if err != nil {
		return false, err
	}
	ev := s.event(r, ledger.EventApprovalUsed, now)
	sessionFields(ev, h)
	ev.Message = fmt.Sprintf("approved by %s (%s) at %s", r.DecidedBy, r.DecidedKind, r.DecidedAt.Format(time.RFC3339))
	if err := s.record(ctx, ev); err != nil {
		// Not on record, not used: give the approval back.
		if _, uerr := s.exec(ctx, `UPDATE approval_requests SET status = 'approved', used_at = 0, used_session = ''
			WHERE id = ? AND status = 'used'`, id); uerr != nil {
			s.log.Error("undo unrecorded approval use", "approval", id, "err", uerr)
		}
		return false, err
	}
	return true, nil
}

// sessionFields fills in who ran what from the held statement's session.
func sessionFields(ev *ledger.Event, h gate.Held) {
	s := h.Session
	ev.SessionID, ev.ClientAddr, ev.ApplicationName, ev.TLS = s.ID, s.ClientAddr, s.ApplicationName, s.TLS
	ev.UpstreamRole = s.UpstreamRole
	ev.Subject, ev.IdentityKind, ev.Groups, ev.AuthMethod = s.Identity.Subject, string(s.Identity.Kind), s.Identity.Groups, s.Identity.AuthMethod
}

// Hold implements gate.Approvals: the pending request for this statement is reused, a denied
// one is reported until it lapses, and otherwise a new request is filed and recorded.
func (s *Store) Hold(ctx context.Context, h gate.Held) (gate.Decision, error) {
	k, err := s.keyOf(h)
	if err != nil {
		return gate.Decision{}, err
	}
	// Record and clear lapsed requests first: a lapsed pending request for this statement
	// would otherwise block filing a new one (one pending request per statement).
	if _, err := s.Expire(ctx); err != nil {
		return gate.Decision{}, err
	}
	d := gate.Decision{Action: gate.RequireApproval, Rule: h.Rule}
	for attempt := 0; attempt < 3; attempt++ {
		r, found, err := s.openRequest(ctx, k)
		if err != nil {
			return d, err
		}
		if found {
			d.ApprovalID = r.ID
			switch r.Status {
			case Denied:
				why := ""
				if r.Comment != "" {
					why = ": " + strconv.Quote(r.Comment)
				}
				d.Message = joinMessage(h.Message, fmt.Sprintf("approval request %s for this statement was denied by %s%s, so it was not run (a new request can be filed after %s)",
					r.ID, r.DecidedBy, why, r.ExpiresAt.Format(time.RFC3339)))
			default:
				d.Message = joinMessage(h.Message, fmt.Sprintf("approval request %s is waiting for a decision: %s, then run the statement again", r.ID, s.howToApprove(r.ID)))
			}
			return d, nil
		}
		r, created, err := s.file(ctx, k, h)
		if err != nil {
			return d, err
		}
		if !created {
			continue // another session filed it first, or the id collided: look again
		}
		d.ApprovalID = r.ID
		d.Message = joinMessage(h.Message, fmt.Sprintf("approval request %s created: %s, then run the statement again", r.ID, s.howToApprove(r.ID)))
		return d, nil
	}
	return d, errors.New("file approval request: gave up after repeated conflicts")
}

// openRequest finds the pending request for k, else a denied one that has not lapsed.
func (s *Store) openRequest(ctx context.Context, k key) (Request, bool, error) {
	r, err := scanRequest(s.queryRow(ctx, `SELECT `+requestColumns+` FROM approval_requests WHERE `+keyWhere+`
		AND status IN ('pending', 'denied') AND expires_at > ? ORDER BY status = 'pending' DESC, created_at DESC LIMIT 1`,
		append(k.args(), s.now().UnixNano())...))
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, false, nil
	}
	if err != nil {
		return Request{}, false, fmt.Errorf("look up approval requests: %w", err)
	}
	return r, true, nil
}

// file inserts a new pending request for k and records it. created is false when a pending
// request for k appeared meanwhile (the unique index keeps one) or the id collided.
func (s *Store) file(ctx context.Context, k key, h gate.Held) (Request, bool, error) {
	id, err := newID()
	if err != nil {
		return Request{}, false, err
	}
	now := s.now()
	st := h.Statement
	r := Request{
		ID: id, Requester: k.requester, RequesterKind: k.kind, Target: k.target, Environment: k.environment,
		Database: k.database, SessionID: h.Session.ID, StatementKind: st.Kind, Category: string(st.Category),
		Statement: st.Redacted, Fingerprint: st.Fingerprint, TablesRead: st.TablesRead, TablesWritten: st.TablesWritten,
		Rule: h.Rule, Message: h.Message, Reason: h.Reason, CreatedAt: now.UTC(),
		ExpiresAt: now.Add(s.settings().RequestTTL).UTC(), Status: Pending, textHash: k.hash,
	}
	read, _ := json.Marshal(nonNil(st.TablesRead))
	written, _ := json.Marshal(nonNil(st.TablesWritten))
	res, err := s.exec(ctx, `INSERT INTO approval_requests (id, requester, requester_kind, target, environment, database,
		session_id, statement_kind, category, redacted, fingerprint, text_hash, tables_read, tables_written, rule, message, reason,
		created_at, expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT DO NOTHING`,
		r.ID, r.Requester, r.RequesterKind, r.Target, r.Environment, r.Database, r.SessionID, r.StatementKind, r.Category,
		r.Statement, r.Fingerprint, r.textHash, string(read), string(written), r.Rule, r.Message, r.Reason,
		r.CreatedAt.UnixNano(), r.ExpiresAt.UnixNano())
	if err != nil {
		return r, false, fmt.Errorf("file approval request: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return r, false, nil
	}
	ev := s.event(r, ledger.EventApprovalRequested, now)
	sessionFields(ev, h)
	ev.Decision = string(gate.RequireApproval)
	ev.Message = "waiting for an approver until " + r.ExpiresAt.Format(time.RFC3339)
	if err := s.record(ctx, ev); err != nil {
		// Not on record, not filed.
		if _, derr := s.exec(ctx, `DELETE FROM approval_requests WHERE id = ?`, r.ID); derr != nil {
			s.log.Error("withdraw unrecorded approval request", "approval", r.ID, "err", derr)
		}
		return r, false, err
	}
	return r, true, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// joinMessage appends more to a rule's message as a further clause.
func joinMessage(msg, more string) string {
	for len(msg) > 0 && (msg[len(msg)-1] == '.' || msg[len(msg)-1] == ' ') {
		msg = msg[:len(msg)-1]
	}
	if msg == "" {
		return more
	}
	return msg + "; " + more
}

// howToApprove tells a requester how their request gets decided: the CLI command, and the
// request's console page when the console's address is known.
func (s *Store) howToApprove(id string) string {
	msg := "ask an approver to run `gatehouse approvals approve " + id + "`"
	if s.console != nil {
		if u := s.console(); u != "" {
			msg += " or to decide it at " + u + "approvals/" + id
		}
	}
	return msg
}
