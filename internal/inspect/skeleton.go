package inspect

import (
	"strconv"
	"strings"
)

// Simple-protocol clients send a new text for every value (pgbench -S sends
// `... WHERE aid = 4242;`, then `... WHERE aid = 17;`): the exact-text cache misses, and
// finding the shape cache's key took a pg_query Normalize, a cgo call costing more than the
// rest of the gate's check. The number skeleton finds the key without it, for the common
// texts whose only literals are small integers.
//
// The skeleton of a text is the text with each integer literal replaced by a NUL byte. The
// scan vouches only for plain texts: ASCII, no quotes of any kind (strings, quoted
// identifiers, dollar quotes, E'' escapes), no comments, no parameters, no backslash, and
// integer literals of at most 9 digits standing alone (not part of a decimal, an exponent,
// a hexadecimal or an underscored number). Anything else has no skeleton and is normalized
// by pg_query as before.
//
// Two texts with the same skeleton have the same tokens in the same places, the literals
// apart, and every literal is an integer the lexer reads as ICONST whatever its digits (9
// digits never overflow). The grammar depends on token types, never on an integer's
// value, so both parse to trees of the same form with constants at the same places, and
// pg_query's Normalize replaces the same tokens in both. The skeleton is remembered with
// a shape only when Normalize of the text it came from replaced exactly the skeleton's
// literals with $1, $2, ... in order and nothing else (asNormalized); then Normalize of any
// text with that skeleton is that same shape. TestSkeletonShapeIsNormalize checks it over
// the corpus and literal-mutated variants.

// maxSkeletonDigits bounds an integer literal the skeleton vouches for: ten digits could
// exceed int32, which the lexer reads as a numeric (FCONST) instead.
const maxSkeletonDigits = 9

// scanIntegers calls fn with the byte range of each integer literal of sql and reports
// whether the whole text is plain enough to have a skeleton (see above).
func scanIntegers(sql string, fn func(start, end int)) bool {
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c >= 0x80 || c == 0 || c == '\'' || c == '"' || c == '$' || c == '\\' || c == '`':
			return false
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-', c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			return false // comments
		case identStart(c):
			i++
			for i < len(sql) && identPart(sql[i]) {
				i++
			}
		case c >= '0' && c <= '9':
			j := i
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j-i > maxSkeletonDigits || (j < len(sql) && (identPart(sql[j]) || sql[j] == '.')) || (i > 0 && sql[i-1] == '.') {
				return false // 1.5, .5, 1e5, 0x1f, 1_000, a number too big for an int
			}
			fn(i, j)
			i = j
		default:
			i++
		}
	}
	return true
}

func identStart(c byte) bool { return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func identPart(c byte) bool  { return identStart(c) || (c >= '0' && c <= '9') }

// skeleton returns sql's number skeleton, or "" when it has none.
func skeleton(sql string) string {
	sk, ok := appendSkeleton(nil, sql)
	if !ok {
		return ""
	}
	return string(sk)
}

// appendSkeleton appends sql's number skeleton to dst and reports whether it has one.
func appendSkeleton(dst []byte, sql string) ([]byte, bool) {
	last := 0
	if !scanIntegers(sql, func(start, end int) {
		dst = append(dst, sql[last:start]...)
		dst = append(dst, 0)
		last = end
	}) {
		return dst, false
	}
	return append(dst, sql[last:]...), true
}

// asNormalized reports whether normalized is sql with exactly its skeleton's integer
// literals replaced by $1, $2, ... in order, each literal together with a minus sign right
// before it (and any blanks between them) when the parser folded that sign into the
// constant: pg_query's Normalize replaces a negated constant from its sign (`abalance +
// -4321` becomes `abalance + $1`, but `a -1` stays `a -$1`). Whether a sign is folded
// depends on the grammar, which reads token types and never an integer's value, so every
// text of the skeleton folds the same signs. The comparison walks both texts without
// building either.
func asNormalized(sql, normalized string) bool {
	last, j, n := 0, 0, 0
	ok := scanIntegers(sql, func(start, end int) {
		if j < 0 {
			return
		}
		n++
		seg := sql[last:start]
		last = end
		if k, ok := placeholderAt(normalized, j, seg, n); ok {
			j = k
			return
		}
		trimmed := strings.TrimRight(seg, " \t\n\r\f\v")
		if strings.HasSuffix(trimmed, "-") {
			if k, ok := placeholderAt(normalized, j, trimmed[:len(trimmed)-1], n); ok {
				j = k
				return
			}
		}
		j = -1
	})
	return ok && j >= 0 && normalized[j:] == sql[last:]
}

// placeholderAt reports whether normalized continues at j with seg and then the
// placeholder $n, and where it continues after them.
func placeholderAt(normalized string, j int, seg string, n int) (int, bool) {
	if !strings.HasPrefix(normalized[j:], seg) {
		return 0, false
	}
	j += len(seg)
	if j >= len(normalized) || normalized[j] != '$' {
		return 0, false
	}
	j++
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(n), 10)
	if !strings.HasPrefix(normalized[j:], string(d)) {
		return 0, false
	}
	return j + len(d), true
}
