package policy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// fresh hides gate.ReusablePolicy: a gate holding it asks the engine for every decision.
type fresh struct{ e *Engine }

func (f fresh) Access(ctx context.Context, s *gate.Session) gate.Decision { return f.e.Access(ctx, s) }
func (f fresh) Decide(ctx context.Context, in gate.Input) gate.Decision   { return f.e.Decide(ctx, in) }

// counted counts the decisions the engine really made for a remembering gate.
type counted struct {
	*Engine
	n int
}

func (c *counted) DecideReusable(ctx context.Context, in gate.Input) (gate.Decision, any, bool) {
	c.n++
	return c.Engine.DecideReusable(ctx, in)
}

// memoCorpus is the statements of the policy tests and the guardrail suites, with near twins
// that share a fingerprint but not their facts (WHERE 1 = 1 and WHERE id = 1, DISCARD ALL and
// DISCARD PLANS, LIMIT ALL and LIMIT 5, set_config of role and of work_mem).
var memoCorpus = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = 1", "SELECT abalance FROM pgbench_accounts WHERE aid = 2",
	"SELECT email FROM users WHERE id = 1", "SELECT * FROM users", "select * from public.users limit all", "SELECT * FROM users LIMIT 5",
	"DROP TABLE users", `/* harmless */ DrOp   TaBlE "public"."users"`, "SELECT 1; drop table if exists users cascade",
	"BEGIN; DROP SCHEMA app CASCADE; COMMIT", "truncate only users restart identity", "DROP DATABASE app",
	"CREATE TABLE t (a int)", "ALTER TABLE users DROP COLUMN email", "create index concurrently on users (email)",
	"ALTER SYSTEM SET log_statement = 'none'", "GRANT ALL ON users TO PUBLIC", "DO $$ BEGIN DELETE FROM users; END $$",
	"CALL wipe()", "MERGE INTO users u USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE", "DELETE FROM users WHERE $1",
	"DELETE FROM users WHERE (SELECT true)", "UPDATE users SET email = NULL WHERE EXISTS (SELECT 1)", "DELETE FROM users WHERE id = $1",
	"DELETE FROM users", "delete from public.users where true", "delete from public.users where false",
	"UPDATE users SET email = 'x' WHERE 1 = 1", "UPDATE users SET email = 'x' WHERE 1 = 2", "UPDATE users SET email = 'x' WHERE id = 1",
	"WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d", "EXPLAIN ANALYZE DELETE FROM users", "EXPLAIN DELETE FROM users",
	"PREPARE p AS DELETE FROM users", "PREPARE q AS SELECT * FROM users WHERE id = $1", "EXECUTE q(1)", "EXECUTE p",
	"SELECT 1; DELETE FROM users; SELECT 2", "SELECT 1; SELECT 1; SELECT 2",
	"CREATE TEMP TABLE t AS SELECT 1 AS a", "CREATE TYPE pair AS (a int, b text)", "VACUUM ANALYZE users", "TRUNCATE users",
	"SELECT app.my_function()", "SELECT pg_read_file('/etc/passwd')", "GRANT SELECT ON users TO public", "CREATE ROLE intruder SUPERUSER",
	"SET ROLE postgres", "RESET ROLE", "SET SESSION AUTHORIZATION postgres", "DISCARD ALL", "DISCARD PLANS", "DISCARD TEMP",
	"SELECT set_config('role', 'postgres', false)", "SELECT set_config('work_mem', '64MB', false)", "SET work_mem = '64MB'",
	"SET standard_conforming_strings = off", "COPY users TO STDOUT", "COPY users FROM '/tmp/x'", "COPY (SELECT 1) TO PROGRAM 'sh'",
	"SELECT * FROM users FOR UPDATE", "SELECT * INTO copy_users FROM users", "SELECT lo_export(1, '/tmp/x')",
	"INSERT INTO audit_copy SELECT email FROM users", "INSERT INTO t VALUES (1)", "BEGIN", "COMMIT", "ROLLBACK",
	"SELEC * FROM users", "SELECT /*purpose='report'*/ 1", "SELECT query_to_xml('DELETE FROM users', true, true, '')",
	"SELECT query_to_xml('SELECT 1', true, true, '')", "LISTEN x", "NOTIFY x, 'hello'",
}

