package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// who builds a session for subject of kind with groups on a target in env.
func who(subject string, kind identity.Kind, env string, groups ...string) *gate.Session {
	return &gate.Session{
		ID:       "s1",
		Identity: &identity.Identity{Subject: subject, Kind: kind, Groups: groups, AuthMethod: "token"},
		Target:   &config.Target{Name: env + "-db", Environment: env, Engine: "postgres", Labels: map[string]string{"team": "payments"}},
		Options:  map[string]string{},
	}
}

func stmt(kind string, cat inspect.Category) *inspect.Statement {
	return &inspect.Statement{Kind: kind, Category: cat, Redacted: kind + " ..."}
}

func newEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse("policy.yaml", []byte(text))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return p
}

func decide(e *Engine, s *gate.Session, st *inspect.Statement, sensitive ...string) gate.Decision {
	return e.Decide(context.Background(), gate.Input{Session: s, Statement: st, Via: gate.ViaQuery, Now: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), SensitiveClasses: sensitive})
}

func TestDefaultGrants(t *testing.T) {
	e := newEngine(t)
	cases := []struct {
		name  string
		s     *gate.Session
		level string // "" means denied
	}{
		{"human dev", who("alice@corp.example", identity.Human, "dev"), "write"},
		{"human staging", who("alice@corp.example", identity.Human, "staging"), "write"},
		{"human prod", who("alice@corp.example", identity.Human, "prod"), "read"},
		{"human Production", who("alice@corp.example", identity.Human, "Production"), "read"},
		{"service dev", who("billing", identity.Service, "dev"), "write"},
		{"service prod", who("billing", identity.Service, "production"), "read"},
		{"agent dev", who("copilot", identity.Agent, "dev"), "read"},
		{"agent prod", who("copilot", identity.Agent, "prod"), "read"},
		{"dba prod", who("dan@corp.example", identity.Human, "prod", "dba"), "admin"},
		{"dba agent prod", who("bot", identity.Agent, "prod", "dba"), "admin"},
		{"unknown kind", who("mystery", identity.Kind("robot"), "dev"), ""},
		{"empty subject", who("", identity.Human, "dev"), ""},
		{"no identity", &gate.Session{Target: &config.Target{Name: "x", Environment: "dev"}}, ""},
		{"no target", &gate.Session{Identity: &identity.Identity{Subject: "a", Kind: identity.Human}}, ""},
		{"nil session parts", &gate.Session{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.Access(context.Background(), c.s)
			if c.level == "" {
				if d.Action != gate.Deny || d.Rule != RuleNoGrant || d.Message == "" || d.Level != "" {
					t.Fatalf("want no-grant deny, got %+v", d)
				}
				// Statements from such a session are refused too.
				if d := decide(e, c.s, stmt("SELECT", inspect.Read)); d.Action != gate.Deny || d.Rule != RuleNoGrant {
					t.Fatalf("statement: want no-grant deny, got %+v", d)
				}
				return
			}
			if d.Action != gate.Allow || d.Level != c.level {
				t.Fatalf("want allow at %s, got %+v", c.level, d)
			}
		})
	}
}

func TestGrantSelectors(t *testing.T) {
	p := mustParse(t, `
grants:
  - name: corp-read
    subjects: ["*@corp.example"]
    targets: ["prod-*"]
    level: read
  - name: payments-write
    groups: [payments, billing]
    labels: {team: payments}
    level: write
  - name: oncall-admin
    kinds: [human]
    environments: [prod]
    when: identity.claims["oncall"] == true && session.purpose.startsWith("incident-")
    level: admin
`)
	e := newEngine(t)
	e.Set(p)
	level := func(s *gate.Session) string { return e.Access(context.Background(), s).Level }

	s := who("Alice@CORP.example", identity.Human, "prod")
	if got := level(s); got != "read" {
		t.Fatalf("subject glob (case-insensitive) on prod-db: got %q", got)
	}
	s = who("alice@corp.example.evil", identity.Human, "prod")
	if got := level(s); got != "" {
		t.Fatalf("glob must anchor at the end: got %q", got)
	}
	s = who("alice@corp.example", identity.Human, "dev")
	if got := level(s); got != "" {
		t.Fatalf("target glob prod-* must not match dev-db: got %q", got)
	}
	s = who("bob@else.example", identity.Service, "dev", "billing")
	if got := level(s); got != "write" {
		t.Fatalf("group + label: got %q", got)
	}
	s.Target.Labels = map[string]string{"team": "search"}
	if got := level(s); got != "" {
		t.Fatalf("label mismatch must not match: got %q", got)
	}
	s = who("carol@corp.example", identity.Human, "prod")
	s.Identity.Claims = map[string]any{"oncall": true}
	s.Options["gatehouse.purpose"] = "incident-42"
	if d := e.Access(context.Background(), s); d.Level != "admin" || d.Rule != "oncall-admin" {
		t.Fatalf("CEL grant: got %+v", d)
	}
	// A missing claim is an evaluation error: the grant does not match (fail closed), the
	// weaker grant still does.
	s.Identity.Claims = nil
	if d := e.Access(context.Background(), s); d.Level != "read" || d.Rule != "corp-read" {
		t.Fatalf("CEL grant with missing claim: got %+v", d)
	}
}

