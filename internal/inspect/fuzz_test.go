package inspect

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

var validCategories = []Category{Read, Write, DDL, Admin, Transaction, SessionCat, Unknown}

// FuzzInspect checks that no input panics the inspector (a recovered panic would show as
// the internal-error note), that results are deterministic, and that the invariants the
// policy relies on hold for any text; that a multi-statement string inspected piece by piece
// gives the facts of one whole parse; and that texts of one number skeleton normalize alike.
func FuzzInspect(f *testing.F) {
	for _, c := range cases {
		f.Add(c.sql)
	}
	for _, s := range []string{"", ";", "SELECT 1; DROP TABLE t", "\x00", "SELECT 'x", "$$", "WITH", "(((((("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		a := New(0).Inspect(sql)
		b := New(0).Inspect(sql)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("non-deterministic result for %q", sql)
		}
		for _, st := range a {
			if slices.Contains(st.Notes, internalErrorNote) {
				t.Fatalf("inspector panicked on %q", sql)
			}
			if !slices.Contains(validCategories, st.Category) || st.Kind == "" {
				t.Fatalf("%q: bad kind/category %q/%q", sql, st.Kind, st.Category)
			}
			if st.ParseError != "" {
				if st.Category != Unknown || st.Redacted != placeholder(sql) {
					t.Fatalf("%q: unparseable text not unknown or leaked: %+v", sql, st)
				}
			} else if !strings.Contains(sql, st.Text) {
				t.Fatalf("%q: statement text %q is not part of the input", sql, st.Text)
			}
		}
		// A multi-statement string inspected piece by piece is the whole parse.
		if whole := inspectText(sql, 0); !reflect.DeepEqual(a, whole) {
			t.Fatalf("%q: pieces %+v, whole parse %+v", sql, a, whole)
		}
		// A text the number skeleton vouches for normalizes like every text of its skeleton.
		if skeleton(sql) == "" {
			return
		}
		shape, err := pg_query.Normalize(sql)
		if err != nil || !asNormalized(sql, shape) {
			return
		}
		variant := rewriteIntegers(sql, func(k int, lit string) string { return strings.Repeat("8", k%9+1) })
		if got, err := pg_query.Normalize(variant); err != nil || got != shape {
			t.Fatalf("%q and %q share a skeleton but normalize to %q and %q (%v)", sql, variant, shape, got, err)
		}
	})
}
