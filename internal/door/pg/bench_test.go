package pg

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/mask"
)

// rowStream is n DataRows of a typical shape (an id, a name, an email).
func rowStream(b *testing.B, n int) []byte {
	row, err := (&pgproto3.DataRow{Values: [][]byte{[]byte("123456"), []byte("Ann Example"), []byte("ann@example.com"), []byte("123-45-6789")}}).Encode(nil)
	if err != nil {
		b.Fatal(err)
	}
	return bytes.Repeat(row, n)
}

// loopReader replays data forever, so a benchmark measures the relay and not the input.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	if l.off == len(l.data) {
		l.off = 0
	}
	n := copy(p, l.data[l.off:])
	l.off += n
	return n, nil
}

// BenchmarkFrameReader measures reading one message with the framed reader.
func BenchmarkFrameReader(b *testing.B) {
	data := rowStream(b, 1000)
	fr := newFrameReader(&loopReader{data: data}, 0)
	b.SetBytes(int64(len(data) / 1000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.next(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRows relays DataRows for one pending Execute through the response side.
func benchRows(b *testing.B, masker gate.MaskPlanner) {
	data := rowStream(b, 1000)
	r, _ := offlineRelay(bytes.NewReader(nil), masker)
	r.out = newClientOut(io.Discard, r.recordFailed)
	r.ur = newFrameReader(&loopReader{data: data}, 0)
	r.portalCols[""] = []gate.Column{{Name: "id"}, {Name: "name"}, {Name: "email"}, {Name: "ssn"}}
	r.push(&pending{request: request{kind: pExecute, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow}}}})
	ctx := context.Background()
	b.SetBytes(int64(len(data) / 1000))
	b.ReportAllocs()
	for b.Loop() {
		fr, err := r.ur.next()
		if err != nil {
			b.Fatal(err)
		}
		if err := r.fromUpstream(ctx, fr); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataRowPassThrough is the hot path with no masking: read, count, forward.
func BenchmarkDataRowPassThrough(b *testing.B) { benchRows(b, nil) }

// BenchmarkDataRowMasked decodes, masks one column and re-encodes each row.
func BenchmarkDataRowMasked(b *testing.B) { benchRows(b, &ssnMasker{}) }

// BenchmarkSelectOne compares one client's SELECT round trip direct and through the door in
// the same run, in the three ways pgbench -S sends it: simple (a Query), extended (the unnamed
// statement parsed every time, as -M extended) and prepared (a named statement bound again,
// as -M prepared). Besides ns/op it reports the round trip's p50 and p99 (µs) and the CPU
// of this process per round trip (cpu-µs/op, the pgx client included, so the door's own CPU
// per statement is the gatehouse figure minus the direct one). The door runs the real
// inspector and the test policy; "gatehouse" records to a recorder that keeps nothing, so
// the door and the gate are measured alone, and "gatehouse+ledger" to the embedded ledger
// (default durability, its search indexer running in this process).
func BenchmarkSelectOne(b *testing.B) {
	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple", pgx.QueryExecModeSimpleProtocol},
		{"extended", pgx.QueryExecModeExec},
		{"prepared", pgx.QueryExecModeCacheStatement},
	}
	for _, m := range modes {
		for _, via := range []string{"direct", "gatehouse", "gatehouse+ledger"} {
			b.Run(m.name+"/"+via, func(b *testing.B) {
				dsn := shared.DSN("postgres")
				ctx := context.Background()
				if via != "direct" {
					var rec gate.Recorder = discardRecorder{}
					if via == "gatehouse+ledger" {
						rec = benchLedger(b)
					}
					e := startEnv(b, func(e *env) {
						e.srv.Log = slog.New(slog.DiscardHandler)
						e.srv.Gate.Recorder = rec
					})
					dsn = e.dsn("alice", "main")
				}
				cfg, err := pgx.ParseConfig(dsn)
				if err != nil {
					b.Fatal(err)
				}
				cfg.DefaultQueryExecMode = m.mode
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close(ctx)
				var n int
				if err := c.QueryRow(ctx, "select $1::int", 1).Scan(&n); err != nil {
					b.Fatal(err)
				}
				times := make([]time.Duration, 0, 1<<16)
				cpu0 := processCPU()
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					if err := c.QueryRow(ctx, "select $1::int", 1).Scan(&n); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(t0))
				}
				cpu := processCPU() - cpu0
				slices.Sort(times)
				b.ReportMetric(float64(cpu.Microseconds())/float64(len(times)), "cpu-µs/op")
				b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds())/1e3, "p99-µs")
			})
		}
	}
}