func TestLevelEnforcement(t *testing.T) {
	e := newEngine(t)
	read := who("alice@corp.example", identity.Human, "prod")
	write := who("alice@corp.example", identity.Human, "dev")
	admin := who("dan@corp.example", identity.Human, "dev", "dba")
	cases := []struct {
		s      *gate.Session
		st     *inspect.Statement
		action gate.Action
		rule   string
	}{
		{read, stmt("SELECT", inspect.Read), gate.Allow, RuleDefault},
		{read, stmt("BEGIN", inspect.Transaction), gate.Allow, RuleDefault},
		{read, stmt("COMMIT", inspect.Transaction), gate.Allow, RuleDefault},
		{read, stmt("SET", inspect.SessionCat), gate.Allow, RuleDefault},
		{read, &inspect.Statement{Kind: "INSERT", Category: inspect.Write}, gate.Deny, RuleAccessLevel},
		{read, &inspect.Statement{Kind: "UPDATE", Category: inspect.Write, HasWhere: true}, gate.Deny, RuleAccessLevel},
		{read, stmt("CREATE TABLE", inspect.DDL), gate.Deny, RuleAccessLevel},
		{read, stmt("GRANT", inspect.Admin), gate.Deny, RuleAccessLevel},
		{read, stmt("SET ROLE", inspect.SessionCat), gate.Deny, RuleAccessLevel},
		{read, stmt("DO", inspect.Unknown), gate.Deny, RuleUnknown},
		{read, stmt("", ""), gate.Deny, RuleUnknown},
		{write, &inspect.Statement{Kind: "INSERT", Category: inspect.Write}, gate.Allow, RuleDefault},
		{write, &inspect.Statement{Kind: "DELETE", Category: inspect.Write, HasWhere: true}, gate.Allow, RuleDefault},
		// Outside production write access covers development work (issue 12).
		{write, stmt("CREATE TABLE", inspect.DDL), gate.Allow, "development-outside-production"},
		{write, stmt("VACUUM", inspect.Admin), gate.Allow, "development-outside-production"},
		{write, stmt("CALL", inspect.Unknown), gate.Allow, "development-outside-production"},
		{write, &inspect.Statement{Kind: "CREATE ROLE", Category: inspect.Admin, ObjectType: "role"}, gate.Deny, RuleAccessLevel},
		{write, stmt("ALTER SYSTEM", inspect.Admin), gate.Deny, RuleAccessLevel},
		{write, stmt("ROLLBACK", inspect.Transaction), gate.Allow, RuleDefault},
		{admin, stmt("CREATE TABLE", inspect.DDL), gate.Allow, RuleDefault},
		{admin, stmt("VACUUM", inspect.Admin), gate.Allow, RuleDefault},
		{admin, stmt("DO", inspect.Unknown), gate.Allow, RuleDefault},
		{admin, stmt("DROP TABLE", inspect.DDL), gate.Allow, RuleDefault}, // not production
	}
	for i, c := range cases {
		d := decide(e, c.s, c.st)
		if d.Action != c.action || d.Rule != c.rule {
			t.Errorf("case %d (%s as %s): got %s/%s (%s), want %s/%s", i, c.st.Kind, e.Access(context.Background(), c.s).Level, d.Action, d.Rule, d.Message, c.action, c.rule)
		}
		if d.Action == gate.Deny && d.Message == "" {
			t.Errorf("case %d: deny without a message", i)
		}
	}
	// The session's own level is a ceiling: a session opened at read stays read even though
	// the identity's grant is write.
	w := who("alice@corp.example", identity.Human, "dev")
	w.AccessLevel = "read"
	if d := decide(e, w, &inspect.Statement{Kind: "INSERT", Category: inspect.Write}); d.Rule != RuleAccessLevel || d.Level != "read" {
		t.Fatalf("session level ceiling: got %+v", d)
	}
	if d := decide(e, w, stmt("SELECT", inspect.Read)); d.Action != gate.Allow || d.Level != "read" {
		t.Fatalf("got %+v", d)
	}
}

func TestUnknownNeedsExplicitAllow(t *testing.T) {
	p := mustParse(t, `
grants:
  - subjects: ["*"]
    level: read
rules:
  - name: reporting-procedure
    when: statement.kind == "CALL" && session.application_name == "reports"
    action: allow
    allow_unknown: true
  - name: agents-capped
    when: identity.kind == "agent"
    action: allow
    max_rows: 500
  - name: no-do
    when: statement.kind == "DO"
    action: deny
    message: no anonymous code blocks
`)
	e := newEngine(t)
	e.Set(p)
	s := who("r@corp.example", identity.Human, "prod")
	s.ApplicationName = "reports"
	if d := decide(e, s, stmt("CALL", inspect.Unknown)); d.Action != gate.Allow || d.Rule != "reporting-procedure" {
		t.Fatalf("explicit allow_unknown: got %+v", d)
	}
	s.ApplicationName = "psql"
	if d := decide(e, s, stmt("CALL", inspect.Unknown)); d.Action != gate.Deny || d.Rule != RuleUnknown {
		t.Fatalf("no rule: got %+v", d)
	}
	if d := decide(e, s, stmt("DO", inspect.Unknown)); d.Action != gate.Deny || d.Rule != "no-do" || d.Message != "no anonymous code blocks" {
		t.Fatalf("deny rule message wins over the generic refusal: got %+v", d)
	}
	a := who("bot", identity.Agent, "prod")
	if d := decide(e, a, stmt("CALL", inspect.Unknown)); d.Action != gate.Deny || d.Rule != RuleUnknown {
		t.Fatalf("a generic allow rule must not let unknown statements through: got %+v", d)
	}
	if d := decide(e, a, stmt("SELECT", inspect.Read)); d.Action != gate.Allow || d.MaxRows != 500 || d.Rule != "agents-capped" {
		t.Fatalf("max_rows: got %+v", d)
	}
}

