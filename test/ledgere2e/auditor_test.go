package ledgere2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// TestAuditorQuestions asks the auditors' three standing questions of a ledger filled by real
// sessions through the proxy, on the SQLite store and on the PostgreSQL store, through the Go
// API and through the CLI.
func TestAuditorQuestions(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		auditorQuestions(t, newEnv(t, envOptions{}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		ledgerPG := testkit.StartPostgres(t)
		auditorQuestions(t, newEnv(t, envOptions{LedgerDSN: ledgerPG.DSN("postgres")}))
	})
}

// peopleFixture is a table of personal data the classifier must recognise by itself.
func peopleFixture() string {
	var b strings.Builder
	b.WriteString(`CREATE TABLE people (id int PRIMARY KEY, full_name text, email text, ssn text);
CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2), status text);
CREATE TABLE customers (id int PRIMARY KEY, plan text, seats int);
`)
	first := []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken"}
	last := []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Perlman", "Thompson"}
	for i := 1; i <= 30; i++ {
		fn, ln := first[i%len(first)], last[(i*3)%len(last)]
		fmt.Fprintf(&b, "INSERT INTO people VALUES (%d, '%s %s', '%s.%s%d@example.com', '%03d-%02d-%04d');\n",
			i, fn, ln, strings.ToLower(fn), strings.ToLower(ln), i, 100+i*7, 10+i, 1000+i*37)
		fmt.Fprintf(&b, "INSERT INTO orders VALUES (%d, %d.%02d, '%s');\n", i, 10+i*3, i, []string{"open", "paid", "shipped"}[i%3])
		fmt.Fprintf(&b, "INSERT INTO customers VALUES (%d, '%s', %d);\n", i, []string{"free", "team", "enterprise"}[i%3], 1+i%9)
	}
	return b.String()
}

