package inspect

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/testkit"
)

func TestTrivialWhere(t *testing.T) {
	cases := []struct {
		where     string
		trivial   bool
		ifNotNull string // comma-separated
	}{
		// constant true, as before
		{"true", true, ""},
		{"1=1", true, ""},
		{"id = id", true, ""},
		{"id = 1 OR true", true, ""},
		{"NOT false AND 2 > 1", true, ""},
		// constant folding through functions and conditionals
		{"coalesce(true, id = 1)", true, ""},
		{"coalesce(NULL, true)", true, ""},
		{"coalesce(NULL, id = 1, true)", false, ""},
		{"coalesce(id = 1, true)", false, ""},
		{"coalesce(id IS NULL, true)", false, ""},
		{"nullif(false, true) IS NULL", false, ""}, // FALSE: changes nothing
		{"nullif(id = 1, true) IS NULL", false, ""},
		{"nullif(true, true) IS NULL", true, ""},
		{"CASE WHEN true THEN true END", true, ""},
		{"CASE WHEN id = 1 THEN true ELSE true END", true, ""},
		{"CASE WHEN id = 1 THEN true END", false, ""},
		{"CASE WHEN true THEN true ELSE id = 1 END", true, ""},
		{"CASE id WHEN 1 THEN true ELSE true END", true, ""},
		{"greatest(true, id = 1)", true, ""},
		{"greatest(false, id = 1)", false, ""},
		{"least(false, id = 1)", false, ""},
		{"least(true, id = 1) OR NOT least(true, id = 1) OR least(true, id = 1) IS NULL", false, ""},
		{"(id = 1) IS NOT FALSE OR true", true, ""},
		{"(id = 1) IS NOT NULL", false, ""},
		{"((id = 1) IS NULL) IS NOT TRUE OR (id = 1) IS NULL", false, ""},
		{"coalesce(id, 0) IS NOT NULL", true, ""},
		{"(id::text IS NULL) IS NOT NULL", true, ""},
		{"'t'::boolean", true, ""},
		{"coalesce('t', id = 1)", true, ""},
		{"(id = 1) = (id = 1)", false, ""},
		{"(true = true) OR id = 1", true, ""},
		// row-invariant unknowns: trivial when some value makes every row match
		{"$1 OR id = 7", true, ""},
		{"coalesce($1, id = 1)", true, ""},
		{"(SELECT true) OR id = 2", true, ""},
		{"$1 AND id = 7", false, ""},
		{"id = $1", false, ""},
		{"id = $1 AND $2", false, ""},
		// only the catalog can tell
		{"id IS NOT NULL", false, "id"},
		{"t.id IS NOT NULL", false, "id"},
		{"x.id IS NOT NULL", false, ""},
		{"id IS NOT NULL AND name IS NOT NULL", false, "id,name"},
		{"id IS NOT NULL OR name = 'x'", false, "id"},
		{"id IS NOT NULL AND name = 'x'", false, ""},
		{"id IS NULL", false, ""},
		{"(SELECT id FROM u) IS NOT NULL", false, ""}, // may be correlated: not decided
		// restricting
		{"id = 1", false, ""},
		{"id > 0", false, ""},
		{"name LIKE 'a%'", false, ""},
		{"false", false, ""},
		{"NULL", false, ""},
		{"1 = 2 AND id = 3", false, ""},
	}
	for _, c := range cases {
		for _, form := range []string{"DELETE FROM t WHERE %s", "UPDATE t SET a = 1 WHERE %s", "MERGE INTO t USING s ON %s WHEN MATCHED THEN DELETE"} {
			sql := fmt.Sprintf(form, c.where)
			sts := New(0).Inspect(sql)
			if len(sts) != 1 || sts[0].ParseError != "" {
				t.Fatalf("%s: %+v", sql, sts)
			}
			st := sts[0]
			var got []string
			for _, cond := range st.WhereTrivialIfNotNull {
				if cond.Table != "t" {
					t.Errorf("%s: condition on %q", sql, cond.Table)
				}
				got = append(got, strings.Join(cond.Columns, ","))
			}
			if st.WhereTrivial != c.trivial || strings.Join(got, ";") != c.ifNotNull {
				t.Errorf("%s: trivial=%v ifNotNull=%q, want %v %q", sql, st.WhereTrivial, got, c.trivial, c.ifNotNull)
			}
		}
	}
	// Through query_to_xml and in a CTE the condition still reaches the statement.
	for _, sql := range []string{
		"SELECT query_to_xml('DELETE FROM t WHERE id IS NOT NULL RETURNING 1', true, true, '')",
		"WITH d AS (DELETE FROM t WHERE id IS NOT NULL RETURNING 1) SELECT * FROM d",
	} {
		st := New(0).Inspect(sql)[0]
		if st.WhereTrivial || len(st.WhereTrivialIfNotNull) != 1 || st.WhereTrivialIfNotNull[0].Columns[0] != "id" {
			t.Errorf("%s: %v %+v", sql, st.WhereTrivial, st.WhereTrivialIfNotNull)
		}
	}
	// One UPDATE without a WHERE condition of its own keeps the statement from being judged
	// on the other's condition: HasWhere is false and nothing else matters.
	st := New(0).Inspect("WITH d AS (DELETE FROM t WHERE id IS NOT NULL RETURNING 1) UPDATE u SET a = 1")[0]
	if st.HasWhere || len(st.WhereTrivialIfNotNull) != 0 {
		t.Errorf("mixed: %+v", st)
	}
}

