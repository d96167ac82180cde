package mask

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

func TestTempTables(t *testing.T) {
	tt := tempTables{max: 10}
	observe := func(sql string) {
		tree, err := pg.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		tt.observe("s1", tree, nil)
	}
	observe("CREATE TEMP TABLE a (x int, y text, PRIMARY KEY (x)); CREATE TABLE permanent (z int)")
	observe("CREATE TEMP TABLE b (w int) INHERITS (a)")
	observe("CREATE TEMP TABLE c AS SELECT y AS yy, x FROM a")
	observe("CREATE TEMP TABLE d (LIKE a)")
	resolve, key := tt.resolver("s1", nil)
	if key == "" {
		t.Fatal("no key for a session with temporary tables")
	}
	for table, want := range map[string]string{"a": "x,y", "b": "x,y,w", "c": "yy,x", "d": "", "permanent": ""} {
		_, cols, ok := resolve("", table)
		if got := strings.Join(cols, ","); got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", table, got, ok, want)
		}
	}
	observe("DROP TABLE a")
	resolve, key2 := tt.resolver("s1", nil)
	if _, _, ok := resolve("", "a"); ok || key2 == key {
		t.Errorf("dropped table still resolves (key %q → %q)", key, key2)
	}
	if r, k := tt.resolver("s2", nil); r != nil || k != "" {
		t.Error("another session sees s1's tables")
	}
	tt.forget("s1")
	if _, k := tt.resolver("s1", nil); k != "" {
		t.Error("forgotten session still has tables")
	}
}

func TestHasPrefixFold(t *testing.T) {
	for s, want := range map[string]bool{
		"create temp table x (a int)":                   true,
		"-- why\n  /* note */ (CREATE TABLE x (a int))": true,
		"/* unterminated CREATE":                        false,
		"-- only a comment":                             false,
		"SELECT 'create'":                               false,
	} {
		if got := hasPrefixFold(s, "CREATE"); got != want {
			t.Errorf("%q: %v", s, got)
		}
	}
}
