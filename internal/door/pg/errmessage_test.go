package pg

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRecordedErrorKeepsNoLiteral: PostgreSQL's error messages quote values the client wrote
// (a literal cast to a type it does not fit, a bound parameter). The client sees the message
// as PostgreSQL wrote it; the ledger, which keeps statements without their literals, records
// the message with those values replaced, and keeps names.
func TestRecordedErrorKeepsNoLiteral(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	const secret = "alice.secret@example.com"
	cases := []struct {
		name, sql string
		args      []any
		mode      pgx.QueryExecMode
		marker    string // a piece of the recorded statement that finds its event
		keep      string // a name the recorded message must still hold
	}{
		{"literal", "SELECT '" + secret + "'::int AS lit_case", nil, pgx.QueryExecModeSimpleProtocol, "lit_case", ""},
		{"parameter", "SELECT ($1::text)::int AS param_case", []any{secret}, pgx.QueryExecModeExec, "param_case", ""},
		{"name kept", "SELECT no_such_column_xyz FROM (SELECT '" + secret + "' AS v) s", nil, pgx.QueryExecModeSimpleProtocol, "no_such_column_xyz", "no_such_column_xyz"},
	}
	for _, tc := range cases {
		args := append([]any{tc.mode}, tc.args...)
		_, err := c.Exec(ctx, tc.sql, args...)
		if err == nil {
			t.Fatalf("%s: %s succeeded", tc.name, tc.sql)
		}
		if tc.keep == "" && !strings.Contains(pgMessage(err), secret) {
			t.Fatalf("%s: the client should see PostgreSQL's message as is, got %q", tc.name, pgMessage(err))
		}
		var msg string
		eventually(t, 5*time.Second, tc.name+" recorded", func() bool {
			evs := e.rec.statements(tc.marker)
			if len(evs) == 0 || evs[len(evs)-1].Message == "" {
				return false
			}
			msg = evs[len(evs)-1].Message
			return true
		})
		if strings.Contains(msg, secret) || strings.Contains(msg, "example.com") {
			t.Errorf("%s: the recorded message keeps the value the client wrote: %q", tc.name, msg)
		}
		if tc.keep != "" && !strings.Contains(msg, tc.keep) {
			t.Errorf("%s: the recorded message lost the name %q: %q", tc.name, tc.keep, msg)
		}
	}
}

// TestSkippedExecutesAreRecorded: a statement of a pipeline that PostgreSQL skips because an
// earlier one failed was asked for and never ran; the ledger says so (25P02), and a statement
// whose Bind failed (PostgreSQL plans an unnamed statement with its parameters there) is
// recorded with its error.
func TestSkippedExecutesAreRecorded(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	b := &pgx.Batch{}
	b.Queue("SELECT 1/0 AS first_fails")
	b.Queue("SELECT 7 AS skipped_after")
	if err := c.SendBatch(ctx, b).Close(); err == nil {
		t.Fatal("the batch succeeded")
	}
	if _, err := c.Exec(ctx, "SELECT ($1::text)::int AS bind_fails", "x"); err == nil {
		t.Fatal("the cast succeeded")
	}
	for marker, state := range map[string]string{"first_fails": "22012", "skipped_after": "25P02", "bind_fails": "22P02"} {
		eventually(t, 5*time.Second, marker+" recorded", func() bool {
			evs := e.rec.statements(marker)
			return len(evs) == 1 && evs[0].SQLState == state
		})
	}
}
