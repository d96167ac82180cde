// Package classify finds sensitive data by itself: value validators (Luhn, mod-97, national
// id checksums, key and token formats), column-name evidence in several languages, and a
// per-target catalog of upstream columns labelled with a class, a confidence and the
// evidence, so masking and policy work with zero configuration.
package classify

import (
	"math"
	"net/netip"
	"strings"
	"time"
)

// Class names one kind of sensitive data. Policies and masking profiles key on these names.
type Class = string

// The sensitive classes Gatehouse knows. None marks a column known not to be sensitive.
const (
	Email      Class = "email"
	Phone      Class = "phone"
	Card       Class = "card"
	IBAN       Class = "iban"
	SSN        Class = "ssn"
	NationalID Class = "national_id"
	IP         Class = "ip"
	DOB        Class = "dob"
	Name       Class = "name"
	Address    Class = "address"
	Password   Class = "password"
	APIKey     Class = "api_key"
	Secret     Class = "secret"
	None       Class = "none"
)

// Classes lists every sensitive class, in a stable order for reports.
func Classes() []Class {
	return []Class{Email, Phone, Card, IBAN, SSN, NationalID, IP, DOB, Name, Address, Password, APIKey, Secret}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool { return isUpper(c) || isLower(c) }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

// IsEmail reports whether s is one e-mail address (local@domain.tld), without allocating.
func IsEmail(s string) bool {
	if len(s) < 6 || len(s) > 254 {
		return false
	}
	at := strings.IndexByte(s, '@')
	if at <= 0 || at > 64 || strings.IndexByte(s[at+1:], '@') >= 0 {
		return false
	}
	for i := 0; i < at; i++ {
		if !isEmailLocal(s[i]) {
			return false
		}
	}
	return validDomain(s[at+1:])
}

func isEmailLocal(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-' || c == '\''
}

// validDomain checks a host name with at least one dot and an alphabetic TLD of 2+ letters.
func validDomain(d string) bool {
	if len(d) < 4 || d[0] == '.' || d[0] == '-' || d[len(d)-1] == '.' {
		return false
	}
	dot := strings.LastIndexByte(d, '.')
	if dot < 1 || len(d)-dot-1 < 2 {
		return false
	}
	for i := dot + 1; i < len(d); i++ {
		if !isAlpha(d[i]) {
			return false
		}
	}
	prev := byte(0)
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(isAlnum(c) || c == '-' || c == '.') || (c == '.' && prev == '.') {
			return false
		}
		prev = c
	}
	return true
}

// digitsOnly copies the digits of s into buf, allowing only the separators in seps, and
// returns them; ok is false when another character appears.
func digitsOnly(s string, seps string, buf []byte) ([]byte, bool) {
	buf = buf[:0]
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			buf = append(buf, c)
		case strings.IndexByte(seps, c) >= 0:
		default:
			return buf, false
		}
	}
	return buf, true
}

// Luhn reports whether the digit string d passes the Luhn check.
func Luhn(d []byte) bool {
	if len(d) < 2 {
		return false
	}
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		n := int(d[i] - '0')
		if double {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
		double = !double
	}
	return sum%10 == 0
}

// IsCard reports whether s is a payment card number: 13–19 digits (spaces or dashes allowed),
// a known issuer prefix for its length, and a valid Luhn check digit.
func IsCard(s string) bool {
	if len(s) < 13 || len(s) > 23 {
		return false
	}
	var b [24]byte
	d, ok := digitsOnly(s, " -", b[:0])
	if !ok || len(d) < 13 || len(d) > 19 {
		return false
	}
	return cardPrefixOK(d) && Luhn(d)
}

// cardPrefixOK checks the issuer identification number against the major networks' ranges
// and the lengths they issue, which rejects most Luhn-valid random numbers.
func cardPrefixOK(d []byte) bool {
	n := len(d)
	p2 := int(d[0]-'0')*10 + int(d[1]-'0')
	p4 := p2*100 + int(d[2]-'0')*10 + int(d[3]-'0')
	p6 := p4*100 + int(d[4]-'0')*10 + int(d[5]-'0')
	switch {
	case d[0] == '4': // Visa
		return n == 13 || n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p6 >= 222100 && p6 <= 272099: // Mastercard
		return n == 16
	case p2 == 34 || p2 == 37: // American Express
		return n == 15
	case p4 == 6011 || p2 == 65 || (p6 >= 622126 && p6 <= 622925) || (p4/10 >= 644 && p4/10 <= 649): // Discover
		return n >= 16 && n <= 19
	case p4 >= 3528 && p4 <= 3589: // JCB
		return n >= 16 && n <= 19
	case p2 == 36 || p2 == 38 || p2 == 39 || (p4/10 >= 300 && p4/10 <= 305): // Diners
		return n >= 14 && n <= 19
	case p2 == 62: // UnionPay
		return n >= 16 && n <= 19
	case p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 || p4 == 6759 || (p4 >= 6761 && p4 <= 6763): // Maestro
		return n >= 12 && n <= 19
	}
	return false
}

