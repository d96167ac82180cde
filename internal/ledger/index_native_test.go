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
// arrives as bound: NULL, integers, booleans, reals, texts (empty, long, with NUL and
// multi-byte characters) and blobs, also when a later statement needs a larger argument
// buffer than an earlier one had. A statement that fails reports SQLite's error and leaves
// the next one working.
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
	if err := x.connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.exec(ctx, `CREATE TEMP TABLE bound (id INTEGER PRIMARY KEY, v ANY)`); err != nil {
		t.Fatal(err)
	}
	if x.native == nil {
		t.Fatalf("the indexer binds through the driver: modernc.org/sqlite's connection (%T) is not what index_native.go reads", x.conn)
	}
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
	// Several values in one statement share the buffer.
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?), (?, ?), (?, ?)`, int64(100), "a", int64(101), long[:5], int64(102), "ccc"); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{1: "null:", 2: "integer:-7", 3: "integer:42", 4: "integer:1", 5: "real:2.5", 6: "text:", 7: "text:héllo", 8: "text:" + long,
		9: "blob:" + string([]byte{0, 1, 2, 255}), 10: "text:after", 100: "text:a", 101: "text:" + long[:5], 102: "text:ccc"}
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
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(200), []byte("ok")); err != nil {
		t.Fatal(err)
	}
	var b []byte
	if err := x.conn.QueryRowContext(ctx, `SELECT v FROM bound WHERE id = 200`).Scan(&b); err != nil || !bytes.Equal(b, []byte("ok")) {
		t.Fatalf("after an error: %q, %v", b, err)
	}
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(300)); err == nil {
		t.Fatal("a statement given too few arguments ran")
	}
	if err := x.exec(ctx, `INSERT INTO bound(id, v) VALUES (?, ?)`, int64(300), struct{}{}); err == nil {
		t.Fatal("an argument of an unknown type was bound")
	}
	// resetConn finalizes the statements; the next pass prepares them again.
	x.resetConn()
	if err := x.connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.exec(ctx, `DELETE FROM ledger_probe WHERE id = ?`, int64(-1)); err != nil {
		t.Fatal(err)
	}
}
