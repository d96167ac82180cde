package mask

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/policy"
)

func newMasker(t testing.TB) *Masker {
	m, err := NewMasker([]byte("0123456789abcdef-test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPartial(t *testing.T) {
	cases := []struct{ class, in, want string }{
		{classify.Email, "john.doe@example.com", "j***@example.com"},
		{classify.Email, "jo@x.io", "j*@x.io"},
		{classify.Email, "j@x.io", "*@x.io"},
		{classify.SSN, "123-45-6789", "***-**-6789"},
		{classify.SSN, "123456789", "*****6789"},
		{classify.Card, "4242424242424242", "************4242"},
		{classify.Card, "4242 4242 4242 4242", "**** **** **** 4242"},
		{classify.Phone, "+1 (415) 555-2671", "+* (***) ***-2671"},
		{classify.Phone, "5552671", "*****71"},
		{classify.IBAN, "DE89 3704 0044 0532 0130 00", "DE** **** **** **** **30 00"},
		{classify.NationalID, "AB123456C", "*******6C"},
		{classify.IP, "192.168.1.20", "192.168.0.0"},
		{classify.IP, "2001:db8:1:2::5", "2001:db8::"},
		{classify.IP, "10.1.2.3/8", "10.1.0.0/8"},
		{classify.DOB, "1984-03-07", "1984-01-01"},
		{classify.DOB, "1984-03-07 10:30:15.123+02", "1984-01-01 00:00:00.000+01"},
		{classify.DOB, "07.03.1984", "01.01.1984"},
		{classify.Name, "John Smith", "J*** S****"},
		{classify.Name, "Jürgen Müller", "J***** M*****"},
		{classify.Address, "12 Main St", RedactedText},
		{classify.Password, "$2b$12$abc", RedactedText},
	}
	m := newMasker(t)
	for _, c := range cases {
		got, ok := m.Text(nil, c.class, Partial, []byte(c.in))
		if !ok || string(got) != c.want {
			t.Errorf("partial %s %q = %q, want %q", c.class, c.in, got, c.want)
		}
		if strings.Contains(c.class, "email") && len(got) > len(c.in) {
			t.Errorf("partial email grew: %q → %q", c.in, got)
		}
	}
}

func TestHashDeterministicAndKeyed(t *testing.T) {
	m := newMasker(t)
	a, _ := m.Text(nil, classify.Email, Hash, []byte("john@example.com"))
	b, _ := m.Text(nil, classify.Email, Hash, []byte("john@example.com"))
	c, _ := m.Text(nil, classify.Email, Hash, []byte("jane@example.com"))
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || !bytes.HasPrefix(a, []byte("tok_")) || len(a) != 16 {
		t.Errorf("tokens %q %q %q", a, b, c)
	}
	m2, _ := NewMasker([]byte("another-key-of-16+bytes"))
	d, _ := m2.Text(nil, classify.Email, Hash, []byte("john@example.com"))
	if bytes.Equal(a, d) {
		t.Error("token does not depend on the key")
	}
	if _, err := NewMasker([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
	if out, ok := m.Text(nil, classify.Email, Null, []byte("x@y.zz")); ok || out != nil {
		t.Error("null strategy returned a value")
	}
}

func TestFreeText(t *testing.T) {
	m := newMasker(t)
	dirty := []struct{ in, want string }{
		{"contact john.doe@example.com today", "contact j***@example.com today"},
		{"card 4242 4242 4242 4242 exp 12/27", "card **** **** **** 4242 exp 12/27"},
		{"ssn:123-45-6789.", "ssn:***-**-6789."},
		{"iban DE89370400440532013000 ok", "iban DE****************3000 ok"},
		{"key=AKIAIOSFODNN7EXAMPLE", "key=" + RedactedText},
		{"token ghp_1234567890abcdefghijABCDEFGHIJ123456 used", "token " + RedactedText + " used"},
		{"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln", "Bearer " + RedactedText},
		{"x -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- y", "x " + RedactedText + " y"},
		{"pw $2b$12$KIXQJ3Ysx3kYh1Tz0mHqEuWZ1xg4nK1k6m2iFJp7c2nZ2Y8a3q9Wm", "pw " + RedactedText},
		{"a@example.com,b@example.org", "*@example.com,*@example.org"},
		{"sk_live_4eC39HqLyjWDarjtT1zdp7dc", RedactedText},
	}
	for _, c := range dirty {
		out, n := m.FreeText(nil, []byte(c.in), nil)
		if n == 0 || string(out) != c.want {
			t.Errorf("FreeText(%q) = %q (%d), want %q", c.in, out, n, c.want)
		}
	}
	clean := []string{"", "hello world", "order 123456789 shipped", "tracking 1234567812345678", "version 1.2.3.4",
		"price 1999 cents", "commit 3f9a1c2e7b4d5f6a8b9c0d1e2f3a4b5c6d7e8f90", "phone is private", "x@y", "999-99-9999", "user@localhost"}
	for _, c := range clean {
		if out, n := m.FreeText(nil, []byte(c), nil); n != 0 {
			t.Errorf("FreeText(%q) masked: %q", c, out)
		}
	}
	// Raw for a class leaves it alone.
	out, n := m.FreeText(nil, []byte("a john@example.com 123-45-6789"), func(c string) Strategy {
		if c == classify.Email {
			return Raw
		}
		return Partial
	})
	if n != 1 || string(out) != "a john@example.com ***-**-6789" {
		t.Errorf("raw email: %q %d", out, n)
	}
	cleanNote := []byte("a perfectly clean note of some length 42")
	if a := testing.AllocsPerRun(100, func() { m.FreeText(nil, cleanNote, nil) }); a != 0 {
		t.Errorf("clean value allocates %v times", a)
	}
}

func rule(kind Kind, format int16, class string) *Rule {
	r := &Rule{Kind: kind, Format: format, Class: class, Strat: BuiltinProfiles()[ProfileDefault].For}
	if class != "" {
		r.Strategy = r.Strat(class)
	}
	return r
}

func TestWireValidity(t *testing.T) {
	m := newMasker(t)
	// JSON: a whole row with keys, nested values, numbers under sensitive keys.
	r := rule(KindJSON, 0, "")
	r.Keys = map[string]string{"id": "", "email": classify.Email, "ssn": classify.SSN, "card": classify.Card, "notes": ""}
	r.FreeText = true
	doc := `{"id":1,"email":"john@example.com","ssn":"123-45-6789","card":4242424242424242,"notes":"call jane@example.org","tags":["a","b"],"ok":true,"n":null,"esc":"q\"\\\u0001"}`
	out, masked := m.Apply(r, []byte(doc))
	if !masked || !json.Valid(out) {
		t.Fatalf("masked json invalid: %s", out)
	}
	for _, leak := range []string{"john@", "123-45", "4242424242424242", "jane@"} {
		if bytes.Contains(out, []byte(leak)) {
			t.Errorf("json leaks %q: %s", leak, out)
		}
	}
	if !bytes.Contains(out, []byte(`"id":1`)) || !bytes.Contains(out, []byte(`"card":null`)) || !bytes.Contains(out, []byte(`"tags":["a","b"]`)) {
		t.Errorf("json structure not kept: %s", out)
	}
	// jsonb binary keeps its version byte.
	rb := *r
	rb.Format = 1
	out, masked = m.Apply(&rb, append([]byte{1}, doc...))
	if !masked || out[0] != 1 || !json.Valid(out[1:]) {
		t.Errorf("jsonb binary: %q", out)
	}
	// json binary is the text itself: masked like text, not refused as a bad jsonb.
	out, masked = m.Apply(&rb, []byte(doc))
	if !masked || !json.Valid(out) || bytes.Contains(out, []byte("john@")) {
		t.Errorf("json binary: %q", out)
	}
	// ...and a record of ordinary columns comes back as it is.
	ordinary := &Rule{Kind: KindJSON, Format: 1, Keys: map[string]string{"f": "", "t": "", "label": ""}, Derived: true}
	ordinary.plan(BuiltinProfiles()[ProfileDefault])
	if out, masked := m.Apply(ordinary, []byte(`{"f":1,"t":2,"label":"x"}`)); masked || string(out) != `{"f":1,"t":2,"label":"x"}` {
		t.Errorf("json binary of ordinary columns: %q (masked %v)", out, masked)
	}
	// json_agg(email): elements without keys take the column's class.
	ra := rule(KindJSON, 0, classify.Email)
	ra.Derived = true
	out, _ = m.Apply(ra, []byte(`["a.b@example.com", "c@example.org", "n/a"]`))
	if !json.Valid(out) || string(out) != `["a**@example.com","*@example.org","[redacted]"]` {
		t.Errorf("json_agg: %s", out)
	}

	// Text arrays, text format.
	rt := rule(KindArray, 0, classify.Email)
	out, masked = m.Apply(rt, []byte(`{john@example.com,"jane doe@x.com",NULL,"a\\b@example.com"}`))
	if !masked || string(out) != `{j***@example.com,[redacted],NULL,[redacted]}` {
		t.Errorf("text array: %s", out)
	}
	out, _ = m.Apply(rt, []byte(`{{a@example.com,b@example.com},{c@example.com,NULL}}`))
	if string(out) != `{{*@example.com,*@example.com},{*@example.com,NULL}}` {
		t.Errorf("2-d array: %s", out)
	}
	// Binary array of text: header, then elements.
	bin := binArray([]string{"john@example.com", "x"}, true)
	out, masked = m.Apply(rule(KindArray, 1, classify.Email), bin)
	if !masked || !bytes.Contains(out, []byte("j***@example.com")) || bytes.Contains(out, []byte("john@")) {
		t.Errorf("binary array: %q", out)
	}
	if _, masked := m.Apply(rule(KindArray, 1, classify.Email), []byte{0, 0}); !masked {
		t.Error("malformed binary array passed through unmasked")
	}

	// Dates: partial keeps the year; binary too.
	out, _ = m.Apply(rule(KindDate, 0, classify.DOB), []byte("1984-03-07"))
	if string(out) != "1984-01-01" {
		t.Errorf("date: %s", out)
	}
	days := make([]byte, 4)
	d := int32(-5778)
	binary.BigEndian.PutUint32(days, uint32(d)) // 1984-03-07
	out, _ = m.Apply(rule(KindDate, 1, classify.DOB), days)
	if got := int32(binary.BigEndian.Uint32(out)); got != -5844 { // 1984-01-01
		t.Errorf("binary date days = %d", got)
	}
	strict := rule(KindDate, 0, classify.DOB)
	strict.Strategy = Redact
	if out, _ = m.Apply(strict, []byte("1984-03-07")); string(out) != placeholderDate {
		t.Errorf("redacted date: %s", out)
	}
	// Numbers holding a sensitive class become NULL.
	if out, masked = m.Apply(rule(KindOpaque, 0, classify.Card), []byte("4242424242424242")); !masked || out != nil {
		t.Errorf("bigint card: %q", out)
	}
	// inet binary: host part zeroed.
	out, _ = m.Apply(rule(KindInet, 1, classify.IP), []byte{2, 32, 0, 4, 192, 168, 1, 20})
	if !bytes.Equal(out, []byte{2, 32, 0, 4, 192, 168, 0, 0}) {
		t.Errorf("binary inet: %v", out)
	}
	// Records: fields by name.
	rr := rule(KindOther, 0, "")
	rr.Fields = []string{"id", "name", "email", "notes"}
	rr.Keys = map[string]string{"id": "", "name": classify.Name, "email": classify.Email, "notes": ""}
	out, masked = m.Apply(rr, []byte(`(1,"John Smith",john@example.com,)`))
	if !masked || string(out) != `(1,"J*** S****",j***@example.com,)` {
		t.Errorf("record: %s", out)
	}
	// Non-sensitive text without detectors stays the same slice.
	plain := []byte("plain")
	if out, masked = m.Apply(rule(KindText, 0, ""), plain); masked || &out[0] != &plain[0] {
		t.Error("unmasked value was copied")
	}
}

func binArray(elems []string, withNull bool) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, OIDText)
	n := len(elems)
	if withNull {
		n++
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, 1)
	for _, e := range elems {
		b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	if withNull {
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

func TestDerivedPartialNeedsValidShape(t *testing.T) {
	m := newMasker(t)
	r := rule(KindText, 0, classify.SSN)
	r.Derived = true
	for in, want := range map[string]string{
		"123":                      RedactedText,  // substring(ssn, 1, 3)
		"123-45-6789":              "***-**-6789", // lower(ssn)
		"5:123-45-6789":            RedactedText,  // id || ':' || ssn
		"123-45-6789, 234-56-7890": "***-**-6789, ***-**-7890",
	} {
		out, masked := m.Apply(r, []byte(in))
		if !masked || string(out) != want {
			t.Errorf("derived ssn %q = %q, want %q", in, out, want)
		}
	}
}

func BenchmarkPartialEmail(b *testing.B) {
	m := newMasker(b)
	v := []byte("john.doe@example.com")
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = m.Text(dst[:0], classify.Email, Partial, v)
	}
}

func BenchmarkHash(b *testing.B) {
	m := newMasker(b)
	v := []byte("john.doe@example.com")
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = m.Text(dst[:0], classify.Email, Hash, v)
	}
}

func BenchmarkFreeTextClean(b *testing.B) {
	m := newMasker(b)
	v := []byte("Customer asked to deliver the parcel to the back door after 5pm, order 12345")
	b.ReportAllocs()
	for b.Loop() {
		m.FreeText(nil, v, nil)
	}
}

func BenchmarkFreeTextDirty(b *testing.B) {
	m := newMasker(b)
	v := []byte("Customer john.doe@example.com paid with 4242 4242 4242 4242, ssn 123-45-6789")
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = m.FreeText(dst[:0], v, nil)
	}
}

func BenchmarkApplyEmailColumn(b *testing.B) {
	m := newMasker(b)
	r := rule(KindText, 0, classify.Email)
	v := []byte("john.doe@example.com")
	b.ReportAllocs()
	for b.Loop() {
		m.Apply(r, v)
	}
}

// BenchmarkMaskRow is the per-row cost the door pays for a typical customer row: an int id,
// an e-mail (partial), a name (partial), free-text notes (detectors, clean) and an amount.
func BenchmarkMaskRow(b *testing.B) {
	m := newMasker(b)
	rm := &ResultMasker{m: m, rules: []Rule{
		*rule(KindOpaque, 0, ""), *rule(KindText, 0, classify.Email), *rule(KindText, 0, classify.Name),
		*rule(KindText, 0, ""), *rule(KindOpaque, 0, ""),
	}, active: []int{1, 2, 3}}
	rm.rules[3].FreeText = true
	id, email, name, notes, amount := []byte("42"), []byte("john.doe@example.com"), []byte("John Smith"), []byte("prefers morning delivery"), []byte("1999")
	row := make([][]byte, 5)
	b.ReportAllocs()
	for b.Loop() {
		row[0], row[1], row[2], row[3], row[4] = id, email, name, notes, amount
		if rm.MaskRow(row) != 2 {
			b.Fatal("not masked")
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := t.TempDir() + "/sub/mask.key"
	k1, err := LoadOrCreateKey(path)
	if err != nil || len(k1) != KeySize {
		t.Fatal(k1, err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatal("key changed between loads", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Error("short key accepted")
	}
}

func TestMaskServerText(t *testing.T) {
	m := newMasker(t)
	cases := []struct{ state, in, want string }{
		{"22P02", `invalid input syntax for type integer: "Johanna Smithers"`, `invalid input syntax for type integer: "[redacted]"`},
		{"23505", `Key (email)=(johanna@example.com) already exists.`, `Key (email)=([redacted]) already exists.`},
		{"23505", `Key (a, b)=(x (y), 2) already exists.`, `Key (a, b)=([redacted]) already exists.`},
		{"42P01", `relation "customers" does not exist`, `relation "customers" does not exist`},
		{"", `NOTICE: mailing johanna@example.com`, `NOTICE: mailing j***@example.com`},
	}
	for _, c := range cases {
		out, _ := m.MaskServerText(c.state, []byte(c.in), nil)
		if string(out) != c.want {
			t.Errorf("%s %q = %q, want %q", c.state, c.in, out, c.want)
		}
	}
}

// TestFreeTextTokenBoundaries: hashes and keys are found wherever array, JSON, record or list
// punctuation puts them (the first element of '{$2b$12$...,...}', the last before '}'), and
// whatever digits they happen to hold (the fast path used to count on nine of them).
func TestFreeTextTokenBoundaries(t *testing.T) {
	m := newMasker(t)
	bc := "$2b$12$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ." // three digits only
	argon := "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	django := "pbkdf2_sha256$600000$salt$aGFzaGhhc2hoYXNoaGFzaGhhc2g="
	scram := "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
	key := "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
	r := RedactedText
	cases := []struct{ in, want string }{
		{bc, r},
		{"{" + bc + "," + bc + "}", "{" + r + "," + r + "}"},
		{"{" + bc + "}", "{" + r + "}"},
		{`["` + bc + `"]`, `["` + r + `"]`},
		{"(" + bc + ",x)", "(" + r + ",x)"},
		{"[" + bc + "]", "[" + r + "]"},
		{`{"pw":"` + bc + `"}`, `{"pw":"` + r + `"}`},
		{"{" + argon + "}", "{" + r + "}"},
		{"(" + django + ")", "(" + r + ")"},
		{"{" + scram + "}", "{" + r + "}"},
		{"{" + key + "," + key + "}", "{" + r + "," + r + "}"},
		{"{a@example.com,(b@example.org)}", "{*@example.com,(*@example.org)}"},
		{"[4242424242424242]", "[************4242]"},
		{"{123-45-6789}", "{***-**-6789}"},
	}
	for _, c := range cases {
		out, n := m.FreeText(nil, []byte(c.in), nil)
		if n == 0 || string(out) != c.want {
			t.Errorf("FreeText(%q) = %q (%d), want %q", c.in, out, n, c.want)
		}
	}
	// Dollar signs that are no hash stay.
	for _, c := range []string{"{$1,$2}", "price $12$ discount", "{$2b$}", "$argon2 is a function"} {
		if out, n := m.FreeText(nil, []byte(c), nil); n != 0 {
			t.Errorf("FreeText(%q) masked: %q", c, out)
		}
	}
}

func TestFromPolicy(t *testing.T) {
	cases := []struct {
		pp   policy.Profile
		want map[string]Strategy
		raw  bool
	}{
		{policy.Profile{Name: "a", Raw: []string{classify.Email}}, map[string]Strategy{classify.Email: Raw, classify.SSN: Partial, classify.APIKey: Redact, "other": Partial}, false},
		{policy.Profile{Name: "b", Strategies: map[string]string{classify.SSN: "hash", "*": "redact"}}, map[string]Strategy{classify.Email: Redact, classify.SSN: Hash, classify.DOB: Redact}, false},
		{policy.Profile{Name: "c", Raw: []string{"*"}}, map[string]Strategy{classify.Email: Raw, classify.Password: Raw}, true},
		{policy.Profile{Name: "d", Raw: []string{"*"}, Strategies: map[string]string{classify.Card: "null"}}, map[string]Strategy{classify.Email: Raw, classify.Card: Null}, false},
		{policy.Profile{Name: "e", Raw: []string{classify.Phone}, Strategies: map[string]string{"*": "hash"}}, map[string]Strategy{classify.Phone: Raw, classify.Email: Hash}, false},
		{policy.Profile{Name: "bad", Strategies: map[string]string{classify.SSN: "shred"}}, map[string]Strategy{classify.SSN: Redact, classify.Email: Redact}, false},
	}
	for _, c := range cases {
		p := FromPolicy(&c.pp)
		for class, want := range c.want {
			if got := p.For(class); got != want {
				t.Errorf("%s: %s = %s, want %s", c.pp.Name, class, got, want)
			}
		}
		if p.Raw() != c.raw {
			t.Errorf("%s: raw %v", c.pp.Name, p.Raw())
		}
	}
}
