package live

import (
	"errors"
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
	a.Count(5, false, false)
	a.Count(0, true, false)
	if r.Version() == v {
		t.Fatal("counting did not change the version")
	}
	if tot := r.Totals(); tot != (Totals{Statements: 2, Refused: 1}) {
		t.Fatalf("totals %+v", tot)
	}
	list := r.List()
	if len(list) != 2 || list[0].ID != "a" || list[0].Statements != 2 || list[0].Rows != 5 {
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
	var nilEntry *Entry
	nilEntry.Count(1, false, false) // sessions not attached have no entry
	nilEntry.Remove()
}
