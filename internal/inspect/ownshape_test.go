package inspect

import "testing"

// TestParameterTextFoundByShapeIsCached: a text with parameters and no literals is its own
// shape. When a literal variant put that shape in the shape cache first (pgbench -S in simple
// mode, then the same statement prepared), the parameterized text must still land in the
// exact-text cache, or every Parse and Execute of it normalizes it again (a cgo call).
func TestParameterTextFoundByShapeIsCached(t *testing.T) {
	in := New(1024)
	literal := "SELECT abalance FROM pgbench_accounts WHERE aid = 12345"
	param := "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	in.Inspect(literal)
	if n, ok := in.normalize(literal); !ok || n != param {
		t.Fatalf("the literal text normalizes to %q, want %q (the test's premise)", n, param)
	}
	first := in.Inspect(param)
	if len(first) != 1 || first[0].Text != param {
		t.Fatalf("Inspect(%q) = %+v", param, first)
	}
	cached, ok := in.cache.get(param)
	if !ok {
		t.Fatalf("a text that is its own shape is not in the exact-text cache after Inspect")
	}
	if len(cached) != 1 || cached[0].Text != param || cached[0].Kind != first[0].Kind {
		t.Fatalf("cached %+v, want the statement Inspect returned", cached)
	}
	// A literal variant found by its shape stays out of the exact-text cache.
	other := "SELECT abalance FROM pgbench_accounts WHERE aid = 777"
	if got := in.Inspect(other); len(got) != 1 || got[0].Text != other {
		t.Fatalf("Inspect(%q) = %+v", other, got)
	}
	if _, ok := in.cache.get(other); ok {
		t.Errorf("a literal variant found by its shape was put in the exact-text cache")
	}
}
