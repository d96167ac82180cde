package mask

import (
	"encoding/binary"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// streamRules are the rules of the bench's streamed table (test/bench: id, email, score,
// note) for the default profile: the e-mail partially masked, the note scanned by the
// value detectors, the numbers left alone.
func streamRules(format int16) []Rule {
	prof := BuiltinProfiles()[ProfileDefault]
	rules := []Rule{
		{Kind: KindOpaque, Format: format},
		{Kind: KindText, Format: format, Class: classify.Email},
		{Kind: KindOpaque, Format: format},
		{Kind: KindText, Format: format},
	}
	for i := range rules {
		rules[i].plan(prof)
	}
	return rules
}

// cpuClock reports the process's CPU time per operation as "cpu-ns/op" when the benchmark
// ends: on a shared, loaded machine wall time per operation swings with the load, CPU time
// much less.
func cpuClock(b *testing.B) {
	b.Helper()
	start := cpuTime(b)
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		}
	})
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// streamRow returns the values of row i of the streamed table, as text.
func streamRow(i int) [][]byte {
	id := strconv.Itoa(i)
	return [][]byte{[]byte(id), []byte("user" + id + "@example.com"), []byte(strconv.Itoa(i % 1000)), []byte("order " + id)}
}

// BenchmarkCopyMasked is the per-row cost of masking COPY ... TO STDOUT output of the
// streamed table in each format (one CopyData payload per row, as PostgreSQL sends them).
func BenchmarkCopyMasked(b *testing.B) {
	const n = 1024
	for _, format := range []string{"text", "csv", "binary"} {
		b.Run(format, func(b *testing.B) {
			opts := CopyOptions{Format: format, Delimiter: '\t', Null: `\N`, Quote: '"', Escape: '"'}
			f := int16(0)
			if format == "csv" {
				opts.Delimiter, opts.Null = ',', ""
			}
			if format == "binary" {
				f = 1
			}
			rows := make([][]byte, n)
			for i := range rows {
				vals := streamRow(i + 1_000_000)
				var line []byte
				if f == 1 {
					id, score := make([]byte, 4), make([]byte, 4)
					binary.BigEndian.PutUint32(id, uint32(i+1_000_000))
					binary.BigEndian.PutUint32(score, uint32(i%1000))
					vals[0], vals[2] = id, score
					line = binary.BigEndian.AppendUint16(line, uint16(len(vals)))
					for _, v := range vals {
						line = binary.BigEndian.AppendUint32(line, uint32(len(v)))
						line = append(line, v...)
					}
				} else {
					for j, v := range vals {
						if j > 0 {
							line = append(line, opts.Delimiter)
						}
						line = append(line, v...)
					}
					line = append(line, '\n')
				}
				rows[i] = line
			}
			cm := NewCopyMasker(newMasker(b), streamRules(f), opts)
			if f == 1 {
				header := append(append([]byte(nil), binarySignature...), 0, 0, 0, 0, 0, 0, 0, 0)
				if _, _, err := cm.MaskData(header); err != nil {
					b.Fatal(err)
				}
			}
			bytes := 0
			for _, r := range rows {
				bytes += len(r)
			}
			b.SetBytes(int64(bytes / n))
			b.ReportAllocs()
			cpuClock(b)
			// As the door does: the masked CopyData message appended to the client's output.
			var out []byte
			i := 0
			for b.Loop() {
				var err error
				var k int
				if out, k, err = cm.MaskCopyData(out[:0], rows[i%n]); err != nil || k != 1 {
					b.Fatal(k, err)
				}
				i++
			}
		})
	}
}

// BenchmarkDataRowMasked is the per-row cost of masking one DataRow message of the streamed
// table as the door relays it, from the upstream frame to the client-bound frame.
func BenchmarkDataRowMasked(b *testing.B) {
	const n = 1024
	frames := make([][]byte, n)
	for i := range frames {
		var err error
		frames[i], err = (&pgproto3.DataRow{Values: streamRow(i + 1_000_000)}).Encode(nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	m := newMasker(b)
	rm := &ResultMasker{m: m, rules: streamRules(0), active: []int{1, 3}}
	b.Run("decode-maskrow-encode", func(b *testing.B) {
		var row pgproto3.DataRow
		var out []byte
		b.SetBytes(int64(len(frames[0])))
		b.ReportAllocs()
		cpuClock(b)
		i := 0
		for b.Loop() {
			if err := row.Decode(frames[i%n][5:]); err != nil {
				b.Fatal(err)
			}
			if rm.MaskRow(row.Values) != 1 {
				b.Fatal("not masked")
			}
			var err error
			if out, err = row.Encode(out[:0]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("frame", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(frames[0])))
		b.ReportAllocs()
		cpuClock(b)
		i := 0
		for b.Loop() {
			var err error
			var k int
			if out, k, err = rm.MaskDataRow(out[:0], frames[i%n][5:]); err != nil || k != 1 {
				b.Fatal(k, err)
			}
			i++
		}
	})
}
