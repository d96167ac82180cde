package inspect

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

var validCategories = []Category{Read, Write, DDL, Admin, Transaction, SessionCat, Unknown}

// FuzzInspect checks that no input panics the inspector (a recovered panic would show as
// the internal-error note), that results are deterministic, and that the invariants the
// policy relies on hold for any text.
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
	})
}