// TestFolderAgreesWithPostgres checks the folder's soundness against PostgreSQL: for
// random boolean expressions over a table whose rows hold every combination of NULL and
// non-NULL values, every value PostgreSQL computes for a row must be in the set the folder
// says the expression can take. A WHERE the folder calls trivial must match every row.
func TestFolderAgreesWithPostgres(t *testing.T) {
	pg := testkit.StartPostgres(t)
	pg.Exec(t, "postgres", `
		CREATE TABLE w (id int PRIMARY KEY, a int, b bool, c bool);
		INSERT INTO w SELECT g, CASE g % 3 WHEN 0 THEN NULL ELSE g % 5 END,
			CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN true ELSE false END,
			CASE g % 7 WHEN 0 THEN NULL WHEN 1 THEN false ELSE true END
		FROM generate_series(1, 84) g;`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	r := rand.New(rand.NewPCG(1, 2))
	checked, trivial, refused := 0, 0, 0
	for range 1500 {
		expr := genBool(r, 4)
		tree, err := pg_query.Parse("DELETE FROM w WHERE " + expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		del := tree.Stmts[0].Stmt.GetDeleteStmt()
		f := &folder{target: del.Relation}
		set := boolCtx(f.eval(del.WhereClause, 0))
		g := &folder{target: del.Relation, assume: true}
		assumedSet := boolCtx(g.eval(del.WhereClause, 0))

		rows, err := conn.Query(ctx, "SELECT DISTINCT ("+expr+")::text FROM w", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		seen, err := pgx.CollectRows(rows, pgx.RowTo[*string])
		if err != nil {
			// PostgreSQL refuses some random combinations (types it cannot resolve).
			refused++
			continue
		}
		checked++
		for _, v := range seen {
			val := vN
			if v != nil {
				val = one(*v == "true")
			}
			if len(f.vars) == 0 && set&val == 0 {
				t.Errorf("%s: PostgreSQL computes %s for a row; folder says %04b", expr, show(v), set)
			}
			if len(g.vars) == 0 && !slices.ContainsFunc(g.assumed, func(c string) bool { return c != "id" }) && assumedSet&val == 0 {
				t.Errorf("%s (id NOT NULL): PostgreSQL computes %s for a row; folder says %04b", expr, show(v), assumedSet)
			}
		}
		lit := false
		if ok, _ := trivialWhere(del.WhereClause, del.Relation, &lit); ok && len(f.vars) == 0 {
			trivial++
			if len(seen) != 1 || seen[0] == nil || *seen[0] != "true" {
				t.Errorf("%s: called trivial, but PostgreSQL gives %v", expr, seen)
			}
		}
	}
	t.Logf("%d expressions checked (%d called trivial), %d refused by PostgreSQL", checked, trivial, refused)
	if checked < 1000 || trivial < 50 {
		t.Fatalf("generator too weak: %d checked, %d trivial", checked, trivial)
	}
}

func show(v *string) string {
	if v == nil {
		return "NULL"
	}
	return *v
}

// genBool is a random boolean SQL expression over table w of at most depth levels.
func genBool(r *rand.Rand, depth int) string {
	leaves := []string{"true", "false", "NULL::boolean", "b", "c", "(a = 1)", "(a > 2)",
		"(id = id)", "(id IS NOT NULL)", "(a IS NULL)", "(a IS NOT NULL)", "'t'::boolean", "(id < 40)"}
	if depth == 0 || r.IntN(4) == 0 {
		return leaves[r.IntN(len(leaves))]
	}
	x := func() string { return genBool(r, depth-1) }
	switch r.IntN(14) {
	case 0:
		return "NOT " + x()
	case 1:
		return "(" + x() + " AND " + x() + ")"
	case 2:
		return "(" + x() + " OR " + x() + ")"
	case 3:
		return "coalesce(" + x() + ", " + x() + ")"
	case 4:
		return "coalesce(NULL, " + x() + ", " + x() + ")"
	case 5:
		return "nullif(" + x() + ", " + x() + ")"
	case 6:
		return "greatest(" + x() + ", " + x() + ")"
	case 7:
		return "least(" + x() + ", " + x() + ")"
	case 8:
		return "CASE WHEN " + x() + " THEN " + x() + " ELSE " + x() + " END"
	case 9:
		return "CASE WHEN " + x() + " THEN " + x() + " END"
	case 10:
		tests := []string{"IS TRUE", "IS NOT TRUE", "IS FALSE", "IS NOT FALSE", "IS UNKNOWN", "IS NOT UNKNOWN", "IS NULL", "IS NOT NULL"}
		return "(" + x() + " " + tests[r.IntN(len(tests))] + ")"
	case 11:
		return "(" + x() + " = " + x() + ")"
	case 12:
		return "(" + x() + " <> " + x() + ")"
	default:
		return "(coalesce(a, 0) IS NOT NULL AND " + x() + ")"
	}
}
