// Package pg is Gatehouse's PostgreSQL door: it speaks the PostgreSQL wire protocol to
// clients (psql, JDBC, pgx, psycopg, ...), authenticates them with Gatehouse or OIDC tokens,
// connects to the target database with the target's own credentials, and relays raw protocol
// messages in both directions. Every statement passes the gate before it is forwarded and
// every result passes the gate's masker and recording point on its way back, so clients keep
// using their ordinary drivers while identity, policy, masking and the ledger apply.
//
// The relay decodes only the messages it must look at and passes everything else through as
// untouched bytes; that keeps it protocol-complete (COPY, LISTEN/NOTIFY, pipelining,
// FunctionCall) and cheap. A denied statement is replaced by a statement that makes the
// upstream server itself fail at exactly that point, so the server's own extended-protocol
// state machine (skip to Sync, abort the transaction) stays authoritative; the door then
// rewrites that failure into Gatehouse's SQLSTATE 42501 error. The same device enforces
// affected-rows limits (writecap.go): a capped write runs with a Flush, the relay waits for
// its row count before anything can commit it, and a write over the limit is undone by a
// failing message that makes PostgreSQL abort the transaction holding it.
//
// Each loop owns its direction and its half of the per-message state: the client loop reads
// a burst of client messages, checks and forwards them with one write; the upstream loop
// reads the answers, masks and counts results, submits each statement's ledger record
// without waiting (gate.Finish) and writes to the client once per burst (out.go). A
// completion and everything after it wait in that output until the completion's record is
// answered, in order, so a pipeline's records share group commits instead of waiting one
// after another, and no result leaves before its record.
//
// Masking covers every way a value can leave: DataRows (text and binary, through the
// RowDescription's column map), COPY ... TO STDOUT output (a masker planned per COPY before
// it is forwarded; a COPY whose columns cannot be classified is refused rather than sent
// unmasked), and free text — notices, notification payloads and error fields pass the value
// detectors, and for masked sessions the values PostgreSQL quotes in data exceptions and
// constraint violations (class 22 and 23) are redacted, because a failed cast can show any
// column's value.
package pg
