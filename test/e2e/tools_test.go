package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// toolsSchema is what the production-tools test describes: tables with keys and an index,
// a view, functions (one of them in a language only a catalog can vouch for), a composite
// type, a sequence, and a column the catalog classes as sensitive.
const toolsSchema = `
CREATE TABLE customers(id int PRIMARY KEY, email text NOT NULL, full_name text);
INSERT INTO customers SELECT g, 'user' || g || '@example.com', 'Customer ' || g FROM generate_series(1, 40) g;
CREATE INDEX customers_email_idx ON customers (email);
CREATE TABLE orders(id int PRIMARY KEY, customer_id int REFERENCES customers, amount int);
INSERT INTO orders SELECT g, 1 + g % 40, g FROM generate_series(1, 40) g;
CREATE VIEW customer_names AS SELECT id, full_name FROM customers;
CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$;
CREATE PROCEDURE touch_orders() LANGUAGE sql AS $$ UPDATE orders SET amount = amount WHERE id = 1 $$;
CREATE TYPE pair AS (a int, b text);
CREATE SEQUENCE invoice_seq;
COMMENT ON TABLE customers IS 'people who buy';`

// tabCompletion are queries of the shape psql 15's tab completion sends (tab-complete.c):
// relation, column, function, schema and role names matching what was typed so far.
var tabCompletion = []string{
	`SELECT c.relname, NULL::pg_catalog.text FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND (c.relname) LIKE 'cus%' AND pg_catalog.pg_table_is_visible(c.oid) AND c.relnamespace <> (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog') UNION ALL SELECT NULL::pg_catalog.text, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname LIKE 'cus%' AND n.nspname NOT LIKE E'pg\\_%' LIMIT 1000`,
	`SELECT pg_catalog.quote_ident(attname) FROM pg_catalog.pg_attribute a, pg_catalog.pg_class c WHERE c.oid = a.attrelid AND a.attnum > 0 AND NOT a.attisdropped AND substring(pg_catalog.quote_ident(attname),1,1)='e' AND (pg_catalog.quote_ident(relname)='customers' OR '"' || relname || '"'='customers') AND pg_catalog.pg_table_is_visible(c.oid) LIMIT 1000`,
	`SELECT DISTINCT pg_catalog.quote_ident(p.proname) FROM pg_catalog.pg_proc p WHERE substring(pg_catalog.quote_ident(p.proname),1,3)='add' AND pg_catalog.pg_function_is_visible(p.oid) LIMIT 1000`,
	`SELECT pg_catalog.quote_ident(nspname) FROM pg_catalog.pg_namespace WHERE substring(pg_catalog.quote_ident(nspname),1,1)='p' LIMIT 1000`,
	`SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles WHERE substring(pg_catalog.quote_ident(rolname),1,0)='' LIMIT 1000`,
	`SELECT pg_catalog.quote_ident(name) FROM pg_catalog.pg_available_extensions WHERE substring(pg_catalog.quote_ident(name),1,2)='pl' AND installed_version IS NULL LIMIT 1000`,
	`SELECT pg_catalog.lower(name) FROM pg_catalog.pg_settings WHERE context IN ('user', 'superuser') AND pg_catalog.lower(name) LIKE pg_catalog.lower('work%') LIMIT 1000`,
	// built-ins the inspector's own list never named (issue 12: "58 pg_catalog functions
	// make an ordinary SELECT unknown"), read-only by their declared volatility
	`SELECT sinh(1), sind(30), float4send(1.5::float4), get_bit('\x01'::bytea, 0), lower_inc(int4range(1, 5)), range_contains(int4range(1, 5), int4range(2, 3)), xml_is_well_formed('<a/>')`,
	`SELECT regr_sxx(id, amount), bit_xor(id) FROM orders`,
}

// psqlDescribe are the psql meta-commands an engineer describes a database with.
var psqlDescribe = []string{`\d`, `\d customers`, `\d+ customers`, `\d orders`, `\dt+`, `\di`, `\dv`,
	`\df+`, `\dn+`, `\dp`, `\sf add_one`, `\sv customer_names`, `\dT`, `\dx`, `\ds`, `\dm`, `\l+`}

