package gate_test

import (
	"context"
	"testing"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// TestCheckOnly: a check narrowed to one statement of a string keeps the decision and holds
// that statement alone; out of range, or for a single statement, it is the check itself.
func TestCheckOnly(t *testing.T) {
	g := &gate.Gate{Inspector: inspect.New(10)}
	c := g.Check(context.Background(), nil, "select 1 as a; select 2 as b; select 3 as c", gate.ViaQuery)
	if len(c.Statements) != 3 {
		t.Fatalf("%d statements", len(c.Statements))
	}
	for i, want := range []string{"select 1 as a", "select 2 as b", "select 3 as c"} {
		one := c.Only(i)
		if len(one.Statements) != 1 || one.Statements[0].Text != want || one.Decision != c.Decision || one.Via != c.Via {
			t.Fatalf("Only(%d) = %+v", i, one)
		}
	}
	for _, i := range []int{-1, 3} {
		if c.Only(i) != c {
			t.Errorf("Only(%d) is not the whole check", i)
		}
	}
	single := g.Check(context.Background(), nil, "select 1", gate.ViaQuery)
	if single.Only(0) != single {
		t.Error("Only of a single-statement check is not the check itself")
	}
}
