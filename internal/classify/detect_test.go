package classify

import (
	"math/rand/v2"
	"testing"
)

func check(t *testing.T, name string, f func(string) bool, yes, no []string) {
	t.Helper()
	for _, v := range yes {
		if !f(v) {
			t.Errorf("%s(%q) = false, want true", name, v)
		}
	}
	for _, v := range no {
		if f(v) {
			t.Errorf("%s(%q) = true, want false", name, v)
		}
	}
}

func TestDetectors(t *testing.T) {
	check(t, "IsEmail", IsEmail,
		[]string{"john.doe@example.com", "a+b@sub.example.co.uk", "o'brien@corp.ie"},
		[]string{"john@", "@example.com", "a@b", "john doe@example.com", "x@example.c0m", "v1.2.3", "a@b@c.com", "user@localhost"})
	check(t, "IsCard", IsCard,
		[]string{"4242424242424242", "4242 4242 4242 4242", "5555-5555-5555-4444", "378282246310005", "6011111111111117", "2223003122003222"},
		[]string{"4242424242424241", "1234567812345670", "0000000000000000", "12345678901", "4242-4242-abcd-4242", "9999999999999995"})
	check(t, "IsIBAN", IsIBAN,
		[]string{"DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "fr1420041010050500013m02606"},
		[]string{"DE89370400440532013001", "XX89370400440532013000", "DE8937040044053201300", "GB82-WEST"})
	ssn := func(s string) bool { return SSNForm(s) != NotSSN }
	check(t, "SSN", ssn,
		[]string{"123-45-6789", "123456789", "078-05-1121"},
		[]string{"000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "078-05-1120", "12345678", "1234567890", "12a-45-6789"})
	if SSNForm("123-45-6789") != SSNDashed || SSNForm("123456789") != SSNBare {
		t.Error("SSNForm shapes")
	}
	check(t, "IsUKNINO", IsUKNINO, []string{"AB123456C", "ab 12 34 56 c"}, []string{"DA123456C", "GB123456A", "AB123456E", "AB12345C"})
	check(t, "IsCanadianSIN", IsCanadianSIN, []string{"130 692 544", "130-692-544"}, []string{"130 692 545", "046 454 286", "846454286", "12345678"})
	check(t, "IsSpanishDNI", IsSpanishDNI, []string{"12345678Z", "X0000000T"}, []string{"12345678A", "1234567Z", "ABCDEFGHZ"})
	check(t, "IsFrenchNIR", IsFrenchNIR, []string{"184127645108946", "1 84 12 76 451 089 46", "269029934173285"}, []string{"184127645108947", "384127645108946", "18412764510894"})
	check(t, "IsIP", IsIP, []string{"192.168.1.20", "10.0.0.0/8", "2001:db8::1", "::ffff:10.1.2.3"}, []string{"1.2.3", "256.1.1.1", "v1.2.3.4", "hello world", "1.2.3.4.5"})
	check(t, "IsPhone", IsPhone,
		[]string{"+14155552671", "+44 20 7946 0958", "(415) 555-2671", "030 1234 5678", "06-12 34 56 78", "415.555.2671"},
		[]string{"123456789", "4155552671", "1.2.3.4", "12-34", "+12", "555-12a-4567", "2024-01-15"})
	check(t, "IsDate", IsDate, []string{"1984-03-07", "03/07/1984", "07.03.1984"}, []string{"1884-03-07", "1984-13-07", "abc", "20240101"})
	check(t, "IsPasswordHash", IsPasswordHash,
		[]string{"$2b$12$KIXQJ3Ysx3kYh1Tz0mHqEuWZ1xg4nK1k6m2iFJp7c2nZ2Y8a3q9Wm", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "$6$rounds=5000$saltsalt$abcdefghijklmnopqrstuv", "pbkdf2_sha256$600000$salt$hashhashhash=", "$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA"},
		[]string{"$2b$12$short", "hunter2", "5d41402abc4b2a76b9719d911017c592", "$1.99"})
	tok := func(s string) bool { return TokenKind(s) != "" }
	check(t, "TokenKind", tok,
		[]string{"AKIAIOSFODNN7EXAMPLE", "ghp_1234567890abcdefghijABCDEFGHIJ123456", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
			"xoxb-123456789012-abcdefghijkl", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "rk_live_abcdefghijklmnop12345678",
			"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
			"-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----"},
		[]string{"AKIA1234", "ghp_short", "xoxz-1234567890", "sk_live_", "eyJhbGciOiJIUzI1NiJ9", "-----BEGIN CERTIFICATE-----", "pk_live_abcdefghijklmnop12345678"})
	check(t, "IsHighEntropySecret", IsHighEntropySecret,
		[]string{"f3J9kQ2xLp7Vz8mN4bR6tY1wE5uH0cA", "c2VjcmV0LXZhbHVlLWJhc2U2NC1lbmNvZGVk"},
		[]string{"password", "aaaaaaaaaaaaaaaaaaaa", "hello world this is text", "short"})
}

func TestNameClass(t *testing.T) {
	cases := []struct {
		table, col string
		want       Class
	}{
		{"customers", "email", Email}, {"t", "contactEmail", Email}, {"t", "email_verified", ""},
		{"t", "ssn", SSN}, {"t", "social_security_number", SSN},
		{"t", "first_name", Name}, {"t", "vorname", Name}, {"t", "Nachname", Name}, {"t", "nombre", Name}, {"t", "surname", Name},
		{"customers", "name", Name}, {"products", "name", ""}, {"t", "product_name", ""}, {"t", "company_name", ""},
		{"t", "street", Address}, {"t", "strasse", Address}, {"t", "direccion", Address}, {"t", "adresse", Address}, {"t", "zip", Address},
		{"t", "postcode", Address}, {"t", "city", Address}, {"t", "email_address", Email}, {"t", "ip_address", IP}, {"t", "mac_address", ""},
		{"t", "phone", Phone}, {"t", "telefono", Phone}, {"t", "mobile_number", Phone},
		{"t", "date_of_birth", DOB}, {"t", "dob", DOB}, {"t", "geburtsdatum", DOB},
		{"t", "password_hash", Password}, {"t", "passwort", Password}, {"t", "password_changed_at", ""},
		{"t", "api_key", Secret}, {"t", "client_secret", Secret}, {"t", "refresh_token", Secret}, {"t", "idempotency_key", ""}, {"t", "token_count", ""},
		{"t", "card_number", Card}, {"t", "gift_card_number", ""}, {"t", "iban", IBAN}, {"t", "national_id", NationalID}, {"t", "nino", NationalID},
		{"t", "order_number", ""}, {"t", "amount_cents", ""}, {"t", "sku", ""},
		{"users", "display_name", Name}, {"", "display_name", Name}, {"services", "display_name", ""}, {"", "name", ""},
		{"emp", "name", Name}, {"emp", "manager", Name}, {"projects", "manager", ""}, {"projects", "manager_name", Name},
	}
	for _, c := range cases {
		if got := NameClass(c.table, c.col); got != c.want {
			t.Errorf("NameClass(%q, %q) = %q, want %q", c.table, c.col, got, c.want)
		}
	}
}

func TestClassifyColumnLookalikes(t *testing.T) {
	nine := []string{"123456789", "234567891", "345678912", "456789123", "567891234"}
	if c := ClassifyColumn("orders", "order_number", "text", nine); c.Sensitive() {
		t.Errorf("order_number classified %+v", c)
	}
	if c := ClassifyColumn("orders", "ref", "text", nine); c.Sensitive() {
		t.Errorf("bare nine digits without name evidence classified %+v", c)
	}
	if c := ClassifyColumn("people", "ssn", "text", nine); c.Class != SSN {
		t.Errorf("ssn column = %+v", c)
	}
	if c := ClassifyColumn("people", "tax_number", "text", []string{"123-45-6789", "234-56-7890", "345-67-8901"}); c.Class != SSN {
		t.Errorf("dashed SSNs = %+v", c)
	}
	if c := ClassifyColumn("releases", "version", "text", []string{"1.2.3.4", "10.0.0.1", "2.0.1.7"}); c.Sensitive() {
		t.Errorf("version = %+v", c)
	}
	if c := ClassifyColumn("x", "contact", "text", []string{"a@example.com", "b@example.org", "c@example.net"}); c.Class != Email || c.Confidence < MinConfidence {
		t.Errorf("values-only email = %+v", c)
	}
	if c := ClassifyColumn("customers", "birthday", "date", nil); c.Class != DOB {
		t.Errorf("birthday date = %+v", c)
	}
	ibanShaped := []string{"DE89370400440532013000", "GB82WEST12345698765432", "NL91ABNA0417164300"}
	if c := ClassifyColumn("products", "product_code", "text", ibanShaped); c.Sensitive() {
		t.Errorf("IBAN-shaped product codes = %+v", c)
	}
	if c := ClassifyColumn("payments", "payment_reference", "text", ibanShaped); c.Class != IBAN {
		t.Errorf("IBANs in a payment reference column = %+v", c)
	}
	if c := ClassifyColumn("payouts", "account", "text", ibanShaped); c.Class != IBAN {
		t.Errorf("IBANs in an account column = %+v", c)
	}
	networks := []string{"192.168.1.0/24", "10.1.2.3/8", "10:23::f1/64", "192.168.1.226/24", "10.0.0.0/16"}
	if c := ClassifyColumn("inet_tbl", "i", "inet", networks); c.Sensitive() {
		t.Errorf("network addresses = %+v", c)
	}
	if c := ClassifyColumn("inet_tbl", "c", "cidr", []string{"192.168.1.0/24", "10.0.0.0/8"}); c.Sensitive() {
		t.Errorf("cidr column = %+v", c)
	}
	if c := ClassifyColumn("logins", "src", "inet", []string{"203.0.113.7", "198.51.100.23", "2001:db8::5", "203.0.113.9/32"}); c.Class != IP {
		t.Errorf("host addresses = %+v", c)
	}
	if c := ClassifyColumn("devices", "firmware", "text", []string{"1.2.3.4", "10.0.0.1", "2.0.1.7"}); c.Sensitive() {
		t.Errorf("firmware versions = %+v", c)
	}
	if c := ClassifyColumn("t", "api_key", "text", []string{"customer-facing"}); c.Sensitive() {
		t.Errorf("low-entropy api_key = %+v", c)
	}
}

// TestDetectorFalsePositiveRates measures how often random business numbers pass the
// validators that free text relies on: a random 16-digit number passes Luhn one time in ten,
// and the issuer-prefix check must cut that further.
func TestDetectorFalsePositiveRates(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 20000
	digits := func(k int) string {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte('0' + r.IntN(10))
		}
		return string(b)
	}
	cards, ibans, ninos, nirs, dnis := 0, 0, 0, 0, 0
	for i := 0; i < n; i++ {
		if IsCard(digits(16)) {
			cards++
		}
		if IsIBAN("DE" + digits(20)) {
			ibans++
		}
		if IsFrenchNIR(digits(15)) {
			nirs++
		}
		if IsSpanishDNI(digits(8) + string(rune('A'+r.IntN(26)))) {
			dnis++
		}
		if IsUKNINO(string(rune('A'+r.IntN(26))) + string(rune('A'+r.IntN(26))) + digits(6) + string(rune('A'+r.IntN(26)))) {
			ninos++
		}
	}
	rate := func(k int) float64 { return float64(k) / n }
	t.Logf("random look-alikes passing: card %.3f, IBAN %.3f, NIR %.3f, DNI %.3f, NINO %.3f", rate(cards), rate(ibans), rate(nirs), rate(dnis), rate(ninos))
	if rate(cards) > 0.03 || rate(ibans) > 0.02 || rate(nirs) > 0.01 || rate(dnis) > 0.05 {
		t.Errorf("validators too permissive")
	}
}