// TestMaxAffectedRows: a rule's max_affected_rows, else the defaults', reaches the decision;
// it is refused on rules that do not allow.
func TestMaxAffectedRows(t *testing.T) {
	p := mustParse(t, `
defaults:
  max_affected_rows: 50
grants:
  - subjects: ["*"]
    level: write
rules:
  - name: deletes-capped
    when: statement.kind == "DELETE"
    action: allow
    max_affected_rows: 10
  - name: updates-plain
    when: statement.kind == "UPDATE"
    action: allow
`)
	e := newEngine(t)
	e.Set(p)
	s := who("w@corp.example", identity.Human, "dev")
	write := func(kind string) *inspect.Statement {
		return &inspect.Statement{Kind: kind, Category: inspect.Write, HasWhere: true}
	}
	if d := decide(e, s, write("DELETE")); d.Action != gate.Allow || d.MaxAffectedRows != 10 || d.Rule != "deletes-capped" {
		t.Fatalf("rule limit: got %+v", d)
	}
	if d := decide(e, s, write("UPDATE")); d.MaxAffectedRows != 50 || d.Rule != "updates-plain" {
		t.Fatalf("defaults under a rule without one: got %+v", d)
	}
	if d := decide(e, s, write("INSERT")); d.MaxAffectedRows != 50 || d.Rule != RuleDefault {
		t.Fatalf("defaults when no rule matches: got %+v", d)
	}
	_, err := Parse("policy.yaml", []byte(`
grants: [{subjects: ["*"], level: write}]
rules:
  - name: d
    when: "true"
    action: deny
    max_affected_rows: 5
`))
	if err == nil || !strings.Contains(err.Error(), "max_affected_rows only applies to allow rules") {
		t.Fatalf("max_affected_rows on a deny rule: %v", err)
	}
}