// benchLedger is an embedded ledger in a temporary directory, closed when b ends.
func benchLedger(b *testing.B) *ledger.Ledger {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := ledger.OpenSQLite(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	l, err := ledger.New(ctx, st, ledger.Options{Instance: "bench", DataDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := l.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return l
}

// discardRecorder answers every record at once and keeps none, so a long benchmark neither
// grows the heap nor measures a ledger.
type discardRecorder struct{}

func (discardRecorder) Record(context.Context, *ledger.Event) error { return nil }

func (discardRecorder) Healthy() error { return nil }

func (discardRecorder) Submit(context.Context, *ledger.Event) *ledger.Ack {
	return ledger.AnsweredAck(nil)
}

// BenchmarkMultiStatement relays one simple Query of N statements (`select 1 as a;` × N)
// through the request side (gate check with the real inspector) and the response side (a
// RowDescription, DataRow and CommandComplete per statement, masked by the real planner),
// at two sizes: the cost per statement (ns/stmt) must not grow with N.
func BenchmarkMultiStatement(b *testing.B) {
	for _, n := range []int{500, 2000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			mk, err := mask.NewMasker(bytes.Repeat([]byte{7}, 32))
			if err != nil {
				b.Fatal(err)
			}
			r, _ := offlineRelay(bytes.NewReader(nil), mask.NewPlanner(nil, mk, nil, slog.New(slog.DiscardHandler)))
			r.out = newClientOut(io.Discard, r.recordFailed)
			r.srv.Gate.Inspector = inspect.New(0) // no cache: both sizes parse their text every time
			sql := strings.Repeat("select 1 as a;", n)
			query, err := (&pgproto3.Query{String: sql}).Encode(nil)
			if err != nil {
				b.Fatal(err)
			}
			var resp []byte
			for range n {
				resp = append(resp, backendBytes(b,
					&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}},
					&pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
					&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})...)
			}
			resp = append(resp, backendBytes(b, &pgproto3.ReadyForQuery{TxStatus: 'I'})...)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.fromClient(ctx, query); err != nil {
					b.Fatal(err)
				}
				r.ur = newFrameReader(bytes.NewReader(resp), 0)
				for {
					fr, err := r.ur.next()
					if err != nil {
						break
					}
					if err := r.fromUpstream(ctx, fr); err != nil {
						b.Fatal(err)
					}
				}
				if err := r.out.release(ctx, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/stmt")
		})
	}
}