// ibanLengths are the IBAN lengths of the countries that issue them (a subset covering
// Europe and the common non-European registrants).
var ibanLengths = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
	"CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
	"FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
	"HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
	"LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
	"NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
	"SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}

// IsIBAN reports whether s is an IBAN (spaces allowed) with the right length for its country
// and a valid ISO 7064 mod-97 check.
func IsIBAN(s string) bool {
	if len(s) < 15 || len(s) > 42 {
		return false
	}
	var b [42]byte
	c := b[:0]
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ':
		case isAlnum(ch):
			if isLower(ch) {
				ch -= 'a' - 'A'
			}
			c = append(c, ch)
		default:
			return false
		}
	}
	if len(c) < 15 || !isUpper(c[0]) || !isUpper(c[1]) || !isDigit(c[2]) || !isDigit(c[3]) {
		return false
	}
	if want, ok := ibanLengths[string(c[:2])]; !ok || want != len(c) {
		return false
	}
	return mod97(c)
}

func mod97(c []byte) bool {
	rem := 0
	add := func(ch byte) {
		if isDigit(ch) {
			rem = (rem*10 + int(ch-'0')) % 97
		} else {
			v := int(ch-'A') + 10
			rem = (rem*100 + v) % 97
		}
	}
	for _, ch := range c[4:] {
		add(ch)
	}
	for _, ch := range c[:4] {
		add(ch)
	}
	return rem == 1
}

// SSNShape says how an SSN candidate was written.
type SSNShape int

// The shapes of a valid SSN: with dashes (123-45-6789) or as nine bare digits.
const (
	NotSSN SSNShape = iota
	SSNDashed
	SSNBare
)

// SSNForm reports whether s is a valid US social security number and how it is written. Area
// 000, 666 and 900–999, group 00 and serial 0000 are never issued. Nine bare digits pass this
// check easily, so callers must ask for corroborating evidence (a column name) for SSNBare.
func SSNForm(s string) SSNShape {
	var d [9]byte
	shape := NotSSN
	switch {
	case len(s) == 11 && s[3] == '-' && s[6] == '-':
		shape = SSNDashed
		copy(d[0:3], s[0:3])
		copy(d[3:5], s[4:6])
		copy(d[5:9], s[7:11])
	case len(s) == 11 && s[3] == ' ' && s[6] == ' ':
		shape = SSNDashed
		copy(d[0:3], s[0:3])
		copy(d[3:5], s[4:6])
		copy(d[5:9], s[7:11])
	case len(s) == 9:
		shape = SSNBare
		copy(d[:], s)
	default:
		return NotSSN
	}
	for _, c := range d {
		if !isDigit(c) {
			return NotSSN
		}
	}
	area := int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0')
	group := int(d[3]-'0')*10 + int(d[4]-'0')
	serial := int(d[5]-'0')*1000 + int(d[6]-'0')*100 + int(d[7]-'0')*10 + int(d[8]-'0')
	if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
		return NotSSN
	}
	// Numbers published in advertising and never valid.
	if string(d[:]) == "078051120" || string(d[:]) == "219099999" {
		return NotSSN
	}
	return shape
}

// IsUKNINO reports whether s is a UK National Insurance number (AB123456C), following
// HMRC's prefix rules.
func IsUKNINO(s string) bool {
	var b [9]byte
	c := b[:0]
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			continue
		}
		if len(c) == 9 {
			return false
		}
		ch := s[i]
		if isLower(ch) {
			ch -= 'a' - 'A'
		}
		c = append(c, ch)
	}
	if len(c) != 9 || !isUpper(c[0]) || !isUpper(c[1]) {
		return false
	}
	if strings.IndexByte("DFIQUV", c[0]) >= 0 || strings.IndexByte("DFIOQUV", c[1]) >= 0 {
		return false
	}
	switch string(c[:2]) {
	case "BG", "GB", "NK", "KN", "TN", "NT", "ZZ":
		return false
	}
	for _, ch := range c[2:8] {
		if !isDigit(ch) {
			return false
		}
	}
	return c[8] >= 'A' && c[8] <= 'D'
}

// IsCanadianSIN reports whether s is a Canadian social insurance number (nine digits, spaces
// or dashes allowed, Luhn-valid, not starting with 0 or 8).
func IsCanadianSIN(s string) bool {
	var b [12]byte
	d, ok := digitsOnly(s, " -", b[:0])
	if !ok || len(d) != 9 || d[0] == '0' || d[0] == '8' {
		return false
	}
	return Luhn(d)
}

