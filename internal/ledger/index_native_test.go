package ledger

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestIndexerBindsNatively: with the driver this module pins, the indexer runs its writes
// through SQLite's own interface (index_native.go), and every kind of argument it binds
// arrives as bound, boxed (execRaw) or not (execArgs): NULL, integers, booleans, reals,
// texts (empty, long, with NUL and multi-byte characters) and blobs, also when a later
// statement needs a larger argument buffer than an earlier one had. A statement that fails
// reports SQLite's error and leaves the next one working. The driver's path, kept for a
// driver whose connection index_native.go does not know, stores the same.
func TestIndexerBindsNatively(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := s.ix
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			x.resetConn()
			x.noNative = !native
			if err := x.connect(ctx); err != nil {
				t.Fatal(err)
			}
			// (The pool may lend the same connection again: its temporary table stays.)
			if err := x.exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS bound (id INTEGER PRIMARY KEY, v ANY)`); err != nil {
				t.Fatal(err)
			}
			if err := x.exec(ctx, `DELETE FROM bound`); err != nil {
				t.Fatal(err)
			}
			if native && x.native == nil {
				t.Fatalf("the indexer binds through the driver: modernc.org/sqlite's connection is not what index_native.go reads")
			}
			if !native && x.native != nil {
				t.Fatal("the driver's path was not taken")
			}
			checkBinding(ctx, t, x)
		})
	}
}

func checkBinding(ctx context.Context, t *testing.T, x *sqliteIndexer) {
	long := strings.Repeat("é\x00x", 20000) // larger than the first buffer
	vals := []any{nil, int64(-7), 42, true, 2.5, "", "héllo", long, []byte{0, 1, 2, 255}, "after"}
	for i, v := range vals {
		res, err := x.execRaw(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, []any{int64(i + 1), v})
		if err != nil {
			t.Fatalf("bind %T: %v", v, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			t.Fatalf("bind %T: %d rows", v, n)
		}
		if id, _ := res.LastInsertId(); id != int64(i+1) {
			t.Fatalf("bind %T: last id %d, want %d", v, id, i+1)
		}
	}
	// Several values in one statement share the buffer; unboxed arguments bind the same.
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?), (?, ?), (?, ?)`, int64(100), "a", int64(101), long[:5], int64(102), "ccc"); err != nil {
		t.Fatal(err)
	}
	var typed []nativeArg
	for i, v := range []any{nil, int64(1 << 40), -1.25, "typed", []byte("blob"), long} {
		a, err := anyArg(v)
		if err != nil {
			t.Fatal(err)
		}
		typed = append(typed, intArg(int64(200+i)), a)
	}
	if _, err := x.execArgs(ctx, `INSERT INTO bound(id, v) VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)`, typed); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{1: "null:", 2: "integer:-7", 3: "integer:42", 4: "integer:1", 5: "real:2.5", 6: "text:", 7: "text:héllo", 8: "text:" + long,
		9: "blob:" + string([]byte{0, 1, 2, 255}), 10: "text:after", 100: "text:a", 101: "text:" + long[:5], 102: "text:ccc",
		200: "null:", 201: "integer:1099511627776", 202: "real:-1.25", 203: "text:typed", 204: "blob:blob", 205: "text:" + long}
	rows, err := x.conn.QueryContext(ctx, `SELECT id, typeof(v), v FROM bound ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var id int64
		var typ string
		var v any
		if err := rows.Scan(&id, &typ, &v); err != nil {
			t.Fatal(err)
		}
		var s string
		switch v := v.(type) {
		case nil:
		case []byte:
			s = string(v)
		default:
			s = fmt.Sprint(v)
		}
		if g := typ + ":" + s; g != want[id] {
			if len(g) > 60 {
				g = g[:60] + "…"
			}
			t.Errorf("row %d: %q", id, g)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != len(want) {
		t.Fatalf("%d rows, want %d", got, len(want))
	}
	// A constraint violation is SQLite's error; the statement works again after it.
	err = x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(1), "again")
	if err == nil || !strings.Contains(err.Error(), "UNIQUE constraint failed") {
		t.Fatalf("duplicate id: %v", err)
	}
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(300), []byte("ok")); err != nil {
		t.Fatal(err)
	}
	var b []byte
	if err := x.conn.QueryRowContext(ctx, `SELECT v FROM bound WHERE id = 300`).Scan(&b); err != nil || !bytes.Equal(b, []byte("ok")) {
		t.Fatalf("after an error: %q, %v", b, err)
	}
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(400)); err == nil {
		t.Fatal("a statement given too few arguments ran")
	}
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(400), struct{}{}); err == nil {
		t.Fatal("an argument of an unknown type was bound")
	}
}

// TestIndexerStoresEventsEitherWay: events stored and indexed through the driver's path
// (a driver index_native.go does not know) and through SQLite's own interface read back
// alike, with their search terms.
func TestIndexerStoresEventsEitherWay(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			ctx := context.Background()
			s, err := OpenSQLite(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.ix.mu.Lock()
			s.ix.noNative = !native
			s.ix.mu.Unlock()
			l, err := New(ctx, s, Options{Instance: "gh-1", Key: testKey(t)})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 100; i++ {
				ev := stmtEvent(fmt.Sprintf("user%d@corp", i%7), "SELECT", "SELECT email FROM public.customers WHERE id = $1", []string{"public.customers"}, map[string]string{"public.customers.email": "email"})
				if err := l.Record(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			found, err := s.Search(ctx, Query{Identity: "user3@corp", Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(found) != 14 {
				t.Fatalf("%d events of user3@corp found, want 14", len(found))
			}
			for _, ev := range found {
				if ev.Subject != "user3@corp" || len(ev.Statements) != 1 || ev.Statements[0].Sensitive["public.customers.email"] != "email" {
					t.Fatalf("found %+v", ev)
				}
			}
			s.ix.mu.Lock()
			took := s.ix.native != nil
			s.ix.mu.Unlock()
			if took != native {
				t.Fatalf("native path taken: %v, want %v", took, native)
			}
			rep, err := Verify(ctx, StoreSource{Store: s}, l.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) > 0 {
				t.Fatalf("verify: %+v", rep.Problems)
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
