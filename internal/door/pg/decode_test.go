package pg

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestMessageReaders holds the allocation-free readers to pgproto3's decoders: the same
// fields from well-formed bodies, and an error wherever pgproto3 finds the body malformed.
func TestMessageReaders(t *testing.T) {
	bodies := func(msgs ...pgproto3.FrontendMessage) [][]byte {
		var out [][]byte
		for _, m := range msgs {
			b, err := m.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b[5:])
		}
		return out
	}
	// Every prefix of a well-formed body is malformed, and so is a body with a byte more
	// where the message must end.
	variants := func(good [][]byte) [][]byte {
		var out [][]byte
		for _, b := range good {
			for i := 0; i <= len(b); i++ {
				out = append(out, b[:i])
			}
			out = append(out, append(append([]byte(nil), b...), 'x'))
		}
		return append(out, []byte{0}, []byte("no terminator"))
	}

	t.Run("Parse", func(t *testing.T) {
		for _, body := range variants(bodies(&pgproto3.Parse{}, &pgproto3.Parse{Name: "s1", Query: "select $1, $2", ParameterOIDs: []uint32{23, 25}})) {
			var want pgproto3.Parse
			wantErr := want.Decode(body)
			name, query, err := readParse(body)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("readParse(%q): error %v, pgproto3 says %v", body, err, wantErr)
			}
			if err == nil && (string(name) != want.Name || string(query) != want.Query) {
				t.Fatalf("readParse(%q) = %q, %q; pgproto3 reads %q, %q", body, name, query, want.Name, want.Query)
			}
		}
	})
	t.Run("Execute", func(t *testing.T) {
		for _, body := range variants(bodies(&pgproto3.Execute{}, &pgproto3.Execute{Portal: "p1", MaxRows: 70000})) {
			var want pgproto3.Execute
			wantErr := want.Decode(body)
			portal, maxRows, err := readExecute(body)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("readExecute(%q): error %v, pgproto3 says %v", body, err, wantErr)
			}
			if err == nil && (string(portal) != want.Portal || maxRows != want.MaxRows) {
				t.Fatalf("readExecute(%q) = %q, %d; pgproto3 reads %q, %d", body, portal, maxRows, want.Portal, want.MaxRows)
			}
		}
	})
	t.Run("Describe and Close", func(t *testing.T) {
		for _, body := range variants(bodies(&pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Describe{ObjectType: 'P', Name: "portal"}, &pgproto3.Close{ObjectType: 'S', Name: "s1"})) {
			var d pgproto3.Describe
			dErr := d.Decode(body)
			var c pgproto3.Close
			cErr := c.Decode(body)
			typ, name, err := readTarget(body)
			if (err != nil) != (dErr != nil) || (err != nil) != (cErr != nil) {
				t.Fatalf("readTarget(%q): error %v, pgproto3 says %v / %v", body, err, dErr, cErr)
			}
			if err == nil && (typ != d.ObjectType || string(name) != d.Name || typ != c.ObjectType || string(name) != c.Name) {
				t.Fatalf("readTarget(%q) = %c %q; pgproto3 reads %c %q", body, typ, name, d.ObjectType, d.Name)
			}
		}
	})
}
