package gate

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

func TestRecordedMessage(t *testing.T) {
	st := func(sql string) []*inspect.Statement { return []*inspect.Statement{{Text: sql}} }
	for _, tc := range []struct {
		state, msg, sql, want string
	}{
		{"22P02", `invalid input syntax for type integer: "bob@example.com"`, "SELECT $1::int", `invalid input syntax for type integer: "?"`},
		{"22P02", `invalid input value for enum mood: "sad"`, "SELECT 'sad'::mood", `invalid input value for enum mood: "?"`},
		{"42703", `column "emial" does not exist`, "SELECT emial FROM t WHERE note = 'x'", `column "emial" does not exist`},
		{"42703", `column "it's" does not exist`, "SELECT 1", `column "?" does not exist`},
		{"42601", `syntax error at or near "secret"`, "SELECT 'a secret value' secret", `syntax error at or near "?"`},
		{"42883", `function f(unknown) does not exist`, "SELECT f('x')", `function f(unknown) does not exist`},
		{"42P01", `relation "t" does not exist`, "SELECT $$t$$ FROM t", `relation "?" does not exist`},
		{"23505", `duplicate key value violates unique constraint "users_pkey"`, "INSERT INTO users VALUES ('users_pkey_not')", `duplicate key value violates unique constraint "?"`},
		{"", "", "SELECT 1", ""},
		{"XX000", `unterminated "quote`, "SELECT 1", `unterminated "quote`},
	} {
		if got := recordedMessage(tc.state, tc.msg, st(tc.sql)); got != tc.want {
			t.Errorf("recordedMessage(%s, %q, %q) = %q, want %q", tc.state, tc.msg, tc.sql, got, tc.want)
		}
	}
}
