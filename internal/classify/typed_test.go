package classify

import "testing"

// TestNameNeverClassesNonTextAsFreeText is issue 13's repro at the unit level: columns
// named like addresses and names (city_id, zip, street, name, ...) of integer, numeric,
// boolean, date and time types are not sensitive by name, with or without sampled values,
// while the same names on text columns still are, and numbers people store as integers
// (phone, SSN, card) still are by name.
func TestNameNeverClassesNonTextAsFreeText(t *testing.T) {
	freeText := []struct{ table, column string }{
		{"p", "city_id"}, {"p", "zip"}, {"p", "street"}, {"p", "city"}, {"p", "postcode"}, {"customers", "name"},
		{"p", "first_name"}, {"p", "address"}, {"p", "email"}, {"p", "password"}, {"p", "client_secret"},
	}
	types := []string{"int2", "int4", "int8", "numeric", "float8", "money", "bool", "date", "timestamptz", "time", "interval", "uuid", "oid", "_int4"}
	for _, c := range freeText {
		if nc := NameClass(c.table, c.column); nc == "" {
			t.Fatalf("test premise: %s.%s is not named like a class", c.table, c.column)
		}
		for _, typ := range types {
			if nc := NameClassOfType(c.table, c.column, typ); nc != "" {
				t.Errorf("NameClassOfType(%q, %q, %q) = %q, want none", c.table, c.column, typ, nc)
			}
			for _, samples := range [][]string{nil, {"7", "12345", "42"}} {
				if got := ClassifyColumn(c.table, c.column, typ, samples); got.Sensitive() {
					t.Errorf("ClassifyColumn(%q, %q, %q, %v) = %+v, want none", c.table, c.column, typ, samples, got)
				}
			}
		}
		if nc := NameClassOfType(c.table, c.column, "text"); nc == "" {
			t.Errorf("NameClassOfType(%q, %q, text) lost the class", c.table, c.column)
		}
		if nc := NameClassOfType(c.table, c.column, ""); nc == "" {
			t.Errorf("NameClassOfType(%q, %q, unknown type) lost the class", c.table, c.column)
		}
	}
	// Numbers stored as numbers keep their class by name.
	for _, c := range []struct {
		column, typ string
		want        Class
	}{{"phone", "int8", Phone}, {"ssn", "int4", SSN}, {"card_number", "numeric", Card}, {"date_of_birth", "date", DOB}, {"client_ip", "inet", IP}} {
		if got := NameClassOfType("t", c.column, c.typ); got != c.want {
			t.Errorf("NameClassOfType(t, %q, %q) = %q, want %q", c.column, c.typ, got, c.want)
		}
		if got := ClassifyColumn("t", c.column, c.typ, nil); got.Class != c.want || !got.Sensitive() {
			t.Errorf("ClassifyColumn(t, %q, %q) = %+v, want %q", c.column, c.typ, got, c.want)
		}
	}
	// Result columns carry type OIDs.
	for oid, want := range map[uint32]string{23: "int4", 20: "int8", 16: "bool", 1082: "date", 25: "text", 1700: "numeric", 99999: ""} {
		if got := TypeNameOfOID(oid); got != want {
			t.Errorf("TypeNameOfOID(%d) = %q, want %q", oid, got, want)
		}
	}
}
