package mask

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// The streaming maskers (CopyMasker.MaskData, ResultMasker.MaskDataRow) read only the fields
// they mask and copy the rest as bytes. These tests hold them to the plain way of doing the
// same: decode every field, mask each with Apply, encode everything again.

// mixedRules covers every outcome a value can have: left alone (inert), partially masked,
// hashed, redacted, made NULL, scanned by the value detectors (hit and miss).
func mixedRules(format int16) []Rule {
	prof := BuiltinProfiles()[ProfileDefault]
	rules := []Rule{
		{Kind: KindOpaque, Format: format},
		{Kind: KindText, Format: format, Class: classify.Email},
		{Kind: KindText, Format: format},
		{Kind: KindText, Format: format, Class: classify.Password},
		{Kind: KindOpaque, Format: format, Class: classify.SSN},
		{Kind: KindText, Format: format, Class: classify.Email, Derived: true},
		{Kind: KindText, Format: format},
	}
	for i := range rules {
		rules[i].plan(prof)
	}
	rules[6].FreeText = false
	strict := BuiltinProfiles()[ProfileStrict]
	rules[3].plan(strict)
	return rules
}

// refSplitText splits a text-format COPY line into decoded fields (nil for NULL).
func refSplitText(line []byte, o CopyOptions) ([][]byte, error) {
	var fields [][]byte
	line = trimEOL(line)
	start := 0
	for {
		end := start
		for end < len(line) && line[end] != o.Delimiter {
			if line[end] == '\\' {
				end++
			}
			end++
		}
		if end > len(line) {
			return nil, errCopyRow
		}
		raw := line[start:end]
		if string(raw) == o.Null {
			fields = append(fields, nil)
		} else {
			fields = append(fields, unescapeText(nil, raw))
		}
		if end >= len(line) {
			return fields, nil
		}
		start = end + 1
	}
}

// refSplitCSV splits one CSV record into decoded fields (nil for NULL).
func refSplitCSV(line []byte, o CopyOptions) ([][]byte, error) {
	var fields [][]byte
	line = trimEOL(line)
	i := 0
	for {
		f := []byte{}
		quoted := false
		start := i
		for i < len(line) && line[i] != o.Delimiter {
			if line[i] == o.Quote {
				quoted = true
				i++
				for {
					if i >= len(line) {
						return nil, errCopyRow
					}
					c := line[i]
					if c == o.Escape && i+1 < len(line) && (line[i+1] == o.Quote || line[i+1] == o.Escape) && (o.Escape != o.Quote || line[i+1] == o.Quote) {
						f = append(f, line[i+1])
						i += 2
						continue
					}
					if c == o.Quote {
						i++
						break
					}
					f = append(f, c)
					i++
				}
				continue
			}
			f = append(f, line[i])
			i++
		}
		if !quoted && string(line[start:i]) == o.Null {
			f = nil
		}
		fields = append(fields, f)
		if i >= len(line) {
			return fields, nil
		}
		i++
	}
}

// refMaskLine masks the decoded fields of a line with Apply, as one value at a time.
func refMaskLine(m *Masker, cm *CopyMasker, fields [][]byte) ([][]byte, int) {
	out := make([][]byte, len(fields))
	n := 0
	for i, f := range fields {
		v, masked := m.Apply(cm.rule(i, len(fields)), f)
		if masked {
			n++
		}
		out[i] = v
	}
	return out, n
}