// IsSpanishDNI reports whether s is a Spanish DNI (8 digits and a check letter) or NIE
// (X/Y/Z, 7 digits and a check letter).
func IsSpanishDNI(s string) bool {
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 9 {
		return false
	}
	n := 0
	start := 0
	switch s[0] {
	case 'X', 'x':
		n, start = 0, 1
	case 'Y', 'y':
		n, start = 1, 1
	case 'Z', 'z':
		n, start = 2, 1
	}
	for i := start; i < 8; i++ {
		if !isDigit(s[i]) {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	letter := s[8]
	if isLower(letter) {
		letter -= 'a' - 'A'
	}
	return "TRWAGMYFPDXBNJZSQVHLCKE"[n%23] == letter
}

// IsFrenchNIR reports whether s is a French social security number (NIR: 13 digits and a
// two-digit key equal to 97 - n mod 97; Corsican 2A/2B departments handled).
func IsFrenchNIR(s string) bool {
	var b [16]byte
	c := b[:0]
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			continue
		}
		if len(c) == 15 {
			return false
		}
		c = append(c, s[i])
	}
	if len(c) != 15 || (c[0] != '1' && c[0] != '2') {
		return false
	}
	if c[5] == '2' && (c[6] == 'A' || c[6] == 'B') {
		// Corsica: 2A counts as 19 and 2B as 18 in the key computation.
		c[5] = '1'
		if c[6] == 'A' {
			c[6] = '9'
		} else {
			c[6] = '8'
		}
	}
	var n uint64
	for i := 0; i < 13; i++ {
		if !isDigit(c[i]) {
			return false
		}
		n = n*10 + uint64(c[i]-'0')
	}
	if !isDigit(c[13]) || !isDigit(c[14]) {
		return false
	}
	key := uint64(c[13]-'0')*10 + uint64(c[14]-'0')
	month := int(c[3]-'0')*10 + int(c[4]-'0')
	if month < 1 || (month > 12 && month < 20) || month > 99 {
		return false
	}
	return key == 97-n%97
}

// IsNationalID reports whether s is one of the checksum-bearing national identifiers other
// than the US SSN: UK NINO, Spanish DNI/NIE, French NIR. (The Canadian SIN is nine bare
// digits and needs name evidence; see IsCanadianSIN.)
func IsNationalID(s string) bool {
	return IsUKNINO(s) || IsSpanishDNI(s) || IsFrenchNIR(s)
}

// IsIP reports whether s is an IPv4 or IPv6 address (optionally with a /prefix).
func IsIP(s string) bool {
	if len(s) < 7 || len(s) > 49 {
		return false
	}
	if i := strings.IndexByte(s, '/'); i > 0 {
		_, err := netip.ParsePrefix(s)
		return err == nil
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// IsPhone reports whether s looks like a telephone number: E.164 (+ and 8–15 digits) or a
// common national format with separators ((415) 555-2671, 030 1234567, 06-12 34 56 78).
// Bare digit strings without a + are accepted only with separators, because order numbers
// are bare digits too.
func IsPhone(s string) bool {
	if len(s) < 7 || len(s) > 24 {
		return false
	}
	digits, seps := 0, 0
	plus := s[0] == '+'
	parens := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			digits++
		case c == '+':
			if i != 0 {
				return false
			}
		case c == ' ' || c == '-' || c == '.':
			seps++
			if i > 0 && !isDigit(s[i-1]) && s[i-1] != ')' {
				return false
			}
		case c == '(':
			parens++
			seps++
		case c == ')':
			parens--
			seps++
		default:
			return false
		}
	}
	if parens != 0 || digits < 7 || digits > 15 {
		return false
	}
	if plus {
		return digits >= 8
	}
	if seps == 0 {
		return false
	}
	// Version strings and dotted numbers ("1.2.3.4") have short groups only.
	return digits >= 9 && strings.Count(s, ".") < 3
}

// dateLayouts are the date spellings a date-of-birth column holds.
var dateLayouts = []string{"2006-01-02", "2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00", "01/02/2006", "02.01.2006", "2006/01/02", "02-01-2006"}

// IsDate reports whether s is a calendar date between 1900 and today in a common spelling.
func IsDate(s string) bool {
	if len(s) < 8 || len(s) > 32 || !isDigit(s[0]) {
		return false
	}
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.Year() >= 1900 && t.Year() <= time.Now().Year()
		}
	}
	return false
}

