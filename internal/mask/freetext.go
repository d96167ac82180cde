package mask

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// span is one sensitive substring found in free text.
type span struct {
	start, end int
	class      string
}

// str views b as a string without copying, for the classify validators, which never keep
// their argument. The bytes must not change while the string is in use.
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Bit sets of the bytes that can start or betray a sensitive substring: digits, '$' and '-'
// below 64; '@', 'J' (eyJ), 'K' and 'S' (AKIA, ASIA), '_' (ghp_, sk_live_) and 'x' (xox) above.
const (
	triggerLo uint64 = 0x3ff<<'0' | 1<<'$' | 1<<'-'
	triggerHi uint64 = 1<<('@'-64) | 1<<('J'-64) | 1<<('K'-64) | 1<<('S'-64) | 1<<('_'-64) | 1<<('x'-64)
)

// mayContainSensitive is the fast path: one pass over v that rules out almost every clean
// value (no '@', fewer than nine digits, no token or hash prefix) before any detector runs.
// Most bytes cost one bit test.
func mayContainSensitive(v []byte) bool {
	// Eight bytes at a time while they hold nothing but digits among the trigger bytes (the
	// commonest clean text: words, spaces and numbers), then byte by byte from the first
	// word with another trigger byte.
	digits, i := 0, 0
	for ; i+8 <= len(v); i += 8 {
		x := binary.LittleEndian.Uint64(v[i:])
		if triggerWord(x) != 0 {
			break
		}
		if digits += digitsInWord(x); digits >= 9 {
			return true
		}
	}
	if rest := len(v) - i; rest > 0 && rest < 8 && len(v) >= 8 {
		// The last bytes, as the end of the last whole word, the bytes already seen
		// shifted out (zero bytes are neither digits nor triggers).
		x := binary.LittleEndian.Uint64(v[len(v)-8:]) >> (8 * (8 - rest))
		if triggerWord(x) == 0 {
			return digits+digitsInWord(x) >= 9
		}
	}
	return mayContainSensitiveFrom(v, i, digits)
}

// Word-at-a-time constants: every byte 0x01, every byte 0x80.
const (
	wordOnes uint64 = 0x0101010101010101
	wordHigh uint64 = 0x8080808080808080
)

// digitsInWord counts the ASCII digits among the eight bytes of x.
func digitsInWord(x uint64) int {
	// y's bytes are x's without their high bit (at most 0x7f: no carry crosses a byte
	// below); a byte's high bit in y+0x50 says y >= '0', in y+0x46 that y > '9'.
	y := x &^ wordHigh
	d := (y + 0x50*wordOnes) &^ (y + 0x46*wordOnes) &^ x & wordHigh
	return bits.OnesCount64(d)
}

// triggerWord returns a non-zero value when one of the eight bytes of x is an ASCII trigger
// byte other than a digit (see triggerLo and triggerHi): '$', '-', '@', 'J', 'K', 'S', '_'
// or 'x'.
func triggerWord(x uint64) uint64 {
	y := x &^ wordHigh
	// A byte of y^c is zero exactly where y's byte is c; adding 0x7f to a byte of at most
	// 0x7f sets its high bit exactly when it is not zero (and never carries).
	const k = 0x7f * wordOnes
	ne := (y ^ '$'*wordOnes + k) & (y ^ '-'*wordOnes + k) & (y ^ '@'*wordOnes + k) & (y ^ 'J'*wordOnes + k) &
		(y ^ 'K'*wordOnes + k) & (y ^ 'S'*wordOnes + k) & (y ^ '_'*wordOnes + k) & (y ^ 'x'*wordOnes + k)
	return ^ne & wordHigh &^ x
}