func backendBytes(b testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// roundTrip is one round trip of a statement whose shape the relay has seen, without
// sockets: setup and setupRes prepare it (not measured), req and res are what one round
// trip reads from the client and from the upstream (nReq and nRes messages), and checks
// are the gate checks the relay makes for it (the statement's text and how it came).
type roundTrip struct {
	name            string
	masker          gate.MaskPlanner
	setup, setupRes []byte
	req, res        []byte
	nReq, nRes      int
	text            string
	checks          []gate.Via
}

// roundTrips are the cases of BenchmarkRoundTrip and TestRoundTripAllocatesOnlyTheGates.
// extended: a prepared statement (Bind, Execute, Sync; BindComplete, a row, CommandComplete,
// ReadyForQuery), plain and masked; unnamed: the unnamed statement parsed again every time,
// as pgbench -M extended and libpq's PQexecParams do (Parse, Bind, Describe, Execute, Sync;
// ParseComplete, BindComplete, RowDescription, a row, CommandComplete, ReadyForQuery);
// simple: a simple Query (RowDescription, a row, CommandComplete, ReadyForQuery).
func roundTrips(tb testing.TB) []roundTrip {
	cols := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("id"), DataTypeOID: 23}, {Name: []byte("ssn"), DataTypeOID: 25}}}
	row := &pgproto3.DataRow{Values: [][]byte{[]byte("1"), []byte("123-45-6789")}}
	done := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}
	idle := &pgproto3.ReadyForQuery{TxStatus: 'I'}
	const stmt, query = "select $1::int as id, 'x' as ssn", "select 1 as id, 'x' as ssn"
	prepare := encodeFrames(tb, &pgproto3.Parse{Name: "s1", Query: stmt}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	prepared := backendBytes(tb, &pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}, cols, idle)
	bind := encodeFrames(tb, &pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}}, ResultFormatCodes: []int16{1, 0}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	bound := backendBytes(tb, &pgproto3.BindComplete{}, row, done, idle)
	parse := encodeFrames(tb, &pgproto3.Parse{Query: stmt}, &pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	parsed := backendBytes(tb, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, cols, row, done, idle)
	simple := encodeFrames(tb, &pgproto3.Query{String: query})
	answer := backendBytes(tb, cols, row, done, idle)
	execute, parseExecute, viaQuery := []gate.Via{gate.ViaExecute}, []gate.Via{gate.ViaParse, gate.ViaExecute}, []gate.Via{gate.ViaQuery}
	return []roundTrip{
		{"extended", nil, prepare, prepared, bind, bound, 3, 4, stmt, execute},
		{"extended-masked", &ssnMasker{}, prepare, prepared, bind, bound, 3, 4, stmt, execute},
		{"unnamed", nil, parse, parsed, parse, parsed, 5, 6, stmt, parseExecute},
		{"unnamed-masked", &ssnMasker{}, parse, parsed, parse, parsed, 5, 6, stmt, parseExecute},
		{"simple", nil, simple, answer, simple, answer, 1, 4, query, viaQuery},
		{"simple-masked", &ssnMasker{}, simple, answer, simple, answer, 1, 4, query, viaQuery},
	}
}

// start returns an offline relay that has relayed the case's setup and one round trip (which
// may ask for the portal's columns), and a function that relays one more round trip.
func (tc roundTrip) start(tb testing.TB) (*relay, func()) {
	r, _ := offlineRelay(bytes.NewReader(nil), tc.masker)
	r.out = newClientOut(io.Discard, r.recordFailed)
	r.uw.Reset(io.Discard)
	r.srv.Gate.Inspector = inspect.New(1000)
	r.srv.Gate.Recorder = discardRecorder{}
	ctx := context.Background()
	r.cr, r.ur = newFrameReader(bytes.NewReader(tc.setup), 0), newFrameReader(bytes.NewReader(tc.setupRes), 0)
	relayAll(tb, r)
	r.cr, r.ur = newFrameReader(bytes.NewReader(tc.req), 0), newFrameReader(bytes.NewReader(tc.res), 0)
	relayAll(tb, r)
	r.cr, r.ur = newFrameReader(&loopReader{data: tc.req}, 0), newFrameReader(&loopReader{data: tc.res}, 0)
	return r, func() {
		for range tc.nReq {
			fr, err := r.cr.next()
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := r.fromClient(ctx, fr); err != nil {
				tb.Fatal(err)
			}
		}
		for range tc.nRes {
			fr, err := r.ur.next()
			if err != nil {
				tb.Fatal(err)
			}
			if err := r.fromUpstream(ctx, fr); err != nil {
				tb.Fatal(err)
			}
		}
		if err := r.out.release(ctx, true); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip relays one round trip of a statement whose shape the relay has seen
// (roundTrips), through both sides, gate check and ledger submission (to a recorder that
// keeps nothing) included: allocs/op is what the relay and the gate spend per statement.
func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range roundTrips(b) {
		b.Run(tc.name, func(b *testing.B) {
			_, once := tc.start(b)
			b.ReportAllocs()
			for b.Loop() {
				once()
			}
		})
	}
}

// relayAll relays every client message r.cr holds, then every upstream message r.ur holds.
func relayAll(b testing.TB, r *relay) {
	ctx := context.Background()
	for {
		fr, err := r.cr.next()
		if err != nil {
			break
		}
		if _, err := r.fromClient(ctx, fr); err != nil {
			b.Fatal(err)
		}
	}
	for {
		fr, err := r.ur.next()
		if err != nil {
			break
		}
		if err := r.fromUpstream(ctx, fr); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.out.release(ctx, true); err != nil {
		b.Fatal(err)
	}
}

func encodeFrames(b testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}
