package gate

import (
	"strings"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// recordedMessage is an upstream error message as the ledger keeps it. The client sees
// PostgreSQL's words as they are (they quote nothing it did not send), but the ledger keeps
// statements redacted, without their literals — so the record must not bring a literal back
// through the error: `invalid input syntax for type integer: "alice@example.com"` quotes a
// value the client wrote in a literal or bound as a parameter. A double-quoted span of the
// message becomes "?" when
//   - the error is a data exception (SQLSTATE class 22): those quote the offending value,
//     from the text or from a parameter the record never holds;
//   - or its text lies inside a string literal of the statement, or holds a quote itself (a
//     syntax error quoting the literal token).
//
// Names of tables, columns, constraints and types stay: they are in the redacted statement.
func recordedMessage(sqlstate, msg string, stmts []*inspect.Statement) string {
	if strings.IndexByte(msg, '"') < 0 {
		return msg
	}
	dataException := strings.HasPrefix(sqlstate, "22")
	var lits []string
	if !dataException {
		for _, st := range stmts {
			if st != nil {
				lits = appendStringLiterals(lits, st.Text)
			}
		}
	}
	var b strings.Builder
	rest := msg
	for {
		open := strings.IndexByte(rest, '"')
		if open < 0 {
			break
		}
		end := strings.IndexByte(rest[open+1:], '"')
		if end < 0 {
			break
		}
		quoted := rest[open+1 : open+1+end]
		b.WriteString(rest[:open+1])
		if quoted != "" && (dataException || strings.ContainsRune(quoted, '\'') || insideAny(lits, quoted)) {
			b.WriteByte('?')
		} else {
			b.WriteString(quoted)
		}
		b.WriteByte('"')
		rest = rest[open+1+end+1:]
	}
	if b.Len() == 0 {
		return msg
	}
	b.WriteString(rest)
	return b.String()
}

// appendStringLiterals appends the contents of the single-quoted literals of sql (a doubled
// quote inside one stands for a quote; E” and dollar-quoted strings count as far as their
// quotes do). Comments and identifiers are not told apart: a value that only looks like a
// literal makes the message keep less, never more.
func appendStringLiterals(out []string, sql string) []string {
	for i := 0; i < len(sql); i++ {
		if sql[i] != '\'' {
			continue
		}
		var lit strings.Builder
		j := i + 1
		for ; j < len(sql); j++ {
			if sql[j] == '\'' {
				if j+1 < len(sql) && sql[j+1] == '\'' {
					lit.WriteByte('\'')
					j++
					continue
				}
				break
			}
			lit.WriteByte(sql[j])
		}
		out = append(out, lit.String())
		i = j
	}
	if strings.Contains(sql, "$$") {
		parts := strings.Split(sql, "$$")
		for k := 1; k < len(parts); k += 2 {
			out = append(out, parts[k])
		}
	}
	return out
}

func insideAny(lits []string, v string) bool {
	for _, l := range lits {
		if strings.Contains(l, v) {
			return true
		}
	}
	return false
}
