// Package mask rewrites sensitive values in query results before they leave Gatehouse:
// partial masks that keep a value's shape, deterministic keyed tokens (so joins and GROUP BY
// still work), redaction and NULL, always producing a value that is valid for the column's
// wire type (text, json/jsonb, arrays, records, dates, inet; text and binary formats), plus
// value detectors that find sensitive substrings in any other text as the last line of defence.
package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// Strategy is how a value of a sensitive class is masked.
type Strategy string

// The masking strategies.
const (
	// Raw leaves the value as it is (who sees raw values is policy).
	Raw Strategy = "raw"
	// Partial keeps the shape and a little of the value: j***@example.com, ***-**-6789.
	Partial Strategy = "partial"
	// Hash replaces the value with a keyed token: the same input always gives the same token.
	Hash Strategy = "hash"
	// Redact replaces the value with a fixed text.
	Redact Strategy = "redact"
	// Null replaces the value with SQL NULL.
	Null Strategy = "null"
)

// RedactedText is what Redact puts in place of a text value.
const RedactedText = "[redacted]"

// Valid reports whether s names a strategy.
func (s Strategy) Valid() bool {
	switch s {
	case Raw, Partial, Hash, Redact, Null:
		return true
	}
	return false
}

// Masker holds the per-installation key of the Hash strategy. It is safe for concurrent use.
type Masker struct {
	key  []byte
	pool sync.Pool
}

// NewMasker returns a masker keyed with key (at least 16 bytes; keep it secret and stable,
// or tokens change and joins across time break).
func NewMasker(key []byte) (*Masker, error) {
	if len(key) < 16 {
		return nil, errors.New("mask: the hashing key must be at least 16 bytes")
	}
	m := &Masker{key: append([]byte(nil), key...)}
	m.pool.New = func() any { return hmac.New(sha256.New, m.key) }
	return m, nil
}

// Token returns the deterministic token of v: "tok_" and hex of HMAC-SHA256(key, v),
// shortened to stay no longer than v where it can (12–20 characters).
func (m *Masker) Token(dst, v []byte) []byte {
	h := m.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(v)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	m.pool.Put(h)
	n := len(v)
	if n < 12 {
		n = 12
	}
	if n > 20 {
		n = 20
	}
	var hx [64]byte
	hex.Encode(hx[:], sum[:])
	dst = append(dst, "tok_"...)
	return append(dst, hx[:n-4]...)
}

// Text masks a text value of class with strategy and appends the result to dst. ok is false
// for Null (the caller sends SQL NULL).
func (m *Masker) Text(dst []byte, class string, s Strategy, v []byte) (out []byte, ok bool) {
	switch s {
	case Raw:
		return append(dst, v...), true
	case Null:
		return dst, false
	case Hash:
		return m.Token(dst, v), true
	case Redact:
		return append(dst, RedactedText...), true
	}
	return partial(dst, class, v), true
}

// partial appends the shape-keeping mask of v for class.
func partial(dst []byte, class string, v []byte) []byte {
	switch class {
	case classify.Email:
		return partialEmail(dst, v)
	case classify.Card, classify.SSN:
		return keepLastDigits(dst, v, 4)
	case classify.Phone:
		n := countDigits(v)
		keep := 2
		if n >= 10 {
			keep = 4
		}
		return keepLastDigits(dst, v, keep)
	case classify.IBAN:
		return partialIBAN(dst, v)
	case classify.NationalID:
		return keepLastAlnum(dst, v, 2)
	case classify.IP:
		if out, ok := partialIP(dst, v); ok {
			return out
		}
		return stars(dst, v, 0)
	case classify.DOB:
		return partialDate(dst, v)
	case classify.Name:
		return initials(dst, v)
	case classify.Password, classify.APIKey, classify.Secret, classify.Address:
		return append(dst, RedactedText...)
	}
	return stars(dst, v, 1)
}