// TestDefaultPolicyCapsProductionWrites: the built-in policy caps UPDATE/DELETE/MERGE in
// production for sessions below admin (a policy that grants them write there) and leaves
// admins and other environments alone.
func TestDefaultPolicyCapsProductionWrites(t *testing.T) {
	text := strings.Replace(string(DefaultText()), "grants:\n", "grants:\n  - {name: prod-writer, subjects: [w@corp.example], level: write}\n", 1)
	p, err := Parse("default.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	e.Set(p)
	del := &inspect.Statement{Kind: "DELETE", Category: inspect.Write, HasWhere: true}
	for _, kind := range []string{"UPDATE", "DELETE", "MERGE"} {
		st := &inspect.Statement{Kind: kind, Category: inspect.Write, HasWhere: true}
		if d := decide(e, who("w@corp.example", identity.Human, "prod"), st); d.Action != gate.Allow || d.MaxAffectedRows != 1000 || d.Rule != "production-writes-capped" {
			t.Fatalf("%s by a production writer: got %+v", kind, d)
		}
	}
	ins := &inspect.Statement{Kind: "INSERT", Category: inspect.Write}
	if d := decide(e, who("w@corp.example", identity.Human, "prod"), ins); d.Action != gate.Allow || d.MaxAffectedRows != 0 {
		t.Fatalf("INSERT by a production writer: got %+v", d)
	}
	dba := who("dba@corp.example", identity.Human, "prod", "dba")
	if d := decide(e, dba, del); d.Action != gate.Allow || d.MaxAffectedRows != 0 {
		t.Fatalf("admin in production: got %+v", d)
	}
	dev := who("w@corp.example", identity.Human, "dev")
	if d := decide(e, dev, del); d.Action != gate.Allow || d.MaxAffectedRows != 0 {
		t.Fatalf("writer outside production: got %+v", d)
	}
}

func TestFirstMatchWins(t *testing.T) {
	p := mustParse(t, `
defaults:
  action: deny
  message: only listed statements run here
grants:
  - subjects: ["*"]
    level: write
masking:
  profiles:
    support:
      raw: [email, phone]
rules:
  - name: incident-raw
    when: session.purpose_tags.exists(t, t.startsWith("incident-")) && statement.category == "read"
    action: allow
    mask: none
  - name: support-reads
    when: statement.category == "read" && "support" in identity.groups
    action: allow
    mask: support
    max_rows: 100
  - name: reads
    when: statement.category == "read"
    action: allow
  - name: all-writes-held
    when: statement.category == "write"
    action: require_approval
  - name: never-reached
    when: statement.category == "write"
    action: allow
`)
	if pr, ok := p.MaskProfile("support"); !ok || !pr.ShowsRaw("email") || pr.ShowsRaw("ssn") || pr.Strategies != nil {
		t.Fatalf("support profile: %+v", pr)
	}
	e := newEngine(t)
	e.Set(p)
	s := who("s@corp.example", identity.Human, "dev", "support")
	d := decide(e, s, stmt("SELECT", inspect.Read))
	if d.Rule != "support-reads" || d.MaskProfile != "support" || d.MaxRows != 100 {
		t.Fatalf("got %+v", d)
	}
	s.Options["gatehouse.purpose"] = "debugging, incident-7"
	if d := decide(e, s, stmt("SELECT", inspect.Read)); d.Rule != "incident-raw" || d.MaskProfile != "none" || d.MaxRows != 0 {
		t.Fatalf("earlier rule must win: got %+v", d)
	}
	if d := decide(e, who("x@corp.example", identity.Human, "dev"), stmt("SELECT", inspect.Read)); d.Rule != "reads" || d.MaskProfile != "" {
		t.Fatalf("got %+v", d)
	}
	d = decide(e, s, &inspect.Statement{Kind: "INSERT", Category: inspect.Write})
	if d.Action != gate.RequireApproval || d.Rule != "all-writes-held" || d.Message != approvalMessage {
		t.Fatalf("got %+v", d)
	}
	d = decide(e, s, stmt("BEGIN", inspect.Transaction))
	if d.Action != gate.Deny || d.Rule != RuleDefault || d.Message != "only listed statements run here" {
		t.Fatalf("default deny: got %+v", d)
	}
	pr, ok := e.MaskProfile("support")
	if !ok || !pr.ShowsRaw("email") || pr.ShowsRaw("card") {
		t.Fatalf("profile: %+v %v", pr, ok)
	}
	x := e.Explain(context.Background(), s, &inspect.Statement{Kind: "INSERT", Category: inspect.Write})
	var names []string
	for _, r := range x.Evaluated {
		names = append(names, fmt.Sprintf("%s=%v", r.Name, r.Matched))
	}
	if got := strings.Join(names, " "); got != "incident-raw=false support-reads=false reads=false all-writes-held=true" {
		t.Fatalf("evaluated: %s", got)
	}
}

func TestDefaultPolicyGuardrails(t *testing.T) {
	e := newEngine(t)
	dbaProd := who("dan@corp.example", identity.Human, "prod", "dba")
	dbaDev := who("dan@corp.example", identity.Human, "dev", "dba")
	devHuman := who("alice@corp.example", identity.Human, "dev")
	prodHuman := who("alice@corp.example", identity.Human, "prod")
	cases := []struct {
		name      string
		s         *gate.Session
		st        *inspect.Statement
		sensitive []string
		action    gate.Action
		rule      string
	}{
		{"drop table prod", dbaProd, stmt("DROP TABLE", inspect.DDL), nil, gate.Deny, "no-drop-or-truncate-in-production"},
		{"drop schema prod", dbaProd, stmt("DROP SCHEMA", inspect.DDL), nil, gate.Deny, "no-drop-or-truncate-in-production"},
		{"truncate prod", dbaProd, &inspect.Statement{Kind: "TRUNCATE", Category: inspect.Write, TablesWritten: []string{"users"}}, nil, gate.Deny, "no-drop-or-truncate-in-production"},
		{"drop table dev", dbaDev, stmt("DROP TABLE", inspect.DDL), nil, gate.Allow, RuleDefault},
		{"truncate dev", devHuman, &inspect.Statement{Kind: "TRUNCATE", Category: inspect.Write}, nil, gate.Allow, RuleDefault},
		{"create table prod", dbaProd, stmt("CREATE TABLE", inspect.DDL), nil, gate.RequireApproval, "production-schema-changes-need-approval"},
		{"alter table prod", dbaProd, stmt("ALTER TABLE", inspect.DDL), nil, gate.RequireApproval, "production-schema-changes-need-approval"},
		{"create index dev", dbaDev, stmt("CREATE INDEX", inspect.DDL), nil, gate.Allow, RuleDefault},
		{"delete without where", dbaProd, &inspect.Statement{Kind: "DELETE", Category: inspect.Write}, nil, gate.Deny, "no-update-or-delete-without-where"},
		{"update without where", dbaProd, &inspect.Statement{Kind: "UPDATE", Category: inspect.Write}, nil, gate.Deny, "no-update-or-delete-without-where"},
		{"delete without where in dev", devHuman, &inspect.Statement{Kind: "DELETE", Category: inspect.Write}, nil, gate.Allow, RuleDefault},
		{"update without where in dev", devHuman, &inspect.Statement{Kind: "UPDATE", Category: inspect.Write}, nil, gate.Allow, RuleDefault},
		{"delete without where as dba in prod", dbaProd, &inspect.Statement{Kind: "DELETE", Category: inspect.Write}, nil, gate.Deny, "no-update-or-delete-without-where"},
		{"delete with where", devHuman, &inspect.Statement{Kind: "DELETE", Category: inspect.Write, HasWhere: true}, nil, gate.Allow, RuleDefault},
		{"export sensitive prod", prodHuman, &inspect.Statement{Kind: "COPY", Category: inspect.Read, Export: true, TablesRead: []string{"public.users"}}, []string{"email"}, gate.RequireApproval, "production-sensitive-export-needs-approval"},
		{"export plain prod", prodHuman, &inspect.Statement{Kind: "COPY", Category: inspect.Read, Export: true, TablesRead: []string{"public.stats"}}, nil, gate.Allow, RuleDefault},
		{"export sensitive dev", devHuman, &inspect.Statement{Kind: "COPY", Category: inspect.Read, Export: true}, []string{"email"}, gate.Allow, RuleDefault},
		{"select sensitive prod", prodHuman, &inspect.Statement{Kind: "SELECT", Category: inspect.Read}, []string{"email"}, gate.Allow, RuleDefault},
		{"set role dba", dbaDev, stmt("SET ROLE", inspect.SessionCat), nil, gate.Deny, "no-role-change"},
		{"reset role dba", dbaDev, stmt("RESET ROLE", inspect.SessionCat), nil, gate.Deny, "no-role-change"},
		{"set session authorization dba", dbaDev, stmt("SET SESSION AUTHORIZATION", inspect.SessionCat), nil, gate.Deny, "no-role-change"},
		{"discard all dba", dbaDev, &inspect.Statement{Kind: "DISCARD", Category: inspect.SessionCat, Text: "discard all"}, nil, gate.Deny, "no-role-change"},
		{"discard plans reader", prodHuman, &inspect.Statement{Kind: "DISCARD", Category: inspect.SessionCat, Text: "DISCARD PLANS"}, nil, gate.Allow, RuleDefault},
		{"discard all reader", prodHuman, &inspect.Statement{Kind: "DISCARD", Category: inspect.SessionCat, Text: "DISCARD ALL"}, nil, gate.Deny, RuleAccessLevel},
		{"set_config role dba", dbaDev, &inspect.Statement{Kind: "SET ROLE", Category: inspect.Admin, Setting: "role", Functions: []string{"set_config"}}, nil, gate.Deny, "no-role-change"},
		{"set_config computed name dba", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Unknown, Functions: []string{"pg_catalog.set_config"}}, nil, gate.Deny, "no-role-change"},
		{"set_config search_path dba", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Setting: "search_path", Functions: []string{"set_config"}}, nil, gate.Allow, RuleDefault},
		{"set_config search_path reader", prodHuman, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Setting: "search_path", Functions: []string{"set_config"}}, nil, gate.Deny, RuleAccessLevel},
		{"set role filed as session by mistake", prodHuman, &inspect.Statement{Kind: "SET", Category: inspect.SessionCat, Setting: "role"}, nil, gate.Deny, RuleAccessLevel},
		{"ordinary SET reader", prodHuman, &inspect.Statement{Kind: "SET", Category: inspect.SessionCat, Setting: "search_path"}, nil, gate.Allow, RuleDefault},
		{"pg_read_file", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Functions: []string{"pg_read_file"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"qualified pg_ls_dir", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Functions: []string{"now", "pg_catalog.pg_ls_dir"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"lo_export", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Functions: []string{"lo_export"}, Export: true}, nil, gate.Deny, "no-dangerous-functions"},
		{"lo_import", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Admin, Functions: []string{"lo_import"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"dblink in another schema", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Unknown, Functions: []string{"public.dblink"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"query_to_xml runs hidden sql", dbaDev, &inspect.Statement{Kind: "SELECT", Category: inspect.Read, Functions: []string{"query_to_xml"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"table_to_xml reads a table by name", devHuman, &inspect.Statement{Kind: "SELECT", Category: inspect.Read, Functions: []string{"table_to_xml"}}, nil, gate.Deny, "no-dangerous-functions"},
		{"copy to program", dbaDev, &inspect.Statement{Kind: "COPY", Category: inspect.Admin, Export: true, Program: true}, nil, gate.Deny, "no-dangerous-functions"},
		{"copy from program", dbaDev, &inspect.Statement{Kind: "COPY", Category: inspect.Admin, Program: true}, nil, gate.Deny, "no-dangerous-functions"},
		{"copy from server file", dbaDev, &inspect.Statement{Kind: "COPY", Category: inspect.Admin, ServerFile: true}, nil, gate.Deny, "no-dangerous-functions"},
		{"copy to stdout", dbaDev, &inspect.Statement{Kind: "COPY", Category: inspect.Read, Export: true, Redacted: "COPY programs TO STDOUT"}, nil, gate.Allow, RuleDefault},
		{"update where true", dbaProd, &inspect.Statement{Kind: "UPDATE", Category: inspect.Write, HasWhere: true, WhereTrivial: true}, nil, gate.Deny, "no-update-or-delete-without-where"},
		{"delete where 1=1 as dba", dbaProd, &inspect.Statement{Kind: "DELETE", Category: inspect.Write, HasWhere: true, WhereTrivial: true}, nil, gate.Deny, "no-update-or-delete-without-where"},
		{"delete where 1=1 as dba in dev", dbaDev, &inspect.Statement{Kind: "DELETE", Category: inspect.Write, HasWhere: true, WhereTrivial: true}, nil, gate.Allow, RuleDefault},
		{"plain select", prodHuman, &inspect.Statement{Kind: "SELECT", Category: inspect.Read, Functions: []string{"now", "lower"}}, nil, gate.Allow, RuleDefault},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := decide(e, c.s, c.st, c.sensitive...)
			if d.Action != c.action || d.Rule != c.rule {
				t.Fatalf("got %s/%s (%s), want %s/%s", d.Action, d.Rule, d.Message, c.action, c.rule)
			}
			if d.Action != gate.Allow && d.Message == "" {
				t.Fatal("refusal without a message")
			}
			if d.Action == gate.RequireApproval && strings.Contains(d.Message, "not available") {
				t.Fatalf("approval message must not say approvals are unavailable (the gate files requests): %q", d.Message)
			}
		})
	}
}

func TestDefaultMasking(t *testing.T) {
	e := newEngine(t)
	sel := &inspect.Statement{Kind: "SELECT", Category: inspect.Read, TablesRead: []string{"public.users"}}
	if d := decide(e, who("alice@corp.example", identity.Human, "prod"), sel, "email"); d.Action != gate.Allow || d.MaskProfile != "" {
		t.Fatalf("everyone else gets the default (masking) profile: %+v", d)
	}
	if d := decide(e, who("carl@corp.example", identity.Human, "prod", "compliance"), sel, "email"); d.Action != gate.Allow || d.MaskProfile != "none" {
		t.Fatalf("compliance sees raw values: %+v", d)
	}
	if d := decide(e, who("dan@corp.example", identity.Human, "prod", "dba"), sel, "email"); d.MaskProfile != "" {
		t.Fatalf("dba is masked too: %+v", d)
	}
	if p, _ := e.MaskProfile(""); p.ShowsRaw("email") {
		t.Fatal("default profile must mask")
	}
	if p, _ := e.MaskProfile("none"); !p.ShowsRaw("ssn") {
		t.Fatal("none must show raw")
	}
}

func TestOverrides(t *testing.T) {
	p := mustParse(t, `
grants: [{subjects: ["*"], level: read}]
overrides:
  shop.orders.order_number: none
  Public.Users.Contact: email
`)
	got := p.Overrides()
	if got["shop.orders.order_number"] != "none" || got["public.users.contact"] != "email" || len(got) != 2 {
		t.Fatalf("overrides: %v", got)
	}
	got["x.y.z"] = "ssn"
	if len(p.Overrides()) != 2 {
		t.Fatal("Overrides must return a copy")
	}
	e := newEngine(t)
	if len(e.Overrides()) != 0 {
		t.Fatal("default policy has no overrides")
	}
}

// errLines returns "line: field" for every error, in order.
func parseErrors(t *testing.T, text string) []*config.FieldError {
	t.Helper()
	_, err := Parse("policy.yaml", []byte(text))
	if err == nil {
		t.Fatal("want an error")
	}
	var out []*config.FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *config.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("not a FieldError: %v", err)
		}
		out = append(out, fe)
	}
	walk(err)
	return out
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string // "line field substring"
	}{
		{"cel syntax error with file line", `
grants:
  - subjects: ["*"]
    level: read
rules:
  - name: ok
    when: statement.kind == "DELETE"
    action: deny
  - name: broken
    when: statement.kind == = "DELETE"
    action: deny
`, []string{`policy.yaml:10: rules[1].when: Syntax error`}},
		{"unknown statement field", `
grants: [{subjects: ["*"], level: read}]
rules:
  - name: typo
    when: statement.kinnd == "DELETE"
    action: deny
`, []string{`policy.yaml:5: rules[0].when: undefined field 'kinnd'`}},
		{"error on third line of a block expression", `
grants: [{subjects: ["*"], level: read}]
rules:
  - name: multi
    when: |
      target.production &&
      statement.category == "ddl" &&
      identity.grops.exists(g, g == "x")
    action: deny
`, []string{`policy.yaml:8: rules[0].when: undefined field 'grops'`}},
		{"statement in a grant", `
grants:
  - subjects: ["*"]
    when: statement.kind == "SELECT"
    level: read
`, []string{`policy.yaml:4: grants[0].when: undeclared reference to 'statement'`}},
		{"not a condition", `
grants: [{subjects: ["*"], level: read}]
rules:
  - name: str
    when: statement.kind
    action: deny
`, []string{`policy.yaml:5: rules[0].when: must be a condition`}},
		{"whole object", `
grants: [{subjects: ["*"], level: read}]
rules:
  - name: obj
    when: identity == identity
    action: deny
`, []string{
			`policy.yaml:5: rules[0].when: identity can only be used through one of its fields, e.g. identity.subject (expression line 1, column 1)`,
			`policy.yaml:5: rules[0].when: identity can only be used through one of its fields, e.g. identity.subject (expression line 1, column 13)`,
		}},
		{"unknown fields", `
grants:
  - subjects: ["*"]
    levle: read
rules:
  - name: a
    when: "true"
    acton: deny
colour: blue
`, []string{
			`policy.yaml:4: grants[0].levle: unknown field; valid fields are environments, groups, kinds, labels, level, name, production, subjects, targets, when`,
			`policy.yaml:3: grants[0].level: is required`,
			`policy.yaml:8: rules[0].acton: unknown field; valid fields are action, allow_unknown, covers, mask, max_affected_rows, max_rows, message, name, when`,
			`policy.yaml:6: rules[0].action: is required`,
			`policy.yaml:9: colour: unknown field; valid fields are defaults, grants, masking, overrides, rules, version`,
		}},
		{"duplicates and bad values", `
grants:
  - subjects: ["*"]
    level: superuser
  - kinds: [robot]
    level: read
rules:
  - name: same
    when: "true"
    action: allow
  - name: same
    when: "true"
    action: block
  - name: capped
    when: "true"
    action: deny
    max_rows: 10
  - name: masked
    when: "true"
    action: allow
    mask: secret
  - name: neg
    when: "true"
    action: allow
    max_rows: -1
`, []string{
			`policy.yaml:4: grants[0].level: "superuser" is not an access level, expected read, write or admin`,
			`policy.yaml:5: grants[1].kinds[0]: "robot" is not an identity kind`,
			`policy.yaml:11: rules[1].name: "same" is already used by the rule at line 8`,
			`policy.yaml:13: rules[1].action: "block" is not an action, expected allow, deny or require_approval`,
			`policy.yaml:14: rules[2]: max_rows and mask only apply to allow rules`,
			`policy.yaml:21: rules[3].mask: "secret" is not a masking profile, expected default, none`,
			`policy.yaml:25: rules[4].max_rows: expected a whole number`,
		}},
		{"profile strategies", `
grants: [{subjects: ["*"], level: read}]
masking:
  profiles:
    support:
      raw: [email]
      strategies:
        ssn: hash
        card: shred
        phone: raw
        "a.b": redact
        "*": null
`, []string{
			`policy.yaml:9: masking.profiles.support.strategies.card: "shred" is not a strategy, expected partial, hash, redact, null`,
			`policy.yaml:10: masking.profiles.support.strategies.phone: list the classes shown raw under raw`,
			`policy.yaml:11: masking.profiles.support.strategies.a.b: "a.b" is not a class`,
		}},
		{"no grants", `
rules: []
`, []string{`policy.yaml: grants: is required`}},
		{"grant naming nobody", `
grants:
  - targets: ["*"]
    level: read
`, []string{`policy.yaml:3: grants[0]: names nobody`}},
		{"bad yaml", "grants: [\n", []string{`policy.yaml: not valid YAML`}},
		{"masking and overrides", `
grants: [{subjects: ["*"], level: read}]
masking:
  default: hidden
  profiles:
    none: {raw: [email]}
  raw_access:
    - groups: [x]
overrides:
  users.email: email
  a.b.c: "two words"
defaults:
  action: require_approval
`, []string{
			`policy.yaml:4: masking.default: "hidden" is not a masking profile`,
			`policy.yaml:6: masking.profiles.none: "none" is built in`,
			`policy.yaml:8: masking.raw_access[0].profile: is required`,
			`policy.yaml:10: overrides.users.email: expected schema.table.column`,
			`policy.yaml:11: overrides.a.b.c: "two words" is not a class`,
			`policy.yaml:13: defaults.action: "require_approval" is not an action, expected allow or deny`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := parseErrors(t, c.text)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			all := strings.Join(got, "\n")
			for _, w := range c.want {
				found := false
				for _, g := range got {
					if strings.HasPrefix(g, w) || strings.Contains(g, w) && strings.HasPrefix(g, w[:strings.Index(w, ": ")+2]) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing error %q in:\n%s", w, all)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("got %d errors, want %d:\n%s", len(got), len(c.want), all)
			}
		})
	}
}

