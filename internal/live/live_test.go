package live

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestRegistryAddCountEndRemove(t *testing.T) {
	r := New()
	var endedBy atomic.Value
	now := time.Now()
	a := r.Add(Session{ID: "a", Subject: "alice", Since: now}, func(by string) { endedBy.Store(by) })
	r.Add(Session{ID: "b", Subject: "bob", Since: now.Add(time.Second)}, nil)
	v := r.Version()
	a.Count(Statement{Text: "SELECT $1", Decision: "allow", Rows: 5})
	a.Count(Statement{Text: "DELETE FROM t", Decision: "deny"})
	if rec, ok := r.Recent("a"); !ok || len(rec) != 2 || rec[0].Text != "DELETE FROM t" || !rec[0].Refused() || rec[1].Rows != 5 {
		t.Fatalf("recent = %+v", rec)
	}
	for i := 0; i < 2*RecentStatements+3; i++ {
		a.Count(Statement{Text: fmt.Sprintf("SELECT %d", i), Decision: "allow"})
	}
	rec, _ := r.Recent("a")
	if len(rec) != RecentStatements {
		t.Fatalf("recent keeps %d statements, want %d", len(rec), RecentStatements)
	}
	newest, oldest := fmt.Sprintf("SELECT %d", 2*RecentStatements+2), fmt.Sprintf("SELECT %d", RecentStatements+3)
	if rec[0].Text != newest || rec[RecentStatements-1].Text != oldest {
		t.Fatalf("recent runs %q .. %q, want %q .. %q", rec[0].Text, rec[RecentStatements-1].Text, newest, oldest)
	}
	if r.Version() == v {
		t.Fatal("counting did not change the version")
	}
	if tot := r.Totals(); tot != (Totals{Statements: 2 + 2*RecentStatements + 3, Refused: 1}) {
		t.Fatalf("totals %+v", tot)
	}
	list := r.List()
	if len(list) != 2 || list[0].ID != "a" || list[0].Statements != 2+2*RecentStatements+3 || list[0].Rows != 5 {
		t.Fatalf("list = %+v", list)
	}
	if _, err := r.End("a", "sec"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.End("a", "sec2"); err != nil {
		t.Fatal(err)
	}
	if got := endedBy.Load(); got != "sec" {
		t.Fatalf("end called with %v, want sec (once)", got)
	}
	a.Remove()
	a.Remove()
	if _, ok := r.Get("a"); ok {
		t.Fatal("removed session still listed")
	}
	if _, err := r.End("a", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("End of a gone session: %v", err)
	}
	if _, err := r.End("b", "sec"); !errors.Is(err, ErrNotEndable) {
		t.Fatalf("End of a session without an end function: %v", err)
	}
	var nilEntry *Entry
	nilEntry.Count(Statement{}) // sessions not attached have no entry
	nilEntry.Remove()
}