// memoPolicies are the built-in policy and policies whose conditions read every kind of
// fact: the statement's redacted text and sensitive classes, the via, the purpose, labels and
// claims; and one that reads the time (no decision of such a policy is remembered) and has a
// condition that fails on a missing claim.
var memoPolicies = []string{"", `
grants:
  - {subjects: ["*"], level: write}
  - {groups: [dba], level: admin}
  - {kinds: [agent], level: read, when: 'session.purpose != ""'}
rules:
  - name: no-sensitive-copies
    when: statement.export && "ssn" in statement.sensitive_classes
    action: deny
  - name: parse-needs-limit
    when: session.via == "parse" && statement.category == "read" && !statement.has_limit
    action: require_approval
  - name: incident-reads
    when: session.purpose.startsWith("incident-") && statement.text.contains("users")
    action: allow
    mask: none
  - name: payments-team
    when: target.labels["team"] == "payments" && "tier" in identity.claims && identity.claims["tier"] == "gold"
    action: allow
    max_rows: 50
  - name: trivial
    when: statement.where_trivial || statement.changes_role
    action: deny
  - name: functions
    when: '"pg_read_file" in statement.functions'
    action: deny
masking:
  raw_access:
    - {groups: [compliance], profile: none}
`, `
grants: [{subjects: ["*"], level: admin}]
rules:
  - name: after-2030
    when: time > timestamp("2030-01-01T00:00:00Z") && statement.category == "write"
    action: deny
  - name: dev-first
    when: target.environment == "dev" && statement.kind == "DELETE"
    action: require_approval
  - name: gold-only
    when: identity.claims["tier"] != "gold" && statement.kind == "TRUNCATE"
    action: deny
`}

// TestMemoAgreesWithPolicy: a gate that remembers the policy's decisions per session decides
// every statement of the corpora exactly as a gate that asks the policy every time, for every
// session, via, policy and round, across a policy reload, a change of the clock and a change
// of a session attribute; and it does remember (the second round asks the policy nothing for
// a policy without the time).
func TestMemoAgreesWithPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	cnt := &counted{Engine: e}
	var clock time.Time
	now := func() time.Time { return clock }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := tableClasses{"users": {"email", "ssn"}}
	memo := &gate.Gate{Inspector: inspect.New(1000), Policy: cnt, Catalog: cat, Log: quiet, Now: now}
	asks := &gate.Gate{Inspector: inspect.New(1000), Policy: fresh{e}, Catalog: cat, Log: quiet, Now: now}
	sessions := func() []*gate.Session {
		gold := who("gina@corp.example", identity.Human, "prod")
		gold.Identity.Claims = map[string]any{"tier": "gold"}
		bot := who("copilot", identity.Agent, "dev")
		bot.Options["gatehouse.purpose"] = "incident-7"
		return []*gate.Session{
			who("dan@corp.example", identity.Human, "prod", "dba"), who("dan@corp.example", identity.Human, "dev", "dba"),
			who("alice@corp.example", identity.Human, "prod"), who("alice@corp.example", identity.Human, "dev"),
			who("carl@corp.example", identity.Human, "prod", "compliance"), gold, bot,
		}
	}
	sm, sa := sessions(), sessions()
	for p, text := range memoPolicies {
		if text == "" {
			e.Set(mustParse(t, string(defaultPolicyText)))
		} else {
			e.Set(mustParse(t, text))
		}
		open := func(g *gate.Gate, ss []*gate.Session) []bool {
			ok := make([]bool, len(ss))
			for i, s := range ss {
				s.AccessLevel, s.UpstreamRole = "", ""
				d, err := g.OpenSession(ctx, s)
				ok[i] = err == nil && d.Action == gate.Allow
			}
			return ok
		}
		clock = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		sm[6].Options["gatehouse.purpose"], sa[6].Options["gatehouse.purpose"] = "incident-7", "incident-7"
		okm, oka := open(memo, sm), open(asks, sa)
		asked := 0
		for round := range 4 {
			switch round {
			case 2:
				clock = clock.AddDate(5, 0, 0)
			case 3:
				sm[6].Options["gatehouse.purpose"], sa[6].Options["gatehouse.purpose"] = "routine", "routine"
			}
			for i := range sm {
				if okm[i] != oka[i] {
					t.Fatalf("policy %d: session %d opened differently", p, i)
				}
				if !okm[i] {
					continue
				}
				for k := range memoCorpus {
					sql := memoCorpus[(k+round*17)%len(memoCorpus)] // every statement, in a new order each round
					for _, via := range []gate.Via{gate.ViaQuery, gate.ViaParse} {
						cm, ca := memo.Check(ctx, sm[i], sql, via), asks.Check(ctx, sa[i], sql, via)
						if cm.Decision != ca.Decision || fmt.Sprint(cm.Denied) != fmt.Sprint(ca.Denied) {
							t.Fatalf("policy %d, round %d, %s on %s via %s:\nremembered %+v\n     fresh %+v",
								p, round, sm[i].Identity.Subject, sm[i].Target.Name, via, cm.Decision, ca.Decision)
						}
					}
				}
			}
			if round == 0 {
				asked = cnt.n
			}
			if round == 1 && p < 2 && cnt.n != asked {
				t.Fatalf("policy %d: the second round asked the policy %d more times, want 0", p, cnt.n-asked)
			}
		}
	}
}
