package inspect

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// redact returns text with its literals replaced by $n, safe to keep in the ledger.
//
// pg_query's Normalize replaces the constants of ordinary statements, but it leaves string
// literals in some utility statements as written (COPY ... PROGRAM 'cmd', COPY ... 'file',
// ALTER SYSTEM SET x = 'v', PREPARE p AS SELECT 'v', COMMENT ... IS 'v', CREATE SERVER ...
// OPTIONS (host 'v')). Whenever the normalized text can still hold a string literal, it is
// run through the PostgreSQL scanner and every remaining string constant is replaced too.
// Normalize also leaves the numbers of a query wrapped in PREPARE, CREATE TABLE AS, CREATE
// VIEW and CREATE RULE as written; for those (numbers=true) numeric constants are replaced
// the same way. If either step fails, a placeholder is returned instead of the text.
//
// normalized, when not empty, is Normalize(text) already computed by the caller.
func redact(text, normalized string, numbers bool) string {
	n := normalized
	if n == "" {
		var err error
		if n, err = pg_query.Normalize(text); err != nil {
			return placeholder(text)
		}
	}
	if !numbers && !mayHoldString(n) {
		return n
	}
	scan, err := pg_query.Scan(n)
	if err != nil {
		return placeholder(text)
	}
	next := 1
	for _, t := range scan.Tokens {
		if t.Token == pg_query.Token_PARAM && int(t.End) <= len(n) && t.Start >= 0 && t.Start < t.End {
			if v, err := strconv.Atoi(n[t.Start+1 : t.End]); err == nil && v >= next {
				next = v + 1
			}
		}
	}
	var b strings.Builder
	last := 0
	for _, t := range scan.Tokens {
		switch t.Token {
		case pg_query.Token_SCONST, pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST:
		case pg_query.Token_ICONST, pg_query.Token_FCONST:
			if !numbers {
				continue
			}
		default:
			continue
		}
		start, end := int(t.Start), int(t.End)
		if start < last || end > len(n) || start >= end {
			return placeholder(text)
		}
		b.WriteString(n[last:start])
		b.WriteString("$" + strconv.Itoa(next))
		next++
		last = end
	}
	b.WriteString(n[last:])
	return b.String()
}

// mayHoldString reports whether s can contain a string constant. Every PostgreSQL string
// constant starts with a quote ('...', E'...', B'...', X'...', U&'...') or a dollar quote
// ($$...$$, $tag$...$tag$); a '$' followed by a digit is a parameter, not a quote.
func mayHoldString(s string) bool {
	if strings.IndexByte(s, '\'') >= 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && (i+1 >= len(s) || s[i+1] < '0' || s[i+1] > '9') {
			return true
		}
	}
	return false
}