func copyOpts(format string) CopyOptions {
	switch format {
	case "csv":
		return CopyOptions{Format: "csv", Delimiter: ',', Quote: '"', Escape: '"'}
	case "csv-escape":
		return CopyOptions{Format: "csv", Delimiter: ';', Null: "NA", Quote: '\'', Escape: '\\'}
	case "text-pipe":
		return CopyOptions{Format: "text", Delimiter: '|', Null: "", Quote: '"', Escape: '"'}
	}
	return CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`, Quote: '"', Escape: '"'}
}

// checkCopyLine masks line with a CopyMasker and compares what a COPY FROM would load from
// its output with the reference masking of the decoded fields.
func checkCopyLine(t *testing.T, m *Masker, format string, star int, line []byte) {
	t.Helper()
	o := copyOpts(format)
	rules := mixedRules(0)
	cm := NewCopyMasker(m, rules, o)
	cm.star = star
	split := refSplitText
	if o.Format == "csv" {
		split = refSplitCSV
	}
	fields, refErr := split(line, o)
	var got []byte
	var n int
	var err error
	// Twice: the second call reuses the buffers the first one left.
	for k := 0; k < 2; k++ {
		got, n, err = cm.MaskData(line)
	}
	if (err != nil) != (refErr != nil) {
		t.Fatalf("%s %q: error %v, reference error %v", format, line, err, refErr)
	}
	if err != nil {
		return
	}
	want, wantN := refMaskLine(m, cm, fields)
	if n != wantN {
		t.Fatalf("%s %q: %d masked, reference %d", format, line, n, wantN)
	}
	if n == 0 {
		if !bytes.Equal(got, line) {
			t.Fatalf("%s %q: nothing masked but the row changed: %q", format, line, got)
		}
		return
	}
	loaded, err := split(got, o)
	if err != nil {
		t.Fatalf("%s %q: masked row %q does not load: %v", format, line, got, err)
	}
	if fmt.Sprintf("%q", loaded) != fmt.Sprintf("%q", want) {
		t.Fatalf("%s %q: masked row %q loads as\n%q\nwant\n%q", format, line, got, loaded, want)
	}
	if bytes.HasSuffix(line, []byte("\n")) != bytes.HasSuffix(got, []byte("\n")) {
		t.Fatalf("%s %q: line end changed: %q", format, line, got)
	}
}

var copyLines = []string{
	"42\tjohn.doe@example.com\tnotes for a@b.io\tsecret\t123-45-6789\tj.d@example.com\tplain\n",
	"42\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
	"1\tx\\ty@example.com\tline\\none \\\\ tab\\there x@example.com\tpw\\\\x\t9\tnot an email\tz\r\n",
	"1\tjo@x.io\n",
	"\n",
	"a\tb\tc\td\te\tf\tg\th\ti@example.com\n",
	"1\tbad\\",
	"1\t\\x41\\101b@example.com\tq\n",
	"42,john.doe@example.com,\"notes, for a@b.io\",secret,123-45-6789,,plain\n",
	"42,\"\",,\"\",\"\"\"\",\"a\nb@example.com\",\"x\"\"y\"\n",
	"1,\"unterminated\n",
	"42;'john@example.com';'it\\'s x@y.org';NA;1;'';NA\n",
	"42|a@b.io||x|1|\\|@example.com|q\n",
}

func TestCopyMaskerMatchesReference(t *testing.T) {
	m := newMasker(t)
	for _, format := range []string{"text", "csv", "csv-escape", "text-pipe"} {
		for _, star := range []int{-1, 2} {
			for _, l := range copyLines {
				checkCopyLine(t, m, format, star, []byte(l))
			}
		}
	}
}

func FuzzCopyMasker(f *testing.F) {
	for _, l := range copyLines {
		f.Add(uint8(0), []byte(l))
		f.Add(uint8(1), []byte(l))
	}
	m := newMasker(f)
	f.Fuzz(func(t *testing.T, sel uint8, line []byte) {
		format := []string{"text", "csv", "csv-escape", "text-pipe"}[sel%4]
		star := -1
		if sel&4 != 0 {
			star = int(sel>>3) % 7
		}
		checkCopyLine(t, m, format, star, line)
	})
}

// binaryTuple encodes one binary COPY tuple (nil is NULL).
func binaryTuple(vals ...[]byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
		out = append(out, v...)
	}
	return out
}

func TestCopyBinaryMasksOnlyMaskedFields(t *testing.T) {
	m := newMasker(t)
	cm := NewCopyMasker(m, mixedRules(1), CopyOptions{Format: "binary"})
	header := append(append([]byte(nil), binarySignature...), 0, 0, 0, 0, 0, 0, 0, 0)
	vals := [][]byte{{0, 0, 0, 42}, []byte("john.doe@example.com"), []byte("clean"), []byte("pw"), {1, 2}, []byte("not an email"), []byte("q")}
	out, n, err := cm.MaskData(append(header, binaryTuple(vals...)...))
	want := append(append([]byte(nil), header...), binaryTuple([]byte{0, 0, 0, 42}, []byte("j***@example.com"), []byte("clean"), []byte(RedactedText), nil, []byte(RedactedText), []byte("q"))...)
	if err != nil || n != 4 || !bytes.Equal(out, want) {
		t.Fatalf("got %q %d %v\nwant %q", out, n, err, want)
	}
	clean := binaryTuple([]byte{0, 0, 0, 1}, nil, []byte("clean"), nil, nil, nil, []byte("q"))
	if out, n, err := cm.MaskData(clean); err != nil || n != 0 || !bytes.Equal(out, clean) {
		t.Fatalf("clean row: %q %d %v", out, n, err)
	}
	if _, _, err := cm.MaskData(append(clean, 0)); err == nil {
		t.Fatal("a byte after the tuple was accepted")
	}
	if _, _, err := cm.MaskData(clean[:len(clean)-1]); err == nil {
		t.Fatal("a short tuple was accepted")
	}
	if out, _, err := cm.MaskData([]byte{0xff, 0xff}); err != nil || !bytes.Equal(out, []byte{0xff, 0xff}) {
		t.Fatalf("trailer: %q %v", out, err)
	}
}

// checkDataRow compares MaskDataRow with decoding, MaskRow and encoding of the same body.
func checkDataRow(t *testing.T, rm *ResultMasker, body []byte) {
	t.Helper()
	ref := &ResultMasker{m: rm.m, rules: rm.rules, active: rm.active}
	// A malformed message found after a masked value leaves its count behind (the door then
	// ends the session): start each comparison from zero.
	rm.MaskedByClass(func(string, int64) {})
	prefix := []byte("kept")
	got, n, err := rm.MaskDataRow(append([]byte(nil), prefix...), body)
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("%q: dst's own bytes were lost: %q", body, got)
	}
	got = got[len(prefix):]
	var row pgproto3.DataRow
	refErr := row.Decode(body)
	if refErr == nil {
		// pgproto3 ignores bytes after the last value; the door refuses them.
		if enc, _ := (&pgproto3.DataRow{Values: row.Values}).Encode(nil); len(enc)-5 != len(body) {
			refErr = errDataRow
		}
	}
	if (err != nil) != (refErr != nil) {
		t.Fatalf("%q: error %v, reference error %v", body, err, refErr)
	}
	if err != nil {
		if len(got) != 0 {
			t.Fatalf("%q: error %v with output %q", body, err, got)
		}
		return
	}
	wantN := ref.MaskRow(row.Values)
	if n != wantN {
		t.Fatalf("%q: %d masked, reference %d", body, n, wantN)
	}
	if n == 0 {
		if len(got) != 0 {
			t.Fatalf("%q: nothing masked but output %q", body, got)
		}
		return
	}
	want, err := row.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%q:\ngot  %q\nwant %q", body, got, want)
	}
	var gotBy, wantBy []string
	rm.MaskedByClass(func(class string, k int64) { gotBy = append(gotBy, fmt.Sprint(class, k)) })
	ref.MaskedByClass(func(class string, k int64) { wantBy = append(wantBy, fmt.Sprint(class, k)) })
	if fmt.Sprint(gotBy) != fmt.Sprint(wantBy) {
		t.Fatalf("%q: counted %v, reference %v", body, gotBy, wantBy)
	}
}

func dataRowBody(vals ...[]byte) []byte {
	enc, _ := (&pgproto3.DataRow{Values: vals}).Encode(nil)
	return enc[5:]
}

func dataRowMasker(m *Masker) *ResultMasker {
	rm := &ResultMasker{m: m, rules: mixedRules(0)}
	for i, r := range rm.rules {
		if !r.inert() {
			rm.active = append(rm.active, i)
		}
	}
	return rm
}

var dataRows = [][][]byte{
	{[]byte("42"), []byte("john.doe@example.com"), []byte("notes for a@b.io"), []byte("secret"), []byte("123-45-6789"), []byte("j.d@example.com"), []byte("plain")},
	{[]byte("42"), nil, nil, nil, nil, nil, nil},
	{[]byte("1"), []byte("jo@x.io")},
	{},
	{nil, []byte(""), []byte(""), []byte(""), []byte(""), []byte(""), []byte(""), []byte("extra@example.com")},
	{[]byte("1"), nil, []byte("clean"), nil, nil, []byte("x"), []byte("y")},
}

func TestMaskDataRowMatchesMaskRow(t *testing.T) {
	rm := dataRowMasker(newMasker(t))
	for _, vals := range dataRows {
		checkDataRow(t, rm, dataRowBody(vals...))
	}
	for _, bad := range [][]byte{nil, {0}, {0, 1}, {0, 1, 0, 0, 0, 5, 'a'}, {0, 1, 0xff, 0xff, 0xff, 0xfe}, append(dataRowBody([]byte("1")), 0)} {
		checkDataRow(t, rm, bad)
	}
}

func FuzzMaskDataRow(f *testing.F) {
	for _, vals := range dataRows {
		f.Add(dataRowBody(vals...))
	}
	rm := dataRowMasker(newMasker(f))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDataRow(t, rm, body)
	})
}

// TestFastPathsAgree: what the streaming paths do with a value through the fast path of its
// rule (fastOf, appendFast) is what AppendApply does, for rules of every kind, format,
// class, strategy and derivation, and values of every shape.
func TestFastPathsAgree(t *testing.T) {
	m := newMasker(t)
	prof := BuiltinProfiles()[ProfileDefault]
	values := []string{"", "a", "ann@example.com", "order 1234567", "123-45-6789", "4242 4242 4242 4242",
		"call 555 123 4567 or mail x@y.io", "1990-02-03", "10.1.2.3", "\x00\x00\x00\x01", "(1,ann@example.com)", `{"email":"a@b.io"}`}
	fast := map[fastPath]int{}
	for _, kind := range []Kind{KindText, KindJSON, KindArray, KindJSONArr, KindDate, KindTime, KindInet, KindRecord, KindOpaque, KindOther} {
		for _, format := range []int16{0, 1} {
			for _, class := range []string{"", classify.Email, classify.SSN, classify.Phone, classify.DOB, classify.IP, classify.Name, classify.Secret} {
				for _, strat := range []Strategy{Partial, Hash, Redact, Null, Raw} {
					for _, flags := range []int{0, 1, 2, 3, 4, 8} {
						r := &Rule{Kind: kind, Format: format, Class: class, Strat: prof.For}
						if class != "" {
							r.Strategy = strat
						}
						r.Derived, r.Composite, r.FreeText = flags&1 != 0, flags&2 != 0, flags&4 != 0
						if flags&8 != 0 {
							r.Keys = map[string]string{"email": classify.Email}
						}
						f := fastOf(r)
						fast[f]++
						for _, v := range values {
							want, wres := m.AppendApply([]byte("dst:"), r, []byte(v))
							got, gres := m.appendFast([]byte("dst:"), f, r, []byte(v))
							if gres != wres || !bytes.Equal(got, want) {
								t.Fatalf("%+v (fast path %d), %q: %q %d, AppendApply %q %d", r, f, v, got, gres, want, wres)
							}
						}
					}
				}
			}
		}
	}
	for f := fastNone; f <= fastNull; f++ {
		if fast[f] == 0 {
			t.Errorf("no rule has fast path %d", f)
		}
	}
}

// TestMayContainSensitiveWords: the word-at-a-time pass of mayContainSensitive answers as
// the byte loop alone does, for every byte value at every position of a word and for the
// digit counts around its threshold.
func TestMayContainSensitiveWords(t *testing.T) {
	check := func(v []byte) {
		t.Helper()
		if got, want := mayContainSensitive(v), mayContainSensitiveFrom(v, 0, 0); got != want {
			t.Fatalf("%q: %v, byte by byte %v", v, got, want)
		}
	}
	base := []byte("order number 1234 of the day, shipped")
	for pos := 0; pos < 24; pos++ {
		for c := 0; c < 256; c++ {
			v := append([]byte(nil), base...)
			v[pos] = byte(c)
			check(v)
			check(v[:pos+1])
		}
	}
	for digits := 0; digits < 20; digits++ {
		for gap := 0; gap < 10; gap++ {
			var v []byte
			for i := 0; i < digits; i++ {
				v = append(v, byte('0'+i%10))
				v = append(v, bytes.Repeat([]byte{' '}, gap)...)
			}
			check(v)
			check(append([]byte("xxxxxxxx"), v...))
		}
	}
	// Every trigger in the context that makes it one, at every offset in a word.
	for _, trig := range []string{"a@b", "$1$x", "$2a$", "$argon2", "sha256$", "-----BEGIN", "ghp_", "sk_live", "github_pat_", "AKIA", "ASIA", "xoxb", "eyJ", "123456789"} {
		for pad := 0; pad < 16; pad++ {
			v := []byte(strings.Repeat("w", pad) + trig + " and the rest of it")
			if !mayContainSensitiveFrom(v, 0, 0) {
				t.Fatalf("%q: the byte loop finds nothing", v)
			}
			check(v)
		}
	}
	for _, v := range []string{"order 1234567", "user12345678@example.com", "\xc0\xa0 12345678 9", "é1234567é89"} {
		check([]byte(v))
	}
}

func FuzzMayContainSensitive(f *testing.F) {
	for _, s := range []string{"order 1234567", "a@b", "$2a$10$", "ABCDEFGH12345678", "\xff\xfe0123456789"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if got, want := mayContainSensitive(v), mayContainSensitiveFrom(v, 0, 0); got != want {
			t.Fatalf("%q: %v, byte by byte %v", v, got, want)
		}
	})
}
