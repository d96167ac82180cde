package inspect

import (
	"strings"
	"testing"
)

// targetFuncs stands for what a target's catalog says of some functions: sinh and
// lower_inc are immutable built-ins the built-in list does not name, wipe is a user's
// volatile function, and "lower" is shadowed there by a user's volatile overload.
func targetFuncs(name string) (Category, bool) {
	switch strings.TrimPrefix(name, "pg_catalog.") {
	case "sinh", "lower_inc", "pg_relation_is_publishable", "app.stable_lookup":
		return Read, true
	case "wipe", "lower":
		return Unknown, true
	case "nextval":
		return Read, true // a catalog must not be able to vouch for a write
	}
	return "", false
}

func TestWithFunctionEffects(t *testing.T) {
	cases := []struct {
		sql           string
		static, after Category
	}{
		{"SELECT sinh(1), lower_inc(int4range(1, 2))", Unknown, Read},
		{"SELECT pg_catalog.pg_relation_is_publishable(c.oid) FROM pg_catalog.pg_class c", Unknown, Read},
		{"SELECT app.stable_lookup(1)", Unknown, Read},
		{"SELECT wipe()", Unknown, Unknown},
		{"SELECT lower('X')", Read, Unknown},
		{"SELECT sinh(1), nextval('s')", Unknown, Write},
		{"SELECT sinh(1), pg_read_file('/etc/passwd')", Unknown, Admin},
		{"UPDATE t SET a = sinh(a) WHERE id = 1", Unknown, Write},
		{"CREATE VIEW v AS SELECT wipe()", DDL, DDL},
		{"SELECT not_in_catalog()", Unknown, Unknown},
		{"SELECT 1", Read, Read},
	}
	for _, c := range cases {
		st := inspectText(c.sql, 0)[0]
		if st.Category != c.static {
			t.Errorf("%s: built-in list gives %s, want %s (notes %q)", c.sql, st.Category, c.static, st.Notes)
		}
		got := st.WithFunctionEffects(targetFuncs)
		if got.Category != c.after {
			t.Errorf("%s: with the target's catalog %s, want %s (notes %q)", c.sql, got.Category, c.after, got.Notes)
		}
		if got.Category == st.Category && got != st {
			t.Errorf("%s: unchanged statement copied", c.sql)
		}
		if got.Category == Read && strings.Contains(strings.Join(got.Notes, ";"), "not a vouched-for") {
			t.Errorf("%s: a read keeps the note %q", c.sql, got.Notes)
		}
	}
}

func TestCompositeTypeIsDDL(t *testing.T) {
	st := inspectText("CREATE TYPE t AS (f1 int, f2 text)", 0)[0]
	if st.Kind != "CREATE TYPE" || st.Category != DDL || st.ObjectType != "type" || len(st.TablesRead) != 0 {
		t.Fatalf("CREATE TYPE AS: kind %q category %s object %q read %v", st.Kind, st.Category, st.ObjectType, st.TablesRead)
	}
}

func TestNonStandardStrings(t *testing.T) {
	cases := map[string]bool{
		"SET standard_conforming_strings = off":                                 true,
		"SET standard_conforming_strings TO false":                              true,
		"set local standard_conforming_strings = 0":                             true,
		"SET standard_conforming_strings FROM CURRENT":                          true,
		"SELECT set_config('standard_conforming_strings', 'off', false)":        true,
		"SELECT set_config('standard_conforming_strings', current_user, false)": true,
		"ALTER ROLE alice SET standard_conforming_strings = off":                true,
		"ALTER DATABASE app SET standard_conforming_strings TO off":             true,
		"ALTER SYSTEM SET standard_conforming_strings = off":                    true,
		"SET standard_conforming_strings = on":                                  false,
		"SET standard_conforming_strings TO DEFAULT":                            false,
		"RESET standard_conforming_strings":                                     false,
		"SELECT set_config('standard_conforming_strings', 'on', false)":         false,
		"SET escape_string_warning = off":                                       false,
	}
	for sql, want := range cases {
		if got := inspectText(sql, 0)[0].NonStandardStrings; got != want {
			t.Errorf("%s: NonStandardStrings %v, want %v", sql, got, want)
		}
	}
}
