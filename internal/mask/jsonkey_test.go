package mask

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// TestJSONKeysOfSensitiveValues checks that object keys of a value derived from a
// sensitive column (json_object_agg(email, id)) never show, by strategy, and that the
// object keeps one valid key per entry; keys naming source columns or written as literals
// in the statement stay.
func TestJSONKeysOfSensitiveValues(t *testing.T) {
	m := newMasker(t)
	doc := `{"ann@example.com": 1, "bob@example.com": 2, "email": 3, "label": "x"}`
	for _, c := range []struct {
		strat Strategy
		check func(k string) bool
	}{
		{Partial, func(k string) bool { return strings.HasPrefix(k, "[redacted ") }},
		{Redact, func(k string) bool { return strings.HasPrefix(k, "[redacted ") }},
		{Null, func(k string) bool { return strings.HasPrefix(k, "[redacted ") }},
		{Hash, func(k string) bool { return strings.HasPrefix(k, "tok_") }},
	} {
		r := rule(KindJSON, 0, classify.Email)
		r.Strategy = c.strat
		r.Keys = map[string]string{"email": classify.Email}
		r.ConstKeys = map[string]bool{"label": true}
		out, masked := m.Apply(r, []byte(doc))
		var obj map[string]any
		if !masked || json.Unmarshal(out, &obj) != nil || len(obj) != 4 {
			t.Fatalf("%s: %s", c.strat, out)
		}
		if strings.Contains(string(out), "@example.com") {
			t.Errorf("%s: key leaks: %s", c.strat, out)
		}
		for k := range obj {
			if k != "email" && k != "label" && !c.check(k) {
				t.Errorf("%s: key %q", c.strat, k)
			}
		}
		if _, ok := obj["email"]; !ok {
			t.Errorf("%s: the column-named key is gone: %s", c.strat, out)
		}
	}
	// Raw for the class: keys stay.
	r := rule(KindJSON, 0, classify.Email)
	r.Strategy = Raw
	if out, _ := m.Apply(r, []byte(doc)); !strings.Contains(string(out), "ann@example.com") {
		t.Errorf("raw: %s", out)
	}
}
