package e2e

import (
	"testing"
	"time"
)

// knownGap is a hazard the built-in policy does NOT block today. Each entry asserts the
// current behaviour (the statement runs and has its effect) inside a transaction that is
// rolled back, so the suite passes and the fixture is unharmed; when the owners close a gap
// this test fails and the entry moves to the blocked corpus in guardrails_test.go.
type knownGap struct {
	name   string
	user   string
	target string
	sql    string
	args   []any  // sent with the extended protocol when present
	probe  string // run in the same transaction; shows the effect happened
	want   string
	why    string
	// closedBy names the rule that refuses the statement now; the entry then asserts the
	// refusal (42501 naming the rule, nothing changed) instead of the gap.
	closedBy string
}

// closed lists the gaps found by this suite that have since been closed, with the rule that
// closes each; they stay here as regression tests next to their history. The WHERE gaps are
// tried in production: outside it the built-in policy lets UPDATE/DELETE without WHERE run
// (issue 12).
var closed = map[string]string{
	"DO $$ BEGIN DELETE FROM orders; END $$":                  "production-opaque-code-needs-approval",
	"DO $body$ BEGIN EXECUTE 'DROP TABLE orders'; END $body$": "production-opaque-code-needs-approval",
	"CALL wipe()": "production-opaque-code-needs-approval",
	"MERGE INTO orders USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE":                "no-update-or-delete-without-where",
	"MERGE INTO orders USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET amount = 0": "no-update-or-delete-without-where",
	"DELETE FROM orders WHERE $1::boolean":                                                 "no-update-or-delete-without-where",
	"DELETE FROM orders WHERE (SELECT true)":                                               "no-update-or-delete-without-where",
	"DELETE FROM orders WHERE EXISTS (SELECT 1)":                                           "no-update-or-delete-without-where",
	"DELETE FROM orders WHERE true::text = $$true$$":                                       "no-update-or-delete-without-where",
	"ALTER TABLE orders ENABLE ROW LEVEL SECURITY":                                         "production-schema-changes-need-approval",
	"GRANT ALL ON orders TO PUBLIC":                                                        "production-schema-changes-need-approval",
	"DELETE FROM orders WHERE coalesce(true, id = 1)":                                      "no-update-or-delete-without-where",
	"DELETE FROM orders WHERE id IS NOT NULL":                                              "no-update-or-delete-without-where",
}

func knownGaps(t *testing.T, f *guardFixture, before string) {
	secrets := map[string]string{"dba@corp.example": f.dba, "alice@corp.example": f.alice}
	gaps := []knownGap{
		{
			name: "DO block hides DELETE without WHERE (admin, prod)", user: "dba@corp.example", target: "main",
			sql:   "DO $$ BEGIN DELETE FROM orders; END $$",
			probe: "SELECT count(*)::text FROM orders", want: "0",
			why: "DO is category unknown; admin level covers unknown and no default rule looks at unknown statements, so no-update-or-delete-without-where never sees the DELETE",
		},
		{
			name: "DO block hides DROP TABLE in production (admin)", user: "dba@corp.example", target: "main",
			sql:   "DO $body$ BEGIN EXECUTE 'DROP TABLE orders'; END $body$",
			probe: "SELECT (to_regclass('public.orders') IS NULL)::text", want: "true",
			why: "as above: no-drop-or-truncate-in-production matches statement.kind, which is DO",
		},
		{
			name: "CALL of a procedure that deletes everything (admin, prod)", user: "dba@corp.example", target: "main",
			sql:   "CALL wipe()",
			probe: "SELECT count(*)::text FROM orders", want: "0",
			why: "CALL is category unknown; allowed at admin level",
		},
		{
			name: "MERGE ... ON true WHEN MATCHED THEN DELETE (admin, prod)", user: "dba@corp.example", target: "main",
			sql:   "MERGE INTO orders USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
			probe: "SELECT count(*)::text FROM orders", want: "0",
			why: "no-update-or-delete-without-where only looks at kind UPDATE/DELETE; MERGE's join condition is not checked for being trivial",
		},
		{
			name: "MERGE ... ON true WHEN MATCHED THEN UPDATE (admin, prod)", user: "dba@corp.example", target: "main",
			sql:   "MERGE INTO orders USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET amount = 0",
			probe: "SELECT sum(amount)::text FROM orders", want: "0",
			why: "as above, for a bulk UPDATE through MERGE",
		},
		{
			name: "WHERE is a bound parameter that is true (admin, prod, extended protocol)", user: "dba@corp.example", target: "main",
			sql: "DELETE FROM orders WHERE $1::boolean", args: []any{true},
			probe: "SELECT count(*)::text FROM orders", want: "0",
			why: "where_trivial is decided on the text; a WHERE that is only a parameter counts as narrowing whatever is bound",
		},
	}
	for _, where := range []string{"(SELECT true)", "EXISTS (SELECT 1)", "coalesce(true, id = 1)", "true::text = $$true$$", "id IS NOT NULL"} {
		gaps = append(gaps, knownGap{
			name: "trivial WHERE " + where + " (admin, prod)", user: "dba@corp.example", target: "main",
			sql:   "DELETE FROM orders WHERE " + where,
			probe: "SELECT count(*)::text FROM orders", want: "0",
			why: "where_trivial recognises constant comparisons and col = col, not constant subqueries, constant-folded functions and casts, or IS NOT NULL on a NOT NULL column",
		})
	}
	gaps = append(gaps, []knownGap{
		{
			name: "ALTER TABLE ... ENABLE ROW LEVEL SECURITY in production without approval (admin)", user: "dba@corp.example", target: "main",
			sql:   "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
			probe: "SELECT relrowsecurity::text FROM pg_class WHERE oid = 'public.orders'::regclass", want: "true",
			why: "the inspector classifies this ALTER TABLE form (also OWNER TO, DISABLE TRIGGER ALL) as category admin, not ddl, so production-schema-changes-need-approval does not hold it",
		},
		{
			name: "GRANT in production without approval (admin)", user: "dba@corp.example", target: "main",
			sql:   "GRANT ALL ON orders TO PUBLIC",
			probe: "SELECT has_table_privilege('public', 'public.orders', 'DELETE')::text", want: "true",
			why: "GRANT is category admin; the default policy holds only ddl in production (policy choice to confirm)",
		},
	}...)
	for _, g := range gaps {
		g.closedBy = closed[g.sql]
		t.Run(g.name, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			c := connect(t, f.p.DSN(g.user, secrets[g.user], g.target))
			if _, err := c.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			_, err := c.Exec(ctx, g.sql, g.args...)
			var got string
			if err == nil {
				err = c.QueryRow(ctx, g.probe).Scan(&got)
			}
			if _, rerr := c.Exec(ctx, "ROLLBACK"); rerr != nil {
				t.Fatalf("rollback: %v", rerr)
			}
			if now := f.snapshot(t); now != before {
				t.Fatalf("gap probe left a change:\nbefore %s\nafter  %s", before, now)
			}
			if g.closedBy != "" {
				if !denied(err, g.closedBy) {
					t.Fatalf("%q as %s on %s: want 42501 by %s, got err=%v probe=%q", g.sql, g.user, g.target, g.closedBy, err, got)
				}
				return
			}
			if err != nil || got != g.want {
				t.Fatalf("KNOWN GAP CLOSED? %q as %s on %s: err=%v probe=%q (was %q). If it is now refused, move it to the blocked corpus.",
					g.sql, g.user, g.target, err, got, g.want)
			}
			t.Logf("known gap (not blocked): %s: %s", g.sql, g.why)
		})
	}
}
