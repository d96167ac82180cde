package pg

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/mask"
)

// streamRowPlanner plans every result as the bench's streamed table (id, email, score,
// note) with the real masker's rules for the default profile: the e-mail partially masked,
// the note scanned by the value detectors. The rest of gate.MaskPlanner is ssnMasker's.
type streamRowPlanner struct {
	ssnMasker
	t testing.TB
}

func (p *streamRowPlanner) Plan(context.Context, *gate.Session, *gate.Check, []gate.Column) gate.RowMasker {
	return streamRowMasker(p.t)
}

// streamRowMasker returns the real row masker of the streamed table (text format).
func streamRowMasker(t testing.TB) *mask.ResultMasker {
	m, err := mask.NewMasker(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	prof := mask.BuiltinProfiles()[mask.ProfileDefault]
	return mask.NewResultMasker(m, []mask.Rule{
		{Kind: mask.KindOpaque, Strat: prof.For},
		{Kind: mask.KindText, Class: classify.Email, Strategy: prof.For(classify.Email), Strat: prof.For},
		{Kind: mask.KindOpaque, Strat: prof.For},
		{Kind: mask.KindText, FreeText: true, Strat: prof.For},
	})
}

// streamDataRows returns n DataRow messages of the streamed table: a NULL e-mail in every
// fourth row, an e-mail inside the note of every seventh.
func streamDataRows(t testing.TB, n int) [][]byte {
	rows := make([][]byte, n)
	for i := range rows {
		vals := [][]byte{fmt.Appendf(nil, "%d", i), fmt.Appendf(nil, "user%d@example.com", i), fmt.Appendf(nil, "%d", i%1000), fmt.Appendf(nil, "order %d", i)}
		if i%4 == 1 {
			vals[1] = nil
		}
		if i%7 == 3 {
			vals[3] = fmt.Appendf(nil, "ask x%d@example.org", i)
		}
		var err error
		if rows[i], err = (&pgproto3.DataRow{Values: vals}).Encode(nil); err != nil {
			t.Fatal(err)
		}
	}
	return rows
}

// TestMaskedRowsRelayedInOneGo: the DataRows the door relays in one go once they are read
// (maskedRow) leave exactly as masking each one alone gives them, in order, counted, from
// reads of any size, behind a ledger record that holds the output back; under a row limit
// no row beyond it leaves.
func TestMaskedRowsRelayedInOneGo(t *testing.T) {
	rows := streamDataRows(t, 5000)
	ref := streamRowMasker(t)
	var want, stream []byte
	masked := 0
	for _, row := range rows {
		out, n, err := ref.MaskDataRow(nil, row[5:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			out = row
		}
		masked += n
		want = append(want, out...)
		stream = append(stream, row...)
	}
	if bytes.Contains(want, []byte("user1000@example.com")) || !bytes.Contains(want, []byte("u***@example.com")) {
		t.Fatal("the reference output is not masked")
	}
	done := frame('C', []byte("SELECT 5000\x00"))
	stream = append(stream, done...)

	for _, limit := range []int64{0, 1234} {
		for _, hold := range []bool{false, true} {
			r, out := offlineRelay(bytes.NewReader(nil), &streamRowPlanner{t: t})
			r.ur = newFrameReader(&choppyReader{data: stream, rng: rand.New(rand.NewPCG(5, 6))}, 1<<16)
			r.portalCols[""] = []gate.Column{{Name: "id"}, {Name: "email"}, {Name: "score"}, {Name: "note"}}
			p := &pending{request: request{kind: pExecute, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow, MaxRows: limit}}}}
			r.push(p)
			ack, answer := ledger.NewAck()
			if hold {
				// A record not yet answered holds back everything after it.
				r.out.after(ack)
			}
			for {
				fr, err := r.ur.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if fr[0] == 'C' {
					break
				}
				if err := r.fromUpstream(context.Background(), fr); err != nil {
					t.Fatal(err)
				}
				if hold && out.Len() > 0 {
					t.Fatalf("limit %d: %d bytes left before their record was answered", limit, out.Len())
				}
				if r.ur.buffered() == 0 && !hold {
					if err := r.out.release(context.Background(), true); err != nil {
						t.Fatal(err)
					}
				}
			}
			answer(nil)
			if err := r.out.release(context.Background(), true); err != nil {
				t.Fatal(err)
			}
			got, wantRows := out.Bytes(), want
			if limit > 0 {
				wantRows = nil
				for i, row := range rows[:limit] {
					o, n, _ := ref.MaskDataRow(nil, row[5:])
					if n == 0 {
						o = rows[i]
					}
					wantRows = append(wantRows, o...)
				}
			}
			if !bytes.Equal(got, wantRows) {
				t.Fatalf("limit %d, held %v: client got %d bytes, want the %d bytes of masking each row alone", limit, hold, len(got), len(wantRows))
			}
			if p.rows != int64(len(rows)) || p.resRows != int64(len(rows)) {
				t.Fatalf("limit %d, held %v: %d rows (%d of the result) counted, want %d", limit, hold, p.rows, p.resRows, len(rows))
			}
			if limit == 0 && p.out.Masked != int64(masked) {
				t.Fatalf("%d values counted masked, want %d", p.out.Masked, masked)
			}
		}
	}
}

// BenchmarkMaskedRows relays the masked DataRows of the bench's streamed table through the
// response side, from upstream frames to the client's output, writing once per read as the
// upstream loop does, and reports the CPU time per row: "batched" relays the rows already
// read in one go (maskedRow), "row-by-row" one row per message through the loop, as a
// result under a row limit goes.
func BenchmarkMaskedRows(b *testing.B) {
	var data []byte
	for _, row := range streamDataRows(b, 1000) {
		data = append(data, row...)
	}
	for _, tc := range []struct {
		name  string
		limit int64
	}{{"batched", 0}, {"row-by-row", 1 << 62}} {
		b.Run(tc.name, func(b *testing.B) {
			r, _ := offlineRelay(bytes.NewReader(nil), &streamRowPlanner{t: b})
			r.out = newClientOut(io.Discard, r.recordFailed)
			r.ur = newFrameReader(&loopReader{data: data}, 0)
			r.portalCols[""] = []gate.Column{{Name: "id"}, {Name: "email"}, {Name: "score"}, {Name: "note"}}
			p := &pending{request: request{kind: pExecute, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow, MaxRows: tc.limit}}}}
			r.push(p)
			ctx := context.Background()
			b.SetBytes(int64(len(data) / 1000))
			b.ReportAllocs()
			start := processCPU()
			b.ResetTimer()
			for p.rows < int64(b.N) {
				relayUpstreamMessage(b, ctx, r)
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-start)/float64(p.rows), "cpu-ns/op")
		})
	}
}