func auditorQuestions(t *testing.T, e *env) {
	ctx := context.Background()
	e.upstream.Exec(t, "app", peopleFixture())

	// The catalog, not the test, decides what is personal data: check it found the fixture's.
	cat := e.mustCLI("catalog", "show", "main")
	for _, want := range [][2]string{{"public.people.email", "email"}, {"public.people.ssn", "ssn"}} {
		found := false
		for _, line := range strings.Split(cat, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == want[0] && f[2] == want[1] {
				found = true
			}
		}
		if !found {
			t.Fatalf("catalog show does not classify %s as %s, so the PII question has nothing to find:\n%s", want[0], want[1], cat)
		}
	}
	for _, tbl := range []string{"public.orders.", "public.customers."} {
		if strings.Contains(cat, tbl) {
			t.Fatalf("catalog show finds sensitive columns in %s*, which the fixture means to be non-sensitive:\n%s", tbl, cat)
		}
	}

	secrets := map[string]string{}
	for _, id := range []struct{ name, kind string }{
		{"dba@corp.example", "human"}, {"alice@corp.example", "human"}, {"bob-etl", "service"},
		{"carol@corp.example", "human"}, {"agent-a", "agent"}, {"agent-b", "agent"},
	} {
		secrets[id.name] = e.token(id.name, id.kind)
	}
	e.start()
	defer e.stop()

	run := func(user, app string, n int, sql string, args ...any) {
		t.Helper()
		c := e.mustConnect(user, secrets[user], app)
		for range n {
			rows, err := c.Query(ctx, sql, args...)
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
			}
			if err != nil {
				t.Fatalf("%s: %s: %v", user, sql, err)
			}
		}
		_ = c.Close(ctx)
	}

	// (a) A table is dropped in dev by a DBA, from a named client application.
	beforeDrop := time.Now()
	run("dba@corp.example", "schema-migrator", 1, "CREATE TABLE scratch_x (id int)")
	run("dba@corp.example", "schema-migrator", 1, "DROP TABLE scratch_x")
	afterDrop := time.Now()
	// (b) Two identities read personal data; a third reads only a non-sensitive table.
	run("alice@corp.example", "psql", 3, "SELECT email, ssn FROM people WHERE id = $1", 7)
	run("bob-etl", "nightly-export", 2, "SELECT * FROM people")
	run("carol@corp.example", "psql", 2, "SELECT amount, status FROM orders")
	// (c) Two AI agents and a human query customers.
	run("agent-a", "claude-agent", 2, "SELECT plan, count(*) FROM customers GROUP BY plan")
	run("agent-b", "support-agent", 1, "SELECT * FROM customers WHERE id = $1", 3)
	run("agent-b", "support-agent", 1, "UPDATE customers SET seats = seats + 1 WHERE id = $1", 3)
	run("alice@corp.example", "psql", 1, "SELECT seats FROM customers")

	st := e.openStore(ctx)
	now := time.Now()

	// (a) Who dropped scratch_x: the identity, the time and the client application.
	drops, err := st.WhoDropped(ctx, "scratch_x", ledger.TimeRange{From: now.Add(-24 * time.Hour), To: now.Add(time.Minute)})
	if err != nil {
		t.Fatalf("WhoDropped: %v", err)
	}
	if len(drops) == 0 {
		t.Fatal("WhoDropped(scratch_x) found nothing")
	}
	if len(drops) != 1 {
		// One DROP statement ran; its intent(s) must not count as more drops.
		t.Errorf("WhoDropped(scratch_x) = %d records for the one DROP statement that ran, want 1:\n%s", len(drops), dropsText(drops))
	}
	d := drops[0]
	if d.Subject != "dba@corp.example" || d.IdentityKind != "human" || d.ApplicationName != "schema-migrator" ||
		d.Decision != "allow" || d.SQLState != "" || d.Target != "main" || d.Environment != "dev" {
		t.Errorf("WhoDropped(scratch_x) = %+v, want dba@corp.example (human) from schema-migrator on main/dev, allowed and successful", d)
	}
	if d.Time.Before(beforeDrop.Add(-time.Second)) || d.Time.After(afterDrop.Add(time.Second)) {
		t.Errorf("WhoDropped time %v is outside the moment of the drop [%v, %v]", d.Time, beforeDrop, afterDrop)
	}
	if !strings.HasPrefix(d.ClientAddr, "127.0.0.1") {
		t.Errorf("WhoDropped client address %q, want the loopback client", d.ClientAddr)
	}
	if !strings.Contains(strings.ToUpper(d.Text), "DROP TABLE") {
		t.Errorf("WhoDropped statement text %q", d.Text)
	}
	if early, err := st.WhoDropped(ctx, "scratch_x", ledger.TimeRange{To: beforeDrop.Add(-time.Second)}); err != nil || len(early) != 0 {
		t.Errorf("WhoDropped before the drop happened = %+v, %v; want nothing", early, err)
	}
	if other, err := st.WhoDropped(ctx, "people", ledger.TimeRange{}); err != nil || len(other) != 0 {
		t.Errorf("WhoDropped(people), never dropped, = %+v, %v; want nothing", other, err)
	}
	out := e.mustCLI("audit", "who-dropped", "scratch_x", "--since", "1d")
	for _, want := range []string{"dba@corp.example", "schema-migrator", "DROP TABLE"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit who-dropped output lacks %q:\n%s", want, out)
		}
	}

	// (b) Who read PII last quarter: exactly alice (3) and bob (2), not carol.
	quarter := ledger.TimeRange{From: now.Add(-90 * 24 * time.Hour), To: now.Add(time.Minute)}
	readers, err := st.PIIReaders(ctx, "pii", quarter)
	if err != nil {
		t.Fatalf("PIIReaders: %v", err)
	}
	got := map[string]int64{}
	for _, r := range readers {
		got[r.Subject] = r.Statements
	}
	want := map[string]int64{"alice@corp.example": 3, "bob-etl": 2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("PIIReaders(pii, last quarter) = %v, want exactly %v", got, want)
	}
	ssnReaders, err := st.PIIReaders(ctx, "ssn", quarter)
	if err != nil {
		t.Fatalf("PIIReaders(ssn): %v", err)
	}
	if len(ssnReaders) != 2 {
		t.Errorf("PIIReaders(ssn) = %+v, want alice and bob", ssnReaders)
	}
	out = e.mustCLI("audit", "pii-readers", "--since", "90d")
	if !strings.Contains(out, "alice@corp.example") || !strings.Contains(out, "bob-etl") || strings.Contains(out, "carol") {
		t.Errorf("audit pii-readers output should list alice and bob and not carol:\n%s", out)
	}

	// (c) How many AI agents queried customers last week: 2 (the human does not count).
	agents, err := st.AgentsQueried(ctx, "customers", ledger.TimeRange{From: now.Add(-7 * 24 * time.Hour), To: now.Add(time.Minute)})
	if err != nil {
		t.Fatalf("AgentsQueried: %v", err)
	}
	gotAgents := map[string]int64{}
	for _, a := range agents {
		gotAgents[a.Subject] = a.Statements
		if a.IdentityKind != "agent" {
			t.Errorf("AgentsQueried returned %s of kind %s", a.Subject, a.IdentityKind)
		}
	}
	// agent-b ran two statements on customers (a SELECT and an UPDATE); the UPDATE's intent
	// events are not further statements.
	if want := map[string]int64{"agent-a": 2, "agent-b": 2}; fmt.Sprint(gotAgents) != fmt.Sprint(want) {
		t.Errorf("AgentsQueried(customers, last week) = %v, want %v (statements run, each counted once)", gotAgents, want)
	}
	out = e.mustCLI("audit", "agents", "customers", "--since", "7d")
	if !strings.Contains(out, "2 agent(s) queried customers") {
		t.Errorf("audit agents output does not answer 2:\n%s", out)
	}

	// The same events through search: the JSON output of the CLI finds the agents' statements.
	out = e.mustCLI("audit", "search", "--kind", "agent", "--table", "customers", "--type", "statement", "--since", "7d", "--json")
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; strings.TrimSpace(out) == "" || n != 4 {
		t.Errorf("audit search --kind agent --table customers --type statement found %d events, want 4:\n%s", n, out)
	}
}

func dropsText(drops []ledger.DropRecord) string {
	var b strings.Builder
	for _, d := range drops {
		fmt.Fprintf(&b, "  seq %d %s %s %s %q\n", d.Seq, d.Time.Format(time.RFC3339Nano), d.Subject, d.Decision, d.Text)
	}
	return b.String()
}
