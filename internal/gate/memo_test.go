package gate

import (
	"reflect"
	"testing"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// TestPolicyFactsCover: every exported fact of inspect.Statement is either compared by
// samePolicyFacts (a change in it makes two statements different to the decision memo) or
// named here with the reason no policy reads it. A new field fails this test until it is
// placed on one side.
func TestPolicyFactsCover(t *testing.T) {
	ignored := map[string]string{
		"Text":                  "policies see Redacted; compared for DISCARD and unparsed text, where the engine reads it",
		"Shape":                 "the masker's cache key, not a policy fact",
		"Notes":                 "explanations for people",
		"Writes":                "read by the gate's own check after the decision, on every call",
		"WhereTrivialIfNotNull": "the gate turns it into WhereTrivial before the policy decides",
		"SyntaxError":           "refused before the policy is asked",
		"SyntaxPosition":        "refused before the policy is asked",
		"NonStandardStrings":    "refused before the policy is asked",
	}
	base := inspect.Statement{Kind: "SELECT", Category: inspect.Read, ObjectType: "table", TablesRead: []string{"a"},
		TablesWritten: []string{"b"}, Columns: []string{"c"}, Functions: []string{"f"}, Fingerprint: "fp", Redacted: "r",
		Setting: "s", PreparedName: "p"}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		if _, ok := ignored[f.Name]; ok {
			continue
		}
		changed := base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Slice:
			v.Set(reflect.Append(v, reflect.ValueOf("x")))
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", f.Name, v.Kind())
		}
		if samePolicyFacts(&base, &changed) {
			t.Errorf("samePolicyFacts ignores %s: compare it, or say in this test why no policy reads it", f.Name)
		}
	}
	discard := inspect.Statement{Kind: "DISCARD", Text: "DISCARD ALL", Fingerprint: "fp"}
	plans := discard
	plans.Text = "DISCARD PLANS"
	if samePolicyFacts(&discard, &plans) {
		t.Error("DISCARD ALL and DISCARD PLANS must differ: only ALL resets the role")
	}
}
