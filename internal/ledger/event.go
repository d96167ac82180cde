// Package ledger keeps the tamper-evident record of everything that happened: sessions,
// failed logins, every statement and its decision, policy reloads, token changes, approvals.
// Auditors accept a record that is complete, cannot be quietly edited and answers their
// questions at once; that is what this package is for.
package ledger

import "time"

// EventType names what an event records.
type EventType string

// The event types Gatehouse writes.
const (
	EventSessionStart EventType = "session.start"
	EventSessionEnd   EventType = "session.end"
	EventLoginFailed  EventType = "login.failed"
	EventStatement    EventType = "statement"
	EventPolicyReload EventType = "policy.reload"
	EventTokenCreate  EventType = "token.create"
	EventTokenRevoke  EventType = "token.revoke"
	EventApproval     EventType = "approval"
	EventAdmin        EventType = "admin"
)

// The approval workflow's event types: a statement held for approval files a request, someone
// else approves or denies it, and the approved statement's run uses it once. Each carries the
// request id (ApprovalID), the rule that held the statement, the target and the redacted
// statement; Subject is who acted (the requester for requested and used, the approver for
// approved and denied) and Message names the other party. Expired records, once per request,
// that a deadline passed with nobody acting: a pending request's request_ttl or an unused
// approval's valid_for (the message starts with which); its Subject is the requester.
const (
	EventApprovalRequested EventType = "approval.requested"
	EventApprovalApproved  EventType = "approval.approved"
	EventApprovalDenied    EventType = "approval.denied"
	EventApprovalUsed      EventType = "approval.used"
	EventApprovalExpired   EventType = "approval.expired"
)

// Statement is what the ledger keeps of one SQL statement: never raw literals or bind
// parameters, only the redacted text and the facts.
type Statement struct {
	Kind          string   `json:"kind"`
	Category      string   `json:"category"`
	Redacted      string   `json:"text"`
	Fingerprint   string   `json:"fingerprint,omitempty"`
	TablesRead    []string `json:"tables_read,omitempty"`
	TablesWritten []string `json:"tables_written,omitempty"`
	// Columns touched that hold sensitive data, as "schema.table.column" → class.
	Sensitive map[string]string `json:"sensitive,omitempty"`
}

// Event is one entry of the ledger. Seq, PrevHash and Hash are filled in by the ledger when
// the event is appended.
type Event struct {
	Seq      int64     `json:"seq"`
	Instance string    `json:"instance,omitempty"`
	Type     EventType `json:"type"`
	Time     time.Time `json:"time"`

	SessionID    string   `json:"session,omitempty"`
	Subject      string   `json:"subject,omitempty"`
	IdentityKind string   `json:"identity_kind,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	AuthMethod   string   `json:"auth_method,omitempty"`

	ClientAddr      string `json:"client_addr,omitempty"`
	ApplicationName string `json:"application_name,omitempty"`
	TLS             bool   `json:"tls,omitempty"`
	Target          string `json:"target,omitempty"`
	Environment     string `json:"environment,omitempty"`
	Database        string `json:"database,omitempty"`
	UpstreamRole    string `json:"upstream_role,omitempty"`

	Via          string        `json:"via,omitempty"`
	Statements   []Statement   `json:"statements,omitempty"`
	Decision     string        `json:"decision,omitempty"`
	Rule         string        `json:"rule,omitempty"`
	ApprovalID   string        `json:"approval_id,omitempty"`
	Rows         int64         `json:"rows,omitempty"`
	Bytes        int64         `json:"bytes,omitempty"`
	ValuesMasked int64         `json:"values_masked,omitempty"`
	SQLState     string        `json:"sqlstate,omitempty"`
	Duration     time.Duration `json:"duration_ns,omitempty"`
	Message      string        `json:"message,omitempty"`
	Purpose      string        `json:"purpose,omitempty"`
	Traceparent  string        `json:"traceparent,omitempty"`

	PrevHash string `json:"prev_hash,omitempty"`
	Hash     string `json:"hash,omitempty"`
}
