package mask

import "github.com/gatehouse/gatehouse/internal/gate"

// MaskServerText masks a server-generated text that may quote data — an ErrorResponse's
// message, detail or hint, a NoticeResponse, a NOTIFY payload — before it reaches a masked
// identity. The value detectors run on all of it; for data exceptions (SQLSTATE class 22)
// and integrity violations (class 23), which quote the offending value ("invalid input syntax
// for type integer: \"Johanna\"", "Key (email)=(j@example.com) already exists"), the quoted
// values are redacted too, because a name or a bare number cannot be recognised by its shape.
// It returns the text to send and how many values it masked.
func (m *Masker) MaskServerText(sqlstate string, text []byte, strat StrategyFunc) ([]byte, int) {
	out, n := m.FreeText(nil, text, strat)
	if n == 0 {
		out = text
	}
	if len(sqlstate) < 2 || (sqlstate[:2] != "22" && sqlstate[:2] != "23") {
		return out, n
	}
	red, k := redactQuoted(out)
	return red, n + k
}

// redactQuoted replaces the contents of "..." and of the value parts of "(col)=(value)"
// with the redaction text.
func redactQuoted(s []byte) ([]byte, int) {
	var out []byte
	n := 0
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			end := indexByteFrom(s, '"', i+1)
			if end < 0 {
				out = append(out, s[i:]...)
				return out, n
			}
			out = append(out, '"')
			out = append(out, RedactedText...)
			out = append(out, '"')
			n++
			i = end + 1
		case c == '=' && i+1 < len(s) && s[i+1] == '(' && i > 0 && s[i-1] == ')':
			end := matchingParen(s, i+1)
			if end < 0 {
				out = append(out, s[i:]...)
				return out, n
			}
			out = append(out, "=("...)
			out = append(out, RedactedText...)
			out = append(out, ')')
			n++
			i = end + 1
		default:
			out = append(out, c)
			i++
		}
	}
	return out, n
}

func indexByteFrom(s []byte, c byte, from int) int {
	for i := from; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func matchingParen(s []byte, open int) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// ServerText is MaskServerText with the session's masking profile; it returns text unchanged
// for a profile that shows raw values.
func (p *Planner) ServerText(c *gate.Check, sqlstate string, text []byte) ([]byte, int) {
	name := ""
	if c != nil {
		name = c.Decision.MaskProfile
	}
	prof := p.Profile(name)
	if prof.Raw() {
		return text, 0
	}
	return p.masker.MaskServerText(sqlstate, text, prof.For)
}
