package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestClassRunsAnyRange: the running totals (index_agg.go) answer who read a class over
// any range of whole days exactly, when the reads of a reader arrive out of day order
// across many indexer transactions (a late day shifts the totals of the days after it) and
// after retention cut the chain in the middle of a day.
func TestClassRunsAnyRange(t *testing.T) {
	ctx := context.Background()
	s, dir := openTestSQLite(t)
	ts := &testStore{Store: s, dir: dir}
	l := newLedger(t, ts, Options{})
	const days = 12
	day0 := time.Now().UTC().Truncate(24 * time.Hour).Add(-(days + 1) * 24 * time.Hour)
	rng := rand.New(rand.NewPCG(1, 2))
	order := rng.Perm(days)
	for batch, d := range order {
		// A few reads of some readers on day d, every 7th refused, every 5th a write.
		for i := 0; i < 4+batch%3; i++ {
			kind := "SELECT"
			if (d+i)%5 == 4 {
				kind = "UPDATE"
			}
			ev := stmtEvent(fmt.Sprintf("u%d@corp", (d*3+i)%5), kind, "SELECT email FROM public.customers WHERE id = ?", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
			ev.Time = day0.Add(time.Duration(d)*24*time.Hour + time.Duration(rng.Int64N(int64(24*time.Hour))))
			if (d+i)%7 == 6 {
				ev.Decision = "deny"
			}
			record(t, l, ev)
		}
		// Each day's reads in an indexer transaction of their own.
		if err := s.ix.sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for d1 := 0; d1 <= days; d1++ {
			for d2 := d1 + 1; d2 <= days+1; d2++ {
				for _, tr := range []TimeRange{
					{From: day0.Add(time.Duration(d1) * 24 * time.Hour), To: day0.Add(time.Duration(d2) * 24 * time.Hour)},
					{From: day0.Add(time.Duration(d1)*24*time.Hour - 5*time.Hour - 3), To: day0.Add(time.Duration(d2)*24*time.Hour + 7*time.Hour + 11)},
				} {
					got, err := s.PIIReaders(ctx, "pii", tr)
					if err != nil {
						t.Fatal(err)
					}
					if want := piiReadersByScan(t, s, "pii", tr); fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("%s: readers in %v..%v:\n got %+v\nwant %+v", when, tr.From, tr.To, got, want)
					}
				}
			}
		}
	}
	check("recorded out of day order")
	var runs int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger_class_run WHERE class = 'pii' AND category = 'read' AND decision = 'allow'`).Scan(&runs); err != nil || runs == 0 {
		t.Fatalf("running-total rows: %d, %v", runs, err)
	}
	if _, err := l.Retain(ctx, day0.Add(4*24*time.Hour+12*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("after retention")
}