func TestDefaultPolicyTextParses(t *testing.T) {
	p, err := Parse("default.yaml", DefaultText())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"no-role-change", "no-dangerous-functions", "no-drop-or-truncate-in-production",
		"production-schema-changes-need-approval", "production-opaque-code-needs-approval", "no-update-or-delete-without-where",
		"production-sensitive-export-needs-approval", "development-outside-production", "production-writes-capped"}
	if got := strings.Join(p.RuleNames(), ","); got != strings.Join(want, ",") {
		t.Fatalf("rules: %s", got)
	}
}

func TestRuntimeErrorsFailClosed(t *testing.T) {
	p := mustParse(t, `
grants: [{subjects: ["*"], level: write}]
rules:
  - name: trusted-team-allowed
    when: identity.claims["team"] == "trusted"
    action: allow
    mask: none
  - name: block-unless-cleared
    when: identity.claims["cleared"] != true
    action: deny
    message: not cleared
`)
	e := newEngine(t)
	e.Set(p)
	s := who("x@corp.example", identity.Human, "dev") // no claims: both conditions fail to evaluate
	if d := decide(e, s, stmt("SELECT", inspect.Read)); d.Action != gate.Deny || d.Rule != "block-unless-cleared" {
		t.Fatalf("an allow rule that errors must not match, a deny rule that errors must: %+v", d)
	}
	x := e.Explain(context.Background(), s, stmt("SELECT", inspect.Read))
	if len(x.Evaluated) != 2 || x.Evaluated[0].Error == "" || x.Evaluated[0].Matched || !x.Evaluated[1].Matched {
		t.Fatalf("explanation: %+v", x.Evaluated)
	}
	s.Identity.Claims = map[string]any{"team": "trusted", "cleared": true}
	if d := decide(e, s, stmt("SELECT", inspect.Read)); d.Action != gate.Allow || d.MaskProfile != "none" {
		t.Fatalf("%+v", d)
	}
	s.Identity.Claims = map[string]any{"team": "other", "cleared": true}
	if d := decide(e, s, &inspect.Statement{Kind: "INSERT", Category: inspect.Write}); d.Action != gate.Allow || d.Rule != RuleDefault {
		t.Fatalf("%+v", d)
	}
}

