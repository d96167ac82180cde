package maske2e

import (
	"encoding/json"
	"github.com/jackc/pgx/v5"
	"strings"
	"testing"
	"time"
)

// TestJSONKeysMasked checks JSON objects whose keys are built from sensitive values: the
// keys are masked (or the whole value is), and what the client gets is still valid JSON.
func TestJSONKeysMasked(t *testing.T) {
	e := startEnv(t)
	tp := startTap(t, e.prod)
	ctx := ctxT(t, time.Minute)
	c := connect(t, tp, "analyst", e.prod.Token(t, "analyst", "service"))
	for _, q := range jsonKeyQueries {
		t.Run(q, func(t *testing.T) {
			tp.take()
			for _, mode := range [][]any{nil, {pgx.QueryExecModeSimpleProtocol}} {
				rows, err := runQuery(ctx, c, q, mode, nil)
				if err != nil {
					t.Fatalf("%v", err)
				}
				if l := e.fx.leaks(tp.take()); len(l) > 0 {
					t.Errorf("LEAK: %v", l)
				}
				for _, r := range rows {
					if r[0] != "" && !strings.HasSuffix(q, "::text FROM customers") && !json.Valid([]byte(r[0])) {
						t.Errorf("not valid JSON: %.200s", r[0])
					}
				}
			}
		})
	}
	// The masked objects keep one key per entry, and keys the client wrote stay.
	for _, c2 := range []struct {
		sql  string
		keys int
		want string // a key that must be present
	}{
		{"SELECT json_object_agg(email, id) FROM customers", nCustomers, "[redacted 1]"},
		{"SELECT jsonb_object_agg(email, id) FROM customers", nCustomers, ""},
		{"SELECT jsonb_object(array_agg(email), array_agg(full_name)) FROM customers", nCustomers, ""},
		{"SELECT json_build_object('e', email, 's', ssn) FROM customers WHERE id = 1", 2, "e"},
		{"SELECT json_build_object('contact', email, ssn, 1) FROM customers WHERE id = 1", 2, "contact"},
	} {
		rows, err := runQuery(ctx, c, c2.sql, nil, nil)
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: %v %v", c2.sql, rows, err)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(rows[0][0]), &obj); err != nil {
			t.Fatalf("%s: %v: %.200s", c2.sql, err, rows[0][0])
		}
		if len(obj) != c2.keys {
			t.Errorf("%s: %d distinct keys, want %d: %.300s", c2.sql, len(obj), c2.keys, rows[0][0])
		}
		if _, ok := obj[c2.want]; c2.want != "" && !ok {
			t.Errorf("%s: no key %q: %.300s", c2.sql, c2.want, rows[0][0])
		}
		t.Logf("%s → %.160s", c2.sql, rows[0][0])
	}
}

// jsonKeyQueries build JSON object keys from sensitive values.
var jsonKeyQueries = []string{
	"SELECT json_object_agg(email, id) FROM customers",
	"SELECT jsonb_object_agg(email, id) FROM customers",
	"SELECT json_object_agg(id, email) FROM customers",
	"SELECT json_build_object(email, 1) FROM customers",
	"SELECT jsonb_build_object(ssn, full_name) FROM customers",
	"SELECT to_json(array_agg(email)) FROM customers",
	"SELECT to_jsonb(array_agg(card_number)) FROM customers",
	"SELECT jsonb_object(array_agg(email), array_agg(full_name)) FROM customers",
	"SELECT json_object(array_agg(ssn), array_agg(id::text)) FROM customers",
	"SELECT json_object_agg(lower(email), 1) FROM customers",
	"SELECT json_object(ARRAY[email, phone]) FROM customers",
	"SELECT (SELECT json_object_agg(c.email, c.id) FROM customers c) AS j",
	"SELECT jsonb_object_agg(email, id)::text FROM customers",
}