// TestProductionTools: a read-level identity describes a production database with its own
// tools — psql's \d family and tab completion, pgJDBC's DatabaseMetaData (the calls DBeaver
// makes), SQLAlchemy's inspector — refused nowhere and held nowhere, while the data those
// sessions read is still masked; a DBA dumps the schema with pg_dump --schema-only
// (issue 12, item 1). Each tool's output through Gatehouse is compared with the same tool
// run directly where the output does not change between runs.
func TestProductionTools(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "app", toolsSchema)
	p := servertest.Start(t, servertest.Options{Upstream: pg, PolicyYAML: "default", Environment: "prod"})
	analyst := p.Token(t, "analyst@corp.example", "human")
	dba := p.Token(t, "dba@corp.example", "human", "dba")
	direct := "host=" + pg.Host + " port=" + strconv.Itoa(pg.Port) + " user=" + pg.User + " dbname=app sslmode=disable"
	proxied := psqlDSN(p, "analyst@corp.example", "")

	t.Run("psql", func(t *testing.T) {
		for _, cmd := range append(append([]string(nil), psqlDescribe...), tabCompletion...) {
			got := runTool(t, "psql", []string{"PGPASSWORD=" + analyst}, "-X", "-d", proxied, "-c", cmd)
			want := runTool(t, "psql", []string{"PGPASSWORD=" + pg.Password}, "-X", "-d", direct, "-c", cmd)
			if want.err != nil {
				t.Fatalf("%s directly:\n%s", cmd, want)
			}
			if got.err != nil || got.stderr != want.stderr {
				t.Errorf("%s through Gatehouse:\n%s", cmd, got)
				continue
			}
			if cmd != `\l+` && got.stdout != want.stdout {
				t.Errorf("%s: through Gatehouse differs from direct:\n--- gatehouse\n%s\n--- direct\n%s", cmd, got.stdout, want.stdout)
			}
		}
		// The same session still masks what it reads.
		got := runTool(t, "psql", []string{"PGPASSWORD=" + analyst}, "-X", "-A", "-t", "-d", proxied,
			"-c", `\d customers`, "-c", "SELECT email FROM customers WHERE id = 1")
		if got.err != nil || strings.Contains(got.stdout, "user1@example.com") || !strings.Contains(got.stdout, "@example.com") {
			t.Fatalf("email after \\d is not masked:\n%s", got)
		}
	})

	toolEnv := []string{"PGHOST=localhost", "PGPORT=" + strconv.Itoa(p.Port), "PGDATABASE=" + p.Target,
		"PGUSER=analyst@corp.example", "PGPASSWORD=" + analyst, "PGSSLMODE=verify-full", "PGSSLROOTCERT=" + p.CAFile,
		"META_TABLE=customers", "META_FK_TABLE=orders", "META_FUNCTION=add_one"}
	root := repoDir(t)

	t.Run("pgjdbc-metadata", func(t *testing.T) {
		jar := "/usr/share/java/postgresql.jar"
		got := runTool(t, "java", toolEnv, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", jar,
			filepath.Join(root, "test", "clients", "java", "Metadata.java"))
		lines := keyValues(got.stdout)
		if got.err != nil {
			t.Fatalf("pgJDBC metadata client:\n%s", got)
		}
		for _, call := range []string{"getTables", "getColumns", "getPrimaryKeys", "getImportedKeys", "getIndexInfo", "getProcedures", "getFunctions", "getTypeInfo"} {
			n, err := strconv.Atoi(lines[call])
			if err != nil || n == 0 {
				t.Errorf("%s: %q", call, lines[call])
			}
		}
		if m := lines["masked"]; m == "" || strings.HasPrefix(m, "ERROR") || m == "user1@example.com" {
			t.Errorf("pgJDBC read of email: %q, want a masked value", m)
		}
	})

	t.Run("sqlalchemy-inspector", func(t *testing.T) {
		got := runTool(t, "/usr/bin/python3", toolEnv, filepath.Join(root, "test", "clients", "python", "sqlalchemy_inspect.py"))
		lines := keyValues(got.stdout)
		if got.err != nil {
			t.Fatalf("SQLAlchemy inspector:\n%s", got)
		}
		want := map[string]string{
			"get_table_names":   "customers,orders",
			"get_columns":       "id,email,full_name",
			"get_pk_constraint": "id",
			"get_foreign_keys":  "customers",
			"get_indexes":       "customers_email_idx",
		}
		for k, v := range want {
			if lines[k] != v {
				t.Errorf("%s: got %q, want %q", k, lines[k], v)
			}
		}
		if m := lines["masked"]; m == "" || strings.HasPrefix(m, "ERROR") || m == "user1@example.com" {
			t.Errorf("SQLAlchemy read of email: %q, want a masked value", m)
		}
	})

	t.Run("pg_dump-schema-only-dba", func(t *testing.T) {
		got := runTool(t, "pg_dump", []string{"PGPASSWORD=" + dba}, "--schema-only", "-d", psqlDSN(p, "dba@corp.example", ""))
		if got.err != nil || got.stderr != "" {
			t.Fatalf("pg_dump --schema-only as a DBA through Gatehouse:\n%s", got)
		}
		want := runTool(t, "pg_dump", []string{"PGPASSWORD=" + pg.Password}, "--schema-only", "-d", direct)
		if want.err != nil {
			t.Fatalf("pg_dump directly:\n%s", want)
		}
		if withoutRestrictKey(got.stdout) != withoutRestrictKey(want.stdout) {
			t.Fatalf("pg_dump --schema-only through Gatehouse differs from direct:\n--- gatehouse\n%s\n--- direct\n%s", got.stdout, want.stdout)
		}
	})
}

// runTool runs a client program with extra environment and returns what it printed.
func runTool(t testing.TB, name string, env []string, args ...string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGAPPNAME=e2e-tools"), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return psqlResult{stdout: out.String(), stderr: errb.String(), err: err}
}

// keyValues reads "key=value" lines.
func keyValues(s string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

// repoDir is the repository's root (two levels above this file's package).
func repoDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// withoutRestrictKey drops pg_dump's \restrict and \unrestrict lines, whose key is random
// in every dump.
func withoutRestrictKey(dump string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(dump, "\n") {
		if !strings.HasPrefix(l, `\restrict `) && !strings.HasPrefix(l, `\unrestrict `) {
			b.WriteString(l)
		}
	}
	return b.String()
}