// IsPasswordHash reports whether s is a password hash in a crypt or PHC format: bcrypt
// ($2a$, $2b$, $2y$), argon2 ($argon2id$ ...), scrypt ($scrypt$, $7$), pbkdf2 (Django and
// passlib forms), sha-crypt ($5$, $6$), md5-crypt ($1$).
func IsPasswordHash(s string) bool {
	if len(s) < 20 {
		return false
	}
	switch {
	case len(s) == 60 && (strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")):
		return isDigit(s[4]) && isDigit(s[5]) && s[6] == '$'
	case strings.HasPrefix(s, "$argon2id$"), strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return strings.Count(s, "$") >= 4
	case strings.HasPrefix(s, "$scrypt$"), strings.HasPrefix(s, "$7$"):
		return strings.Count(s, "$") >= 3
	case strings.HasPrefix(s, "pbkdf2_sha256$"), strings.HasPrefix(s, "pbkdf2_sha1$"), strings.HasPrefix(s, "$pbkdf2-sha256$"), strings.HasPrefix(s, "$pbkdf2-sha512$"), strings.HasPrefix(s, "$pbkdf2$"):
		return strings.Count(s, "$") >= 3
	case strings.HasPrefix(s, "$6$"), strings.HasPrefix(s, "$5$"), strings.HasPrefix(s, "$1$"):
		return strings.Count(s, "$") >= 3
	case strings.HasPrefix(s, "SCRAM-SHA-256$"), strings.HasPrefix(s, "md5") && len(s) == 35:
		return true
	}
	return false
}

// TokenKind names the kind of API key, token or private key s is, or "" when it is none of
// the recognised formats. Each format is specific enough (fixed prefix, alphabet and length)
// to be reported without any column-name evidence.
func TokenKind(s string) string {
	n := len(s)
	switch {
	case n == 20 && (strings.HasPrefix(s, "AKIA") || strings.HasPrefix(s, "ASIA")) && allOf(s[4:], isUpperOrDigit):
		return "aws_access_key"
	case n == 40 && (strings.HasPrefix(s, "ghp_") || strings.HasPrefix(s, "gho_") || strings.HasPrefix(s, "ghu_") || strings.HasPrefix(s, "ghs_") || strings.HasPrefix(s, "ghr_")) && allOf(s[4:], isAlnumByte):
		return "github_token"
	case n >= 40 && strings.HasPrefix(s, "github_pat_") && allOf(s[11:], isWordByte):
		return "github_token"
	case n >= 15 && strings.HasPrefix(s, "xox") && s[4] == '-' && strings.IndexByte("abprs", s[3]) >= 0 && allOf(s[5:], isTokenByte):
		return "slack_token"
	case n >= 24 && (strings.HasPrefix(s, "sk_live_") || strings.HasPrefix(s, "rk_live_") || strings.HasPrefix(s, "sk_test_") || strings.HasPrefix(s, "rk_test_")) && allOf(s[8:], isAlnumByte):
		return "stripe_key"
	case n >= 30 && strings.HasPrefix(s, "eyJ") && isJWT(s):
		return "jwt"
	case strings.HasPrefix(s, "-----BEGIN ") && strings.Contains(s, "PRIVATE KEY-----"):
		return "private_key"
	}
	return ""
}

func isUpperOrDigit(c byte) bool { return isUpper(c) || isDigit(c) }
func isAlnumByte(c byte) bool    { return isAlnum(c) }
func isWordByte(c byte) bool     { return isAlnum(c) || c == '_' }
func isTokenByte(c byte) bool    { return isAlnum(c) || c == '-' }
func isB64URL(c byte) bool       { return isAlnum(c) || c == '-' || c == '_' }

func allOf(s string, f func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !f(s[i]) {
			return false
		}
	}
	return true
}

// isJWT checks the three base64url segments of a compact JWS whose header starts with {".
func isJWT(s string) bool {
	d1 := strings.IndexByte(s, '.')
	if d1 < 10 {
		return false
	}
	d2 := strings.IndexByte(s[d1+1:], '.')
	if d2 < 2 {
		return false
	}
	d2 += d1 + 1
	return allOf(s[:d1], isB64URL) && allOf(s[d1+1:d2], isB64URL) && allOf(s[d2+1:], isB64URL) && strings.HasPrefix(s[d1+1:], "eyJ")
}

// Entropy returns the Shannon entropy of s in bits per byte.
func Entropy(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	n := float64(len(s))
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// IsHighEntropySecret reports whether s looks like a random secret: 16–512 bytes without
// spaces, mixed character kinds, and at least 3.5 bits of entropy per byte. It is only
// meaningful where a column name already suggests a secret: hex digests and UUIDs pass it
// too.
func IsHighEntropySecret(s string) bool {
	if len(s) < 16 || len(s) > 512 || strings.IndexByte(s, ' ') >= 0 {
		return false
	}
	kinds := 0
	var seen [3]bool
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isDigit(c):
			seen[0] = true
		case isAlpha(c):
			seen[1] = true
		default:
			seen[2] = true
		}
	}
	for _, b := range seen {
		if b {
			kinds++
		}
	}
	return kinds >= 2 && Entropy(s) >= 3.5
}
