package ledger

import (
	"database/sql/driver"
	"fmt"
	"math"
	"reflect"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// The indexer's writes (every event row, segment term, side-table row and rollup sum) run
// through SQLite's own statement interface, the modernc translation of its C API that the
// driver itself calls, on the driver connection database/sql lent the indexer (conn.Raw).
// Written by hand because the driver's binding cost a third of indexing an event
// (BenchmarkIndex profile, modernc.org/sqlite v1.60): for each placeholder it asks SQLite
// for the placeholder's name (a C string copied into a Go string), finds its argument by a
// scan of all the arguments (quadratic in a multi-row INSERT's placeholders) and copies
// every text argument into memory of its own allocated with the C allocator (behind a
// mutex) and freed after the statement. Here the arguments are bound in order and the
// texts are copied into one buffer of C memory kept between statements.
//
// The driver keeps its SQLite handle unexported: nativeOf reads it by reflection, and
// when the driver's connection is not what it expects (another driver version), the
// indexer goes through the driver as before (TestIndexerBindsNatively fails then, so an
// upgrade that loses this path is noticed).

// nativeConn is the indexer's view of one SQLite connection.
type nativeConn struct {
	tls   *libc.TLS
	db    uintptr // sqlite3*
	stmts map[string]nativeStmt
	// typed is exec's buffer of arguments converted for execTyped.
	typed []nativeArg
	// buf is C memory holding the text arguments of the statement being run, bound
	// without a copy (SQLITE_STATIC): SQLite reads them while the statement runs, and
	// every run binds all its arguments again. bufCap is its size.
	buf    unsafe.Pointer
	bufCap int
}

// nativeStmt is a prepared statement and how many arguments it takes.
type nativeStmt struct {
	p      uintptr // sqlite3_stmt*
	params int
}

// nativeOf returns the SQLite handle behind dc, a modernc.org/sqlite driver connection;
// false when dc is not one this code knows.
func nativeOf(dc any) (*nativeConn, bool) {
	v := reflect.ValueOf(dc)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	e := v.Elem()
	if e.Type().PkgPath() != "modernc.org/sqlite" || e.Type().Name() != "conn" {
		return nil, false
	}
	db, tls := e.FieldByName("db"), e.FieldByName("tls")
	if !db.IsValid() || db.Kind() != reflect.Uintptr || !tls.IsValid() || tls.Type() != reflect.TypeFor[*libc.TLS]() || tls.IsNil() || db.Uint() == 0 {
		return nil, false
	}
	return &nativeConn{tls: (*libc.TLS)(tls.UnsafePointer()), db: uintptr(db.Uint()), stmts: map[string]nativeStmt{}}, true
}

// nativeResult is what a statement changed.
type nativeResult struct{ changes, lastID int64 }

// LastInsertId implements driver.Result.
func (r nativeResult) LastInsertId() (int64, error) { return r.lastID, nil }

// RowsAffected implements driver.Result.
func (r nativeResult) RowsAffected() (int64, error) { return r.changes, nil }

var _ driver.Result = nativeResult{}

// errorf is SQLite's error for result code rc, as the driver words it.
func (n *nativeConn) errorf(rc int32) error {
	msg := libc.GoString(sqlite3.Xsqlite3_errmsg(n.tls, n.db))
	return fmt.Errorf("%s: %s (%d)", libc.GoString(sqlite3.Xsqlite3_errstr(n.tls, rc)), msg, rc)
}

// prepare returns the prepared statement of q, preparing it the first time.
func (n *nativeConn) prepare(q string) (nativeStmt, error) {
	if st, ok := n.stmts[q]; ok {
		return st, nil
	}
	zSQL, err := libc.CString(q)
	if err != nil {
		return nativeStmt{}, fmt.Errorf("prepare index statement: %w", err)
	}
	defer libc.Xfree(n.tls, zSQL)
	// SQLite writes the statement's handle into C memory: the start of buf.
	if err := n.grow(8); err != nil {
		return nativeStmt{}, err
	}
	out := (*uintptr)(n.buf)
	*out = 0
	if rc := sqlite3.Xsqlite3_prepare_v3(n.tls, n.db, zSQL, int32(len(q)), sqlite3.SQLITE_PREPARE_PERSISTENT, uintptr(n.buf), 0); rc != sqlite3.SQLITE_OK {
		return nativeStmt{}, fmt.Errorf("prepare index statement: %w", n.errorf(rc))
	}
	p := *out
	if p == 0 {
		return nativeStmt{}, fmt.Errorf("prepare index statement: no statement in %q", q)
	}
	st := nativeStmt{p: p, params: int(sqlite3.Xsqlite3_bind_parameter_count(n.tls, p))}
	n.stmts[q] = st
	return st, nil
}

// grow makes buf hold at least size bytes.
func (n *nativeConn) grow(size int) error {
	if size <= n.bufCap && n.buf != nil {
		return nil
	}
	c := max(size, 2*n.bufCap, 4096)
	p := libc.Xmalloc(n.tls, libc.Tsize_t(c))
	if p == 0 {
		return fmt.Errorf("allocate %d bytes for index statement arguments", c)
	}
	n.freeBuf()
	// p is C memory (never moved or collected by Go), held as a pointer so that the text
	// arguments can be copied into it.
	n.buf = *(*unsafe.Pointer)(unsafe.Pointer(&p))
	n.bufCap = c
	return nil
}

func (n *nativeConn) freeBuf() {
	if n.buf != nil {
		libc.Xfree(n.tls, uintptr(n.buf))
		n.buf, n.bufCap = nil, 0
	}
}

// nativeArg is one statement argument, unboxed: building a row's arguments as interface
// values allocated for each string and integer (11 allocations per event row).
type nativeArg struct {
	s    string // text, or a blob's bytes
	i    int64  // integer, or a real's bits
	kind argKind
}

type argKind uint8

const (
	argNull argKind = iota
	argInt
	argReal
	argText
	argBlob
)

func textArg(s string) nativeArg { return nativeArg{s: s, kind: argText} }
func intArg(i int64) nativeArg   { return nativeArg{i: i, kind: argInt} }

// anyArg converts a driver value (nil, int64, int, bool, float64, string, []byte).
func anyArg(a any) (nativeArg, error) {
	switch v := a.(type) {
	case nil:
		return nativeArg{}, nil
	case int64:
		return intArg(v), nil
	case int:
		return intArg(int64(v)), nil
	case bool:
		if v {
			return intArg(1), nil
		}
		return intArg(0), nil
	case float64:
		return nativeArg{i: int64(math.Float64bits(v)), kind: argReal}, nil
	case string:
		return textArg(v), nil
	case []byte:
		return nativeArg{s: unsafe.String(unsafe.SliceData(v), len(v)), kind: argBlob}, nil
	}
	return nativeArg{}, fmt.Errorf("type %T", a)
}

// value is a as a driver value, for the driver's path.
func (a nativeArg) value() any {
	switch a.kind {
	case argInt:
		return a.i
	case argReal:
		return math.Float64frombits(uint64(a.i))
	case argText:
		return a.s
	case argBlob:
		return []byte(a.s)
	}
	return nil
}

// exec runs q once with args, driver values (see anyArg), to completion.
func (n *nativeConn) exec(q string, args []any) (nativeResult, error) {
	typed := n.typed[:0]
	defer func() {
		clear(typed)
		n.typed = typed[:0]
	}()
	for i, a := range args {
		v, err := anyArg(a)
		if err != nil {
			return nativeResult{}, fmt.Errorf("index statement argument %d: %w", i+1, err)
		}
		typed = append(typed, v)
	}
	return n.execTyped(q, typed)
}

// execTyped runs q once with args, which are bound in order, to completion.
func (n *nativeConn) execTyped(q string, args []nativeArg) (nativeResult, error) {
	st, err := n.prepare(q)
	if err != nil {
		return nativeResult{}, err
	}
	if st.params != len(args) {
		return nativeResult{}, fmt.Errorf("index statement takes %d arguments, %d given", st.params, len(args))
	}
	size := 0
	for i := range args {
		size += len(args[i].s)
	}
	if err := n.grow(size); err != nil {
		return nativeResult{}, err
	}
	buf := unsafe.Slice((*byte)(n.buf), n.bufCap)
	base := uintptr(n.buf)
	off := 0
	for i := range args {
		a := &args[i]
		idx := int32(i + 1)
		var rc int32
		switch a.kind {
		case argNull:
			rc = sqlite3.Xsqlite3_bind_null(n.tls, st.p, idx)
		case argInt:
			rc = sqlite3.Xsqlite3_bind_int64(n.tls, st.p, idx, a.i)
		case argReal:
			rc = sqlite3.Xsqlite3_bind_double(n.tls, st.p, idx, math.Float64frombits(uint64(a.i)))
		case argText:
			copy(buf[off:], a.s)
			rc = sqlite3.Xsqlite3_bind_text(n.tls, st.p, idx, base+uintptr(off), int32(len(a.s)), 0)
			off += len(a.s)
		case argBlob:
			copy(buf[off:], a.s)
			rc = sqlite3.Xsqlite3_bind_blob(n.tls, st.p, idx, base+uintptr(off), int32(len(a.s)), 0)
			off += len(a.s)
		default:
			return nativeResult{}, fmt.Errorf("index statement argument %d: kind %d", i+1, a.kind)
		}
		if rc != sqlite3.SQLITE_OK {
			return nativeResult{}, fmt.Errorf("bind index statement argument %d: %w", i+1, n.errorf(rc))
		}
	}
	rc := sqlite3.Xsqlite3_step(n.tls, st.p)
	for rc == sqlite3.SQLITE_ROW {
		rc = sqlite3.Xsqlite3_step(n.tls, st.p)
	}
	if rc != sqlite3.SQLITE_DONE {
		err := n.errorf(rc)
		sqlite3.Xsqlite3_reset(n.tls, st.p)
		return nativeResult{}, err
	}
	sqlite3.Xsqlite3_reset(n.tls, st.p)
	return nativeResult{changes: sqlite3.Xsqlite3_changes64(n.tls, n.db), lastID: sqlite3.Xsqlite3_last_insert_rowid(n.tls, n.db)}, nil
}

// close finalizes the statements and frees the buffer; the connection stays the driver's.
func (n *nativeConn) close() {
	for q, st := range n.stmts {
		sqlite3.Xsqlite3_finalize(n.tls, st.p)
		delete(n.stmts, q)
	}
	n.freeBuf()
}
