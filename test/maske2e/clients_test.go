package maske2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// psycopgScript prints, one JSON document per line, what psycopg 3 receives: a text-format
// query, the same in binary format, a server-side cursor (DECLARE/FETCH), and COPY output.
const psycopgScript = `
import json, sys
import psycopg
q = "SELECT email, ssn, card_number, row_to_json(c)::text AS j FROM customers c WHERE id <= 3 ORDER BY id"
with psycopg.connect(sys.argv[1]) as conn:
    out = {}
    with conn.cursor() as cur:
        cur.execute(q)
        out["text"] = [list(r) for r in cur.fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(q)
        out["binary"] = [list(r) for r in cur.fetchall()]
    with conn.transaction():
        with conn.cursor(name="server_side") as cur:
            cur.execute(q)
            out["cursor"] = [list(r) for r in cur.fetchall()]
    with conn.cursor() as cur:
        data = b""
        with cur.copy("COPY (SELECT email, ssn, card_number, row_to_json(c)::text FROM customers c WHERE id <= 3 ORDER BY id) TO STDOUT") as cp:
            for block in cp:
                data += bytes(block)
        out["copy"] = [line.split("\t") for line in data.decode().splitlines()]
    print(json.dumps(out))
`

func TestRealClients(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t, 2*time.Minute)
	// Dev: COPY of tables holding sensitive data is an export that needs approval in prod.
	tp := startTap(t, e.dev)
	secret := e.dev.Token(t, "analyst", "service")
	dsn := tp.dsn("analyst", secret)

	// What pgx gets for the same query is the reference: every client must print it.
	c := connect(t, tp, "analyst", secret)
	want, err := runQuery(ctx, c, "SELECT email, ssn, card_number, row_to_json(c)::text AS j FROM customers c WHERE id <= 3 ORDER BY id", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want[0][1] != "***-**-6789" || !strings.HasSuffix(want[0][2], "4242") {
		t.Fatalf("pgx reference not masked: %q", want[0])
	}
	tp.take()

	t.Run("psql", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "psql", dsn, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
			"-c", "SELECT email, ssn, card_number, row_to_json(c)::text AS j FROM customers c WHERE id <= 3 ORDER BY id",
			"-c", `\copy (SELECT email, ssn, card_number, row_to_json(c)::text FROM customers c WHERE id <= 3 ORDER BY id) to stdout`).CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if found := e.fx.leaks(tp.take()); len(found) > 0 {
			t.Fatalf("psql received seeded values: %v", found)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 6 {
			t.Fatalf("psql printed %d lines:\n%s", len(lines), out)
		}
		for i, line := range lines {
			if got := strings.Split(line, "\t"); strings.Join(got, "|") != strings.Join(want[i%3], "|") {
				t.Fatalf("psql line %d prints %q, pgx got %q", i, got, want[i%3])
			}
		}
	})

	t.Run("psycopg", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", psycopgScript, dsn).CombinedOutput()
		if err != nil {
			t.Fatalf("psycopg: %v\n%s", err, out)
		}
		if found := e.fx.leaks(tp.take()); len(found) > 0 {
			t.Fatalf("psycopg received seeded values: %v", found)
		}
		var got map[string][][]string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("psycopg output: %v\n%s", err, out)
		}
		for _, mode := range []string{"text", "binary", "cursor", "copy"} {
			rows := got[mode]
			if len(rows) != 3 {
				t.Fatalf("psycopg %s: %d rows", mode, len(rows))
			}
			for i := range rows {
				if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
					t.Fatalf("psycopg %s row %d is %q, pgx got %q", mode, i, rows[i], want[i])
				}
				if rows[i][1] != "***-**-"+e.fx.customers[i].ssn[7:] {
					t.Fatalf("psycopg %s row %d: ssn %q", mode, i, rows[i][1])
				}
			}
		}
	})
}
