package policy

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// FuzzParse: any text either loads or is refused with an error; it never panics, and a policy
// that loads decides without panicking.
func FuzzParse(f *testing.F) {
	f.Add(string(DefaultText()))
	f.Add(policyAllowReads)
	f.Add(policyBad)
	f.Add("grants: [{subjects: ['*'], level: read}]\nrules: [{name: a, when: 'statement.tables.exists(t, t.matches(\"^a\"))', action: deny}]")
	f.Add("grants: {}\nrules: 3\nmasking: []\noverrides: [1]")
	f.Add("grants:\n  - groups: &g [a]\n    level: read\n  - groups: *g\n    level: write\n")
	e := newEngine(f)
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse("fuzz.yaml", []byte(text))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		e.Set(p)
		s := who("a@corp.example", identity.Human, "prod", "dba")
		e.Access(context.Background(), s)
		e.Decide(context.Background(), gate.Input{Session: s, Statement: &inspect.Statement{Kind: "DELETE", Category: inspect.Write, TablesWritten: []string{"a"}}})
		e.Decide(context.Background(), gate.Input{Session: s})
	})
}
