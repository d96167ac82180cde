package ledger

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCanonicalEventMatchesCanonical holds the direct encoder to the definition: for many
// varied events it must write exactly what Canonical makes of encoding/json's output, or
// say it cannot (then seal takes that path), so existing ledgers keep verifying.
func TestCanonicalEventMatchesCanonical(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", "alice@corp.example", "SELECT * FROM t WHERE x = $1", `"quoted"`, `back\slash`, "<b>&amp;</b>",
		"\x00", "\x01\x07\x08\x0b\x0c\x1f", "\n\r\t", "\x7f", "é", "漢字", "😀", "\u2028", "\u2029", "\ufffd", "\u00a0", "\u200b", " ", "{}", "[1]", "\\u0041"}
	invalid := []string{"\xff", "\xc3", "a\xe2\x80", "\xed\xa0\x80"}
	str := func(bad bool) string {
		if rng.IntN(4) == 0 {
			return ""
		}
		var b bytes.Buffer
		for n := rng.IntN(4) + 1; n > 0; n-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		if bad && rng.IntN(3) == 0 {
			b.WriteString(invalid[rng.IntN(len(invalid))])
		}
		return b.String()
	}
	strs := func(bad bool) []string {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, rng.IntN(4)+1)
		for i := range out {
			out[i] = str(bad)
		}
		return out
	}
	num := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return -rng.Int64()
		case 2:
			return rng.Int64()
		}
		return rng.Int64N(1000)
	}
	types := []EventType{EventStatement, EventSessionStart, EventAdmin, "", "custom.type"}
	checked, fallbacks := 0, 0
	for i := 0; i < 5000; i++ {
		bad := i%5 == 0
		ev := &Event{Seq: num(), Instance: str(bad), Type: types[rng.IntN(len(types))],
			Time:      time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)*int64(rng.IntN(2))).UTC(),
			SessionID: str(bad), Subject: str(bad), IdentityKind: str(bad), Groups: strs(bad), AuthMethod: str(bad),
			ClientAddr: str(bad), ApplicationName: str(bad), TLS: rng.IntN(2) == 0, Target: str(bad), Environment: str(bad),
			Database: str(bad), UpstreamRole: str(bad), Via: str(bad), Decision: str(bad), Rule: str(bad), ApprovalID: str(bad),
			Rows: num(), Bytes: num(), ValuesMasked: num(), SQLState: str(bad), Duration: time.Duration(num()),
			Message: str(bad), Purpose: str(bad), Traceparent: str(bad), PrevHash: str(false)}
		if rng.IntN(3) == 0 {
			ev.Time = ev.Time.In(time.FixedZone("x", 3600*(rng.IntN(25)-12)))
		}
		for n := rng.IntN(4); n > 0; n-- {
			st := Statement{Kind: str(bad), Category: str(bad), Redacted: str(bad), Fingerprint: str(bad), TablesRead: strs(bad), TablesWritten: strs(bad)}
			switch rng.IntN(3) {
			case 0:
				st.Sensitive = map[string]string{}
			case 1:
				st.Sensitive = map[string]string{}
				for m := rng.IntN(5) + 1; m > 0; m-- {
					st.Sensitive[str(bad)] = str(bad)
				}
			}
			ev.Statements = append(ev.Statements, st)
		}
		if rng.IntN(4) == 0 {
			ev.Statements = []Statement{}
		}
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Canonical(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendCanonicalEvent(nil, ev)
		if !ok {
			fallbacks++
			if !bad {
				t.Fatalf("event %d has only valid UTF-8 but the direct encoder declined it: %+v", i, ev)
			}
			continue
		}
		checked++
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d: direct canonical encoding differs\n got %s\nwant %s", i, got, want)
		}
		// sealEvent must produce the same body and hash as seal.
		ev2, ev3 := *ev, *ev
		body, err := sealEvent(&ev2)
		if err != nil {
			t.Fatal(err)
		}
		body3, err := seal(&ev3)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, body3) || ev2.Hash != ev3.Hash {
			t.Fatalf("event %d: sealEvent and seal differ:\n%s %s\n%s %s", i, body, ev2.Hash, body3, ev3.Hash)
		}
		if h, err := HashRecord(body); err != nil || h != ev2.Hash || h != ChainHash(ev.PrevHash, want) {
			t.Fatalf("event %d: sealed hash %s, recomputed %s (%v)", i, ev2.Hash, h, err)
		}
	}
	if checked < 4000 || fallbacks == 0 {
		t.Fatalf("checked %d events directly, %d through the fallback; the generator is off", checked, fallbacks)
	}
}

// TestSealFallsBackOnInvalidUTF8: invalid UTF-8 takes the general path and still seals
// to a record that verifies.
func TestSealFallsBackOnInvalidUTF8(t *testing.T) {
	ev := &Event{Seq: 1, Type: EventStatement, Time: time.Unix(1, 0).UTC(), Subject: "bad\xff",
		Statements: []Statement{{Kind: "SELECT", Sensitive: map[string]string{"a\xfe": "x", "a\xff": "y"}}}}
	body, err := sealEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := HashRecord(body); err != nil || h != ev.Hash {
		t.Fatalf("record sealed from invalid UTF-8 hashes to %s (%v), sealed %s", h, err, ev.Hash)
	}
}

// BenchmarkCanonicalEvent measures the canonical encoding of a pgbench -S statement event
// as the gate records it (every event's sealing pays it, on the statement's path).
func BenchmarkCanonicalEvent(b *testing.B) {
	ev := stmtEvent("bench@corp.example", "SELECT", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", []string{"pgbench_accounts"}, nil)
	ev.Seq, ev.Instance, ev.SessionID, ev.Database, ev.AuthMethod = 32688, "vm", "52c9bda323a15527", "app", "token"
	ev.PrevHash = "85e94c3937e4e5e19270ce8c411139e3b8a476a20006ca33ae573345bac23f2a"
	ev.Time = time.Date(2026, 12, 7, 19, 18, 19, 669102036, time.UTC)
	ev.Rows, ev.Bytes, ev.Duration, ev.Via = 1, 12, 104920, "query"
	ev.Statements[0].Fingerprint = "348bee4e67e86ca6"
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var ok bool
		buf, ok = appendCanonicalEvent(buf[:0], ev)
		if !ok {
			b.Fatal("not encoded")
		}
	}
	b.SetBytes(int64(len(buf)))
}