// mayContainSensitiveFrom is mayContainSensitive's byte loop from v[start:], with the
// digits of v[:start] (which holds no other trigger byte) already counted.
func mayContainSensitiveFrom(v []byte, start, digits int) bool {
	n := len(v)
	// The trigger bits of every byte value, 64 per word: bytes of 128 and up (UTF-8) never
	// trigger. One load, shift and test per byte.
	trigger := [4]uint64{triggerLo, triggerHi, 0, 0}
	for i := start; i < n; i++ {
		c := v[i]
		if c-'0' < 10 {
			// A digit, the commonest trigger: counted without the switch's search.
			if digits++; digits >= 9 {
				return true
			}
			continue
		}
		if trigger[c>>6]>>(c&63)&1 == 0 {
			continue
		}
		switch c {
		case '@':
			return true
		case '$':
			// $1$ $5$ $6$ $7$ $y$, $2a$ $2b$ $2y$ (bcrypt), $argon2, $scrypt, $pbkdf2, and the
			// '$' after pbkdf2_sha256 / SCRAM-SHA-256.
			if i+2 < n && (v[i+2] == '$' || v[i+1] == 'a' || v[i+1] == 's' || v[i+1] == 'p' ||
				(v[i+1] == '2' && i+3 < n && v[i+3] == '$')) {
				return true
			}
			if i >= 3 && (string(v[i-3:i]) == "256" || string(v[i-3:i]) == "ha1") {
				return true
			}
		case '-':
			if i+10 <= n && string(v[i:i+10]) == "-----BEGIN" {
				return true
			}
		case '_':
			// ghp_, gho_, github_pat_, sk_live_, rk_test_ ...
			if i >= 3 && v[i-3] == 'g' && v[i-2] == 'h' {
				return true
			}
			if i >= 2 && (v[i-2] == 's' || v[i-2] == 'r') && v[i-1] == 'k' {
				return true
			}
			if i >= 6 && v[i-1] == 'b' && v[i-2] == 'u' {
				return true
			}
		case 'K', 'S':
			// AKIA / ASIA
			if i >= 1 && i+2 < n && v[i-1] == 'A' && v[i+1] == 'I' && v[i+2] == 'A' {
				return true
			}
		case 'x':
			if i+3 < n && v[i+1] == 'o' && v[i+2] == 'x' {
				return true
			}
		case 'J':
			if i >= 2 && v[i-1] == 'y' && v[i-2] == 'e' {
				return true
			}
		}
	}
	return false
}