func TestCELVariables(t *testing.T) {
	// Every documented field compiles and reads the right fact.
	p := mustParse(t, `
grants: [{subjects: ["*"], level: admin}]
rules:
  - name: all-facts
    when: >-
      identity.subject == "a@corp.example" && identity.kind == "human" && "ops" in identity.groups &&
      identity.claims["tenant"] == "t1" && identity.auth_method == "oidc" && identity.issuer == "https://idp" &&
      target.name == "prod-db" && target.environment == "prod" && target.production && target.engine == "postgres" &&
      target.labels["team"] == "payments" &&
      statement.kind == "COPY" && statement.category == "read" && statement.object_type == "" &&
      statement.tables == ["public.a", "public.b"] && statement.tables_read == ["public.a"] &&
      statement.tables_written == ["public.b"] && statement.columns == ["email"] &&
      statement.has_where && !statement.where_trivial && statement.has_limit && statement.export &&
      statement.functions == ["lower"] && statement.functions_qualified == ["pg_catalog.lower"] &&
      statement.text == "COPY (SELECT $1) TO STDOUT" && statement.fingerprint == "fp" && statement.parsed &&
      statement.sensitive_classes == ["email"] && !statement.changes_role &&
      statement.program && !statement.server_file && statement.locking && statement.setting == "work_mem" &&
      statement.prepared_name == "p1" &&
      session.id == "s1" && session.client_addr == "127.0.0.1" && session.application_name == "psql" &&
      session.purpose == "incident-1,audit" && session.purpose_tags == ["incident-1", "audit"] &&
      session.tls && session.database == "app" && session.access_level == "admin" && session.via == "parse" &&
      session.options["gatehouse.purpose"] == "incident-1,audit" &&
      time.getHours() == 10 && time.getDayOfWeek() == 1
    action: deny
    message: all facts seen
`)
	e := newEngine(t)
	e.Set(p)
	s := who("a@corp.example", identity.Human, "prod", "ops")
	s.Identity.Claims = map[string]any{"tenant": "t1"}
	s.Identity.AuthMethod, s.Identity.Issuer = "oidc", "https://idp"
	s.ClientAddr, s.ApplicationName, s.TLS, s.Database = "127.0.0.1", "psql", true, "app"
	s.Options["gatehouse.purpose"] = "incident-1,audit"
	st := &inspect.Statement{Kind: "COPY", Category: inspect.Read, TablesRead: []string{"public.a"}, TablesWritten: []string{"public.b"},
		Columns: []string{"email"}, HasWhere: true, HasLimit: true, Export: true, Functions: []string{"pg_catalog.lower"},
		Text: "COPY (SELECT 'secret') TO STDOUT", Redacted: "COPY (SELECT $1) TO STDOUT", Fingerprint: "fp",
		Program: true, Locking: true, Setting: "work_mem", PreparedName: "p1"}
	d := e.Decide(context.Background(), gate.Input{Session: s, Statement: st, Via: gate.ViaParse,
		Now: time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC), SensitiveClasses: []string{"email"}})
	if d.Rule != "all-facts" {
		x := e.ExplainInput(context.Background(), gate.Input{Session: s, Statement: st, Via: gate.ViaParse,
			Now: time.Date(2026, 11, 23, 10, 30, 0, 0, time.UTC), SensitiveClasses: []string{"email"}})
		t.Fatalf("facts not all seen: %+v %+v", d, x.Evaluated)
	}
	// statement.text is the redacted text: a rule cannot see (or leak) literals.
	p2 := mustParse(t, `
grants: [{subjects: ["*"], level: admin}]
rules:
  - name: literal
    when: statement.text.contains("secret")
    action: deny
`)
	e.Set(p2)
	if d := decide(e, s, st); d.Action != gate.Allow {
		t.Fatalf("statement.text must be the redacted text: %+v", d)
	}
}