func countDigits(v []byte) int {
	n := 0
	for _, c := range v {
		if c >= '0' && c <= '9' {
			n++
		}
	}
	return n
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// partialEmail keeps the first character of the local part and the domain:
// john.doe@example.com → j***@example.com. The result is never longer than the input.
func partialEmail(dst, v []byte) []byte {
	at := -1
	for i := len(v) - 1; i >= 0; i-- {
		if v[i] == '@' {
			at = i
			break
		}
	}
	if at <= 0 {
		return stars(dst, v, 1)
	}
	if at == 1 {
		// One-character local part: hide it entirely.
		dst = append(dst, '*')
		return append(dst, v[at:]...)
	}
	// The first character, then one star per further character up to three, then the
	// domain: written in place after one growth of dst, with one copy (a mask per row of a
	// streamed result).
	n := min(at-1, 3)
	k, size := len(dst), 1+n+len(v)-at
	dst = slices.Grow(dst, size)[:k+size]
	out := dst[k:]
	out[0] = v[0]
	for i := 1; i <= n; i++ {
		out[i] = '*'
	}
	copy(out[1+n:], v[at:])
	return dst
}

// keepLastDigits replaces every digit but the last keep with '*', keeping separators:
// 123-45-6789 → ***-**-6789, 4242 4242 4242 4242 → **** **** **** 4242. Letters are starred
// too.
func keepLastDigits(dst, v []byte, keep int) []byte {
	n := countDigits(v)
	if n <= keep {
		// Too short to keep anything safely.
		keep = 0
	}
	seen := 0
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			seen++
			if seen > n-keep {
				dst = append(dst, c)
			} else {
				dst = append(dst, '*')
			}
		case isAlnum(c) || c >= 0x80:
			if c < 0x80 || c >= 0xC0 {
				dst = append(dst, '*')
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// keepLastAlnum stars every letter and digit but the last keep.
func keepLastAlnum(dst, v []byte, keep int) []byte {
	n := 0
	for _, c := range v {
		if isAlnum(c) {
			n++
		}
	}
	if n <= keep*2 {
		keep = 0
	}
	seen := 0
	for _, c := range v {
		if isAlnum(c) {
			seen++
			if seen > n-keep {
				dst = append(dst, c)
				continue
			}
			dst = append(dst, '*')
			continue
		}
		if c >= 0x80 {
			if c >= 0xC0 {
				dst = append(dst, '*')
			}
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// partialIBAN keeps the country code and the last four characters: DE** **** **** 3000.
func partialIBAN(dst, v []byte) []byte {
	n := 0
	for _, c := range v {
		if isAlnum(c) {
			n++
		}
	}
	seen := 0
	for _, c := range v {
		if !isAlnum(c) {
			if c < 0x80 {
				dst = append(dst, c)
			}
			continue
		}
		seen++
		if seen <= 2 || (seen > n-4 && n > 8) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '*')
		}
	}
	return dst
}

// stars replaces every character after the first keep runes with '*' (one per rune), keeping
// spaces and punctuation.
func stars(dst, v []byte, keep int) []byte {
	i, r := 0, 0
	for i < len(v) {
		c := v[i]
		size := 1
		if c >= 0x80 {
			_, size = utf8.DecodeRune(v[i:])
		}
		switch {
		case r < keep:
			dst = append(dst, v[i:i+size]...)
		case c < 0x80 && !isAlnum(c):
			dst = append(dst, c)
		default:
			dst = append(dst, '*')
		}
		i += size
		r++
	}
	return dst
}

// initials keeps the first letter of each word: "John Smith" → "J*** S****".
func initials(dst, v []byte) []byte {
	start := true
	for i := 0; i < len(v); {
		c := v[i]
		size := 1
		if c >= 0x80 {
			_, size = utf8.DecodeRune(v[i:])
		}
		word := c >= 0x80 || isAlnum(c)
		switch {
		case !word:
			dst = append(dst, c)
			start = true
		case start:
			dst = append(dst, v[i:i+size]...)
			start = false
		default:
			dst = append(dst, '*')
		}
		i += size
	}
	return dst
}

// partialDate keeps the year of a date or timestamp in any DateStyle and sets the rest to
// the first of January at midnight: 1984-03-07 → 1984-01-01, 07.03.1984 → 01.01.1984.
func partialDate(dst, v []byte) []byte {
	start := len(dst)
	i := 0
	for i < len(v) {
		c := v[i]
		if c < '0' || c > '9' {
			if c >= 0x80 || isAlnum(c) {
				// Month names (DateStyle Postgres: "Wed Mar 07 1984"): write Jan.
				j := i
				for j < len(v) && (v[j] >= 0x80 || (isAlnum(v[j]) && !(v[j] >= '0' && v[j] <= '9'))) {
					j++
				}
				word := v[i:j]
				if len(word) == 3 && isMonth(word) {
					dst = append(dst, "Jan"...)
				} else {
					dst = append(dst, word...)
				}
				i = j
				continue
			}
			dst = append(dst, c)
			i++
			continue
		}
		j := i
		for j < len(v) && v[j] >= '0' && v[j] <= '9' {
			j++
		}
		run := j - i
		switch {
		case run == 4:
			dst = append(dst, v[i:j]...) // the year
		case run <= 2 && isTimePart(v, i, j):
			dst = append(dst, "00"[:run]...)
		case run == 2:
			dst = append(dst, '0', '1')
		case run == 1:
			dst = append(dst, '1')
		default: // fractional seconds and anything else
			for k := 0; k < run; k++ {
				dst = append(dst, '0')
			}
		}
		i = j
	}
	if len(dst) == start {
		return append(dst, v...)
	}
	return dst
}

func isMonth(w []byte) bool {
	switch string(w) {
	case "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec":
		return true
	}
	return false
}

// isTimePart reports whether the digit run v[i:j] belongs to an hh:mm:ss time.
func isTimePart(v []byte, i, j int) bool {
	return (j < len(v) && v[j] == ':') || (i > 0 && v[i-1] == ':')
}