func isEmailLocal(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func isTokenChar(c byte) bool {
	return isAlnum(c) || c == '_' || c == '-' || c == '.'
}

// findSpans appends the sensitive substrings of v to spans, in order, without overlaps.
func findSpans(v []byte, spans []span) []span {
	n := len(v)
	next := 0    // where scanning resumes
	spanEnd := 0 // where the last span ended: an e-mail's local part cannot start before it
	for i := 0; i < n; i++ {
		if len(spans) > 0 {
			spanEnd = spans[len(spans)-1].end
		}
		if i < next {
			continue
		}
		c := v[i]
		if c == '@' {
			s := i
			for s > spanEnd && isEmailLocal(v[s-1]) {
				s--
			}
			e := i + 1
			for e < n && (isAlnum(v[e]) || v[e] == '.' || v[e] == '-') {
				e++
			}
			for e > i+1 && (v[e-1] == '.' || v[e-1] == '-') {
				e--
			}
			if s < i && classify.IsEmail(str(v[s:e])) {
				// Drop a token or number span that ran into the local part.
				for len(spans) > 0 && spans[len(spans)-1].end > s {
					spans = spans[:len(spans)-1]
				}
				spans = append(spans, span{s, e, classify.Email})
				next = e
			}
			continue
		}
		if i > 0 && isTokenChar(v[i-1]) && c != '-' && c != '$' {
			continue // only at word starts
		}
		switch {
		case c >= '0' && c <= '9':
			if i+11 <= n && v[i+3] == '-' && v[i+6] == '-' && (i+11 == n || !isAlnum(v[i+11])) &&
				classify.SSNForm(str(v[i:i+11])) == classify.SSNDashed {
				spans = append(spans, span{i, i + 11, classify.SSN})
				next = i + 11
				continue
			}
			// A run of digits with single space or dash separators.
			e, digits, last := i, 0, i
			for e < n && digits <= 19 {
				if v[e] >= '0' && v[e] <= '9' {
					digits++
					e++
					last = e
					continue
				}
				if (v[e] == ' ' || v[e] == '-') && e+1 < n && v[e+1] >= '0' && v[e+1] <= '9' {
					e++
					continue
				}
				break
			}
			if digits >= 13 && digits <= 19 && (last == n || !isAlnum(v[last])) && classify.IsCard(str(v[i:last])) {
				spans = append(spans, span{i, last, classify.Card})
			}
			next = last
		case c >= 'A' && c <= 'Z':
			if i+4 < n && v[i+1] >= 'A' && v[i+1] <= 'Z' && v[i+2] >= '0' && v[i+2] <= '9' && v[i+3] >= '0' && v[i+3] <= '9' {
				e := i
				for e < n && (isAlnum(v[e]) || (v[e] == ' ' && e+1 < n && isAlnum(v[e+1]) && (e-i)%5 == 4)) {
					e++
				}
				if e-i >= 15 && classify.IsIBAN(str(v[i:e])) {
					spans = append(spans, span{i, e, classify.IBAN})
					next = e
					continue
				}
			}
			fallthrough
		case c >= 'a' && c <= 'z':
			e := i
			for e < n && isTokenChar(v[e]) {
				e++
			}
			if e < n && v[e] == '$' {
				// pbkdf2_sha256$..., SCRAM-SHA-256$...
				if he := hashEnd(v, i); classify.IsPasswordHash(str(v[i:he])) {
					spans = append(spans, span{i, he, classify.Password})
					next = he
					continue
				}
			}
			for e > i && v[e-1] == '.' {
				e--
			}
			if e-i >= 15 && classify.TokenKind(str(v[i:e])) != "" {
				spans = append(spans, span{i, e, classify.APIKey})
			}
			next = e
		case c == '-':
			if bytes.HasPrefix(v[i:], []byte("-----BEGIN ")) {
				end := bytes.Index(v[i:], []byte("-----END "))
				if end < 0 {
					end = n - i
				} else {
					end += 9
					if close := bytes.Index(v[i+end:], []byte("-----")); close >= 0 {
						end += close + 5
					} else {
						end = n - i
					}
				}
				if bytes.Contains(v[i:i+end], []byte("PRIVATE KEY")) {
					spans = append(spans, span{i, i + end, classify.APIKey})
					next = i + end
				}
			}
		case c == '$':
			e := hashEnd(v, i)
			if classify.IsPasswordHash(str(v[i:e])) {
				spans = append(spans, span{i, e, classify.Password})
			}
			next = e
		}
	}
	return spans
}

// endsToken reports whether c ends a hash or key token: blanks, quotes, and the punctuation
// of array, JSON, record and list syntax ({$2b$...,...}, ["$2b$..."], ($2b$...)).
func endsToken(c byte) bool {
	switch c {
	case '"', '\'', ',', '{', '}', '(', ')', '[', ']', ';', '\\':
		return true
	}
	return c <= ' '
}

// hashEnd returns where the password hash that may start at v[i] ends. Argon2 parameters
// hold commas ($argon2id$v=19$m=65536,t=3,p=4$...): a comma followed by a parameter name
// continues the hash there.
func hashEnd(v []byte, i int) int {
	n := len(v)
	argon := bytes.HasPrefix(v[i:], []byte("$argon2"))
	e := i
	for e < n {
		if v[e] == ',' && argon && e+2 < n && v[e+1] >= 'a' && v[e+1] <= 'z' && v[e+2] == '=' {
			e++
			continue
		}
		if endsToken(v[e]) {
			break
		}
		e++
	}
	return e
}

// StrategyFunc returns the strategy for a class.
type StrategyFunc func(class string) Strategy

// FreeText masks the sensitive substrings of any text (e-mail addresses, card numbers, SSNs
// written with dashes, IBANs, API keys and tokens, JWTs, PEM private keys, password hashes)
// and appends the result to dst. n is the number of substrings masked; when it is 0 nothing
// was appended and the caller keeps v. Clean values cost one pass and no allocation.
func (m *Masker) FreeText(dst, v []byte, strat StrategyFunc) (out []byte, n int) {
	if !mayContainSensitive(v) {
		return dst, 0
	}
	var buf [8]span
	spans := findSpans(v, buf[:0])
	if len(spans) == 0 {
		return dst, 0
	}
	start := len(dst)
	prev := 0
	for _, sp := range spans {
		s := Partial
		if strat != nil {
			s = strat(sp.class)
		}
		if s == Raw {
			continue
		}
		dst = append(dst, v[prev:sp.start]...)
		switch s {
		case Hash:
			dst = m.Token(dst, v[sp.start:sp.end])
		case Partial:
			dst = partial(dst, sp.class, v[sp.start:sp.end])
		default: // Redact, and Null, which cannot apply to part of a value
			dst = append(dst, RedactedText...)
		}
		prev = sp.end
		n++
	}
	if n == 0 {
		return dst[:start], 0
	}
	return append(dst, v[prev:]...), n
}

// residueClean reports whether everything of v outside spans is separators (no letters or
// digits), i.e. the spans account for the whole value: "a@x.com, b@y.org".
func residueClean(v []byte, spans []span) bool {
	prev := 0
	for _, sp := range spans {
		for _, c := range v[prev:sp.start] {
			if isAlnum(c) || c >= 0x80 {
				return false
			}
		}
		prev = sp.end
	}
	for _, c := range v[prev:] {
		if isAlnum(c) || c >= 0x80 {
			return false
		}
	}
	return true
}
