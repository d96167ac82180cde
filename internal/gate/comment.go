package gate

import "strings"

// sqlComment extracts the purpose and traceparent a client attaches with sqlcommenter tags
// (/*purpose='monthly-report',traceparent='00-…'*/), so the ledger can say why a statement ran
// and which trace it belongs to. Values are URL-encoded by sqlcommenter; they are kept as
// written apart from the quotes, and bounded in length.
func sqlComment(sql string) (purpose, traceparent string) {
	for {
		i := strings.Index(sql, "/*")
		if i < 0 {
			return purpose, traceparent
		}
		j := strings.Index(sql[i+2:], "*/")
		if j < 0 {
			return purpose, traceparent
		}
		body := sql[i+2 : i+2+j]
		sql = sql[i+2+j+2:]
		for _, kv := range strings.Split(body, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				continue
			}
			v = strings.Trim(strings.TrimSpace(v), "'")
			if len(v) > 256 {
				v = v[:256]
			}
			switch strings.TrimSpace(k) {
			case "purpose":
				purpose = v
			case "traceparent":
				traceparent = v
			}
		}
	}
}
