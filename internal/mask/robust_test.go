package mask

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// TestBadInputNeverPanics feeds random and truncated values of every kind and format through
// the masker and the COPY splitter: a malformed value from a broken server or an attacker's
// crafted data must give a masked value, NULL or an error, never a panic.
func TestBadInputNeverPanics(t *testing.T) {
	m := newMasker(t)
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]()",\:@$-_0123456789abcxyzAKIJSeyN. ` + "\x00\x01\xff\n\t")
	seedsIn := [][]byte{
		[]byte(`{"a":"john@example.com","b":[1,2,{"c":"123-45-6789"}]}`),
		[]byte(`{a,"b c",NULL,{d,e}}`),
		[]byte(`(1,"x y",,z)`),
		[]byte("1984-03-07 10:00:00+02"),
		binArray([]string{"john@example.com", "x"}, true),
		{2, 32, 0, 4, 192, 168, 1, 20},
	}
	kinds := []Kind{KindText, KindJSON, KindArray, KindJSONArr, KindDate, KindTime, KindInet, KindRecord, KindOpaque, KindOther}
	classes := []string{"", classify.Email, classify.SSN, classify.DOB, classify.IP, classify.Name}
	for iter := 0; iter < 3000; iter++ {
		var v []byte
		if iter%3 == 0 {
			s := seedsIn[r.IntN(len(seedsIn))]
			v = append([]byte(nil), s[:r.IntN(len(s)+1)]...) // truncated
			if len(v) > 0 && r.IntN(2) == 0 {
				v[r.IntN(len(v))] = alphabet[r.IntN(len(alphabet))]
			}
		} else {
			v = make([]byte, r.IntN(40))
			for i := range v {
				v[i] = alphabet[r.IntN(len(alphabet))]
			}
		}
		for _, k := range kinds {
			for _, f := range []int16{0, 1} {
				cl := classes[r.IntN(len(classes))]
				ru := rule(k, f, cl)
				ru.FreeText = true
				if r.IntN(2) == 0 {
					ru.Keys = map[string]string{"a": classify.Email, "": classify.SSN}
					ru.Fields = []string{"a", "b"}
				}
				out, masked := m.Apply(ru, v)
				if k == KindJSON && f == 0 && masked && out != nil && json.Valid(v) && !json.Valid(out) {
					t.Fatalf("valid JSON %q masked into invalid %q", v, out)
				}
			}
		}
		for _, o := range []CopyOptions{{Format: "text", Delimiter: '\t', Null: `\N`}, {Format: "csv", Delimiter: ',', Quote: '"', Escape: '"'}, {Format: "binary"}} {
			cm := NewCopyMasker(m, []Rule{*rule(KindText, 0, classify.Email), *rule(KindJSON, 0, "")}, o)
			cm.started = r.IntN(2) == 0
			_, _, _ = cm.MaskData(v)
		}
	}
}
