package maske2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// script is a sequence of statements on one session: cursors, SQL-level prepared
// statements, and statements whose error message could carry a value.
type script struct {
	name  string
	steps []string
	// wantErr: the last step fails; its error must not carry a seeded value either.
	wantErr bool
	// forbidden: derived raw values no returned cell may equal.
	forbidden func(f *fixture) []string
	noRaw     bool
}

const cursorQuery = `SELECT lower(email) AS l, substring(ssn, 1, 3) AS s, card_number, row_to_json(c) AS j,
  email || '' AS e2, replace(ssn, '-', ' ') AS r, array_agg(iban) OVER () AS a FROM customers c`

func derivedSSN(f *fixture) []string {
	var out []string
	for _, c := range f.customers {
		out = append(out, c.ssn[:3], strings.ReplaceAll(c.ssn, "-", " "))
	}
	return out
}

var scripts = []script{
	{name: "cursor in transaction", steps: []string{"BEGIN", "DECLARE cur CURSOR FOR " + cursorQuery, "FETCH 5 FROM cur", "FETCH ALL FROM cur", "CLOSE cur", "COMMIT"}, forbidden: derivedSSN},
	{name: "cursor with hold", steps: []string{"DECLARE held SCROLL CURSOR WITH HOLD FOR " + cursorQuery, "FETCH FORWARD 3 FROM held", "FETCH ABSOLUTE 10 FROM held", "FETCH BACKWARD 2 FROM held", "CLOSE held"}, forbidden: derivedSSN},
	{name: "cursor select star", steps: []string{"BEGIN", "DECLARE s CURSOR FOR SELECT * FROM customers", "FETCH ALL FROM s", "COMMIT"}},
	{name: "sql prepare and execute", steps: []string{"PREPARE p1 AS " + cursorQuery, "EXECUTE p1", "DEALLOCATE p1"}, forbidden: derivedSSN},
	{name: "sql prepare plain columns", steps: []string{"PREPARE p2 AS SELECT email, ssn, card_number, full_name, phone FROM customers", "EXECUTE p2", "DEALLOCATE p2"}},
	{name: "error quoting ssn", steps: []string{"SELECT ssn::int FROM customers"}, wantErr: true},
	{name: "error quoting email", steps: []string{"SELECT email::int FROM customers"}, wantErr: true},
	{name: "error quoting card", steps: []string{"SELECT card_number::int FROM customers"}, wantErr: true},
	{name: "error quoting iban", steps: []string{"SELECT iban::numeric FROM customers"}, wantErr: true},
	{name: "error quoting api key", steps: []string{"SELECT api_key::int FROM customers"}, wantErr: true},
	{name: "error quoting jwt", steps: []string{"SELECT session_jwt::int FROM customers"}, wantErr: true},
	{name: "error quoting password hash", steps: []string{"SELECT password_hash::int FROM customers"}, wantErr: true},
	{name: "error quoting phone", steps: []string{"SELECT phone::int FROM customers"}, wantErr: true},
	{name: "error quoting name", steps: []string{"SELECT full_name::int FROM customers"}, wantErr: true},
	{name: "error quoting date of birth", steps: []string{"SELECT date_of_birth::text::int FROM customers"}, wantErr: true},
	{name: "error quoting json of a row", steps: []string{"SELECT (row_to_json(c)::text)::int FROM customers c"}, wantErr: true},
}

// knownScriptLeaks are open leaks of the current code, asserted as they are (see
// knownReadLeaks); key "script/mode".
var knownScriptLeaks = map[string]string{}

func testScripts(t *testing.T, e *env, tp *tap, masked, raw *pgx.Conn) {
	ctx := ctxT(t, 2*time.Minute)
	var leaks []leakCase
	for _, sc := range scripts {
		for _, m := range modes[:2] {
			t.Run(sc.name+"/"+m.name, func(t *testing.T) {
				run := func(c *pgx.Conn) ([][]string, error) {
					var all [][]string
					for i, step := range sc.steps {
						rows, err := runQuery(ctx, c, step, m.opts, nil)
						if err != nil {
							if sc.wantErr && i == len(sc.steps)-1 {
								return all, err
							}
							_, _ = c.Exec(context.Background(), "ROLLBACK")
							t.Fatalf("step %q: %v", step, err)
						}
						all = append(all, rows...)
					}
					return all, nil
				}
				tp.take()
				rows, err := run(masked)
				captured := tp.take()
				if sc.wantErr && err == nil {
					t.Fatal("the last step did not fail")
				}
				if !sc.wantErr && len(rows) == 0 {
					t.Fatal("no rows")
				}
				if found := e.fx.leaks(captured); len(found) > 0 {
					leaks = append(leaks, leakCase{sc.name, m.name, found})
				}
				if sc.forbidden != nil {
					bad := map[string]bool{}
					for _, v := range sc.forbidden(e.fx) {
						bad[v] = true
					}
				rowLoop:
					for _, r := range rows {
						for _, cell := range r {
							if bad[cell] {
								leaks = append(leaks, leakCase{sc.name, m.name, []string{"derived: " + cell}})
								break rowLoop
							}
						}
					}
				}
				if !sc.noRaw {
					_, _ = run(raw)
					if len(e.fx.leaks(tp.take())) == 0 {
						t.Fatal("the script shows no seeded value even to the compliance group: it proves nothing")
					}
				}
			})
		}
	}
	checkLeaks(t, leaks, knownScriptLeaks)
}