func TestExplainFormat(t *testing.T) {
	e := newEngine(t)
	st := &inspect.Statement{Kind: "DELETE", Category: inspect.Write, TablesWritten: []string{"public.users"}, Redacted: "DELETE FROM users", Text: "DELETE FROM users"}
	x := e.Explain(context.Background(), who("dan@corp.example", identity.Human, "prod", "dba"), st)
	if x.Decision.Action != gate.Deny || x.Stage != StageRule || x.Grant != "dba-admin" || x.Level != "admin" {
		t.Fatalf("%+v", x)
	}
	var b bytes.Buffer
	if err := FormatExplanation(&b, x); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"DELETE FROM users", "public.users", "no-update-or-delete-without-where", "MATCH", "DENY", "need a condition that narrows", "built-in default policy", "no-role-change"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Refused at the level check: no rules evaluated.
	x = e.Explain(context.Background(), who("alice@corp.example", identity.Human, "prod"), st)
	if x.Stage != StageLevel || len(x.Evaluated) != 0 || x.Decision.Rule != RuleAccessLevel {
		t.Fatalf("%+v", x)
	}
	b.Reset()
	if err := FormatExplanation(&b, x); err != nil || !strings.Contains(b.String(), "(none)") {
		t.Fatalf("%v %s", err, b.String())
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		p, s string
		ok   bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*c", "abc", true}, {"a*c", "abcd", false},
		{"*@corp.example", "x@corp.example", true}, {"*@corp.example", "x@corp.example.org", false},
		{"prod-?", "prod-1", true}, {"prod-?", "prod-12", false}, {"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false}, {"", "", true}, {"", "a", false}, {"**", "x", true},
	}
	for _, c := range cases {
		if got := glob(c.p, c.s, false); got != c.ok {
			t.Errorf("glob(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

func TestHasGuardsMissingClaims(t *testing.T) {
	e := newEngine(t)
	e.Set(mustParse(t, `
grants:
  - subjects: ["*"]
    level: read
  - subjects: ["*"]
    when: has(identity.claims.oncall) && identity.claims.oncall == true
    level: write
`))
	s := who("a@corp.example", identity.Human, "dev")
	if d := e.Access(context.Background(), s); d.Level != "read" {
		t.Fatalf("%+v", d)
	}
	s.Identity.Claims = map[string]any{"oncall": true}
	if d := e.Access(context.Background(), s); d.Level != "write" {
		t.Fatalf("%+v", d)
	}
}

func TestAliasesAndAliasBombs(t *testing.T) {
	p := mustParse(t, `
x-admins: &admins [dba, sre]
grants:
  - groups: *admins
    level: admin
`)
	e := newEngine(t)
	e.Set(p)
	if d := e.Access(context.Background(), who("d@corp.example", identity.Human, "prod", "sre")); d.Level != "admin" {
		t.Fatalf("x- anchor: %+v", d)
	}
	_, err := Parse("policy.yaml", []byte(`
grants:
  - groups: &admins [dba, sre]
    level: admin
  - groups: *admins
    environments: [dev]
    level: read
`))
	if err != nil {
		t.Fatalf("anchors inside fields: %v", err)
	}
	var b strings.Builder
	b.WriteString("a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	prev := "a"
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("l%d", i)
		fmt.Fprintf(&b, "%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	done := make(chan error, 1)
	go func() { _, err := Parse("bomb.yaml", []byte(b.String())); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "YAML nodes") {
			t.Fatalf("alias bomb: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alias bomb not bounded")
	}
}
