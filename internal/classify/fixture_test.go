package classify

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
)

// fixture is a labelled data set: tables with real-looking sensitive columns next to
// look-alike business columns, generated deterministically so every run scores the same.
type fixture struct {
	sql    string
	labels map[string]Class // "schema.table.column" → true class (absent: none)
}

type gen struct{ r *rand.Rand }

func (g gen) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + g.r.IntN(10))
	}
	return string(b)
}

func (g gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g gen) chars(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.r.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	alnum   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	upperD  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	hexa    = "0123456789abcdef"
	b32     = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	bcryptA = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

var (
	firsts  = []string{"John", "Maria", "Wei", "Aisha", "Lukas", "Sofia", "Carlos", "Emma", "Noah", "Chloé", "Jürgen", "Ana"}
	lasts   = []string{"Smith", "García", "Müller", "Chen", "Okafor", "Dubois", "Rossi", "Kowalski", "Nakamura", "Silva"}
	streets = []string{"Main St", "Rue de Rivoli", "Calle Mayor", "Hauptstraße", "High Street", "Elm Avenue"}
	cities  = []string{"Springfield", "Paris", "Madrid", "Berlin", "London", "Toronto"}
)

func (g gen) card() string {
	prefix := g.pick("4", "51", "52", "55", "37", "6011")
	n := 16
	if prefix == "37" {
		n = 15
	}
	d := prefix + g.digits(n-len(prefix)-1)
	for c := 0; c < 10; c++ {
		if Luhn([]byte(d + string(rune('0'+c)))) {
			d += string(rune('0' + c))
			break
		}
	}
	if g.r.IntN(2) == 0 && n == 16 {
		return d[0:4] + " " + d[4:8] + " " + d[8:12] + " " + d[12:16]
	}
	return d
}

func (g gen) iban() string {
	bban := g.digits(18)
	// Check digits: 98 - (bban + "DE00" as digits) mod 97; D=13, E=14.
	num := bban + "131400"
	rem := 0
	for _, c := range num {
		rem = (rem*10 + int(c-'0')) % 97
	}
	return fmt.Sprintf("DE%02d%s", 98-rem, bban)
}

func (g gen) ssn() string {
	for {
		s := fmt.Sprintf("%03d-%02d-%04d", 1+g.r.IntN(899), 1+g.r.IntN(99), 1+g.r.IntN(9999))
		if SSNForm(s) == SSNDashed {
			return s
		}
	}
}

func (g gen) nino() string {
	return g.pick("AB", "CE", "JG", "PR", "TW") + g.digits(6) + g.pick("A", "B", "C", "D")
}

func (g gen) dni() string {
	n := g.r.IntN(100000000)
	return fmt.Sprintf("%08d%c", n, "TRWAGMYFPDXBNJZSQVHLCKE"[n%23])
}

func (g gen) nir() string {
	base := fmt.Sprintf("%d%02d%02d%02d%03d%03d", 1+g.r.IntN(2), g.r.IntN(100), 1+g.r.IntN(12), 1+g.r.IntN(95), 1+g.r.IntN(999), 1+g.r.IntN(999))
	var n uint64
	for _, c := range base {
		n = n*10 + uint64(c-'0')
	}
	return fmt.Sprintf("%s%02d", base, 97-n%97)
}

func (g gen) phone() string {
	switch g.r.IntN(4) {
	case 0:
		return "+1" + g.digits(10)
	case 1:
		return fmt.Sprintf("(%s) %s-%s", g.digits(3), g.digits(3), g.digits(4))
	case 2:
		return "+44 20 " + g.digits(4) + " " + g.digits(4)
	default:
		return "030 " + g.digits(4) + " " + g.digits(4)
	}
}

func (g gen) date() string {
	return fmt.Sprintf("%04d-%02d-%02d", 1940+g.r.IntN(65), 1+g.r.IntN(12), 1+g.r.IntN(28))
}

func (g gen) jwt() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(fmt.Sprintf(`{"sub":"%s","iat":%d}`, g.digits(8), 1700000000+g.r.IntN(1e7)))) + "." + g.chars(43, alnum)
}

func (g gen) email(first, last string) string {
	return strings.ToLower(strings.NewReplacer("é", "e", "ü", "u", "í", "i").Replace(first+"."+last)) + g.digits(2) + "@" + g.pick("example.com", "mail.example.org", "corp.example.net")
}

// table builds CREATE TABLE and INSERT statements for one fixture table.
type table struct {
	name string
	cols []string // "name type"
	rows [][]string
}

func lit(v string) string {
	if v == "\x00NULL" {
		return "NULL"
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

func (t *table) sql() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (%s);\n", t.name, strings.Join(t.cols, ", "))
	if len(t.rows) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "INSERT INTO %s VALUES\n", t.name)
	for i, r := range t.rows {
		vals := make([]string, len(r))
		for j, v := range r {
			vals[j] = lit(v)
		}
		sep := ",\n"
		if i == len(t.rows)-1 {
			sep = ";\n"
		}
		fmt.Fprintf(&b, "(%s)%s", strings.Join(vals, ", "), sep)
	}
	return b.String()
}

// buildFixture returns the labelled fixture with n rows per table.
func buildFixture(n int) fixture {
	g := gen{rand.New(rand.NewPCG(42, 7))}
	labels := map[string]Class{}
	var ts []*table
	add := func(t *table, lab map[string]Class) {
		ts = append(ts, t)
		for c, cl := range lab {
			name := t.name
			if !strings.Contains(name, ".") {
				name = "public." + name
			}
			labels[name+"."+c] = cl
		}
	}

	customers := &table{name: "customers", cols: []string{"id int primary key", "first_name text", "last_name text", "email text", "phone text",
		"date_of_birth date", "ssn varchar(11)", "street text", "city text", "postcode text", "notes text", "status text", "created_at timestamptz"}}
	for i := 0; i < n; i++ {
		f, l := g.pick(firsts...), g.pick(lasts...)
		customers.rows = append(customers.rows, []string{fmt.Sprint(i + 1), f, l, g.email(f, l), g.phone(), g.date(), g.ssn(),
			fmt.Sprintf("%d %s", 1+g.r.IntN(300), g.pick(streets...)), g.pick(cities...), g.digits(5),
			g.pick("prefers morning delivery", "VIP", "called twice about order", ""), g.pick("active", "closed"), "2024-01-01 10:00:00+00"})
	}
	add(customers, map[string]Class{"first_name": Name, "last_name": Name, "email": Email, "phone": Phone, "date_of_birth": DOB, "ssn": SSN,
		"street": Address, "city": Address, "postcode": Address})

	orders := &table{name: "orders", cols: []string{"id int", "order_number text", "amount_cents bigint", "product_code text", "tracking_number text",
		"sku text", "invoice_ref text", "customer_id int"}}
	for i := 0; i < n; i++ {
		orders.rows = append(orders.rows, []string{fmt.Sprint(i + 1), g.digits(9), fmt.Sprint(100 + g.r.IntN(900000000)),
			fmt.Sprintf("%s-%s-%s", g.digits(3), g.digits(2), g.digits(4)), g.digits(16), "SKU-" + g.chars(6, upperD), g.digits(9), fmt.Sprint(1 + g.r.IntN(n))})
	}
	add(orders, nil)

	payments := &table{name: "billing.payments", cols: []string{"id int", "card_number text", "iban text", "cardholder text", "expiry text", "amount numeric(10,2)", "reference text"}}
	for i := 0; i < n; i++ {
		payments.rows = append(payments.rows, []string{fmt.Sprint(i + 1), g.card(), g.iban(), g.pick(firsts...) + " " + g.pick(lasts...),
			fmt.Sprintf("%02d/%02d", 1+g.r.IntN(12), 25+g.r.IntN(6)), fmt.Sprintf("%d.%02d", g.r.IntN(1000), g.r.IntN(100)), g.digits(12)})
	}
	add(payments, map[string]Class{"card_number": Card, "iban": IBAN, "cardholder": Name})

	accounts := &table{name: "accounts", cols: []string{"id int", "username text", "password_hash text", "api_token text", "last_login_ip text", "mfa_secret text", "plan text"}}
	for i := 0; i < n; i++ {
		var pw string
		switch g.r.IntN(3) {
		case 0:
			pw = "$2b$12$" + g.chars(53, bcryptA)
		case 1:
			pw = "$argon2id$v=19$m=65536,t=3,p=4$" + g.chars(22, alnum) + "$" + g.chars(43, alnum)
		default:
			pw = "$6$rounds=5000$" + g.chars(16, alnum) + "$" + g.chars(86, alnum)
		}
		ip := fmt.Sprintf("%d.%d.%d.%d", 1+g.r.IntN(223), g.r.IntN(256), g.r.IntN(256), 1+g.r.IntN(254))
		if i%5 == 0 {
			ip = fmt.Sprintf("2001:db8:%x::%x", g.r.IntN(65535), 1+g.r.IntN(65535))
		}
		accounts.rows = append(accounts.rows, []string{fmt.Sprint(i + 1), "user" + g.digits(4), pw, "ghp_" + g.chars(36, alnum), ip, g.chars(32, b32), g.pick("free", "pro", "team")})
	}
	add(accounts, map[string]Class{"password_hash": Password, "api_token": APIKey, "last_login_ip": IP, "mfa_secret": Secret})

	deploys := &table{name: "deployments", cols: []string{"id int", "commit text", "version text", "checksum text", "build_number text", "release_name text", "node_ip_count int"}}
	for i := 0; i < n; i++ {
		deploys.rows = append(deploys.rows, []string{fmt.Sprint(i + 1), g.chars(40, hexa), fmt.Sprintf("%d.%d.%d.%d", g.r.IntN(5), g.r.IntN(20), g.r.IntN(50), g.r.IntN(999)),
			g.chars(64, hexa), g.digits(9), g.pick("falcon", "heron", "osprey"), fmt.Sprint(g.r.IntN(10))})
	}
	add(deploys, nil)

	intl := &table{name: "hr.mitarbeiter", cols: []string{"id int", "vorname text", "nachname text", "strasse text", "plz text", "geburtsdatum date",
		"nombre text", "direccion text", "dni text", "nino text", "nir text", "abteilung text"}}
	for i := 0; i < n; i++ {
		intl.rows = append(intl.rows, []string{fmt.Sprint(i + 1), g.pick(firsts...), g.pick(lasts...), g.pick(streets...) + " " + fmt.Sprint(1+g.r.IntN(99)), g.digits(5), g.date(),
			g.pick(firsts...), "Calle " + g.pick(lasts...) + " " + fmt.Sprint(1+g.r.IntN(99)), g.dni(), g.nino(), g.nir(), g.pick("Vertrieb", "IT", "Finanzen")})
	}
	add(intl, map[string]Class{"vorname": Name, "nachname": Name, "strasse": Address, "plz": Address, "geburtsdatum": DOB, "nombre": Name, "direccion": Address,
		"dni": NationalID, "nino": NationalID, "nir": NationalID})

	integ := &table{name: "integrations", cols: []string{"id int", "aws_key text", "slack_token text", "stripe_key text", "session text", "signing_pem text",
		"webhook_secret text", "description text", "idempotency_key uuid", "external_ref text"}}
	for i := 0; i < n; i++ {
		integ.rows = append(integ.rows, []string{fmt.Sprint(i + 1), "AKIA" + g.chars(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), "xoxb-" + g.digits(12) + "-" + g.digits(12) + "-" + g.chars(24, alnum),
			"sk_live_" + g.chars(24, alnum), g.jwt(), "-----BEGIN PRIVATE KEY-----\n" + g.chars(64, alnum) + "\n-----END PRIVATE KEY-----",
			g.chars(40, alnum), g.pick("CRM sync", "billing webhook", "nightly export"), fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", g.r.Uint32(), g.r.IntN(65536), g.r.IntN(4096), g.r.IntN(4096), g.r.Int64N(1<<48)),
			strings.ToUpper(g.chars(12, hexa))})
	}
	add(integ, map[string]Class{"aws_key": APIKey, "slack_token": APIKey, "stripe_key": APIKey, "session": APIKey, "signing_pem": APIKey, "webhook_secret": Secret})

	products := &table{name: "products", cols: []string{"id int", "name text", "ean text", "identifier text", "price_cents int", "weight_grams int", "color text"}}
	for i := 0; i < n; i++ {
		products.rows = append(products.rows, []string{fmt.Sprint(i + 1), g.pick("Desk lamp", "Chair", "Notebook", "Kettle"), "40" + g.digits(11), g.digits(16),
			fmt.Sprint(g.r.IntN(100000)), fmt.Sprint(g.r.IntN(5000)), g.pick("red", "blue")})
	}
	add(products, nil)

	logs := &table{name: "access_log", cols: []string{"id int", "client_ip inet", "user_agent text", "path text", "status_code int", "contact text"}}
	for i := 0; i < n; i++ {
		f, l := g.pick(firsts...), g.pick(lasts...)
		logs.rows = append(logs.rows, []string{fmt.Sprint(i + 1), fmt.Sprintf("10.%d.%d.%d", g.r.IntN(256), g.r.IntN(256), 1+g.r.IntN(254)), "Mozilla/5.0 (X11; Linux x86_64)",
			"/api/v1/items/" + g.digits(9), g.pick("200", "404"), g.email(f, l)})
	}
	add(logs, map[string]Class{"client_ip": IP, "contact": Email})

	// Harder cases: abbreviations, bare digits, mixed formats, misleading names, free text.
	hard := &table{name: "kunden", cols: []string{"id int", "geb_datum date", "e_mail_addr text", "mobile text", "display_name text", "pwd_reset_token text",
		"tax_number text", "birth_year int", "email_template text", "bemerkung text", "gift_code text", "fax text", "work_email varchar(80)"}}
	for i := 0; i < n; i++ {
		f, l := g.pick(firsts...), g.pick(lasts...)
		mobile := g.digits(10)
		if i%2 == 0 {
			mobile = g.phone()
		}
		note := g.pick("Rückruf erbeten", "Lieferung an Nachbarn", "")
		if i%7 == 0 {
			note = "Kontakt: " + g.email(f, l)
		}
		hard.rows = append(hard.rows, []string{fmt.Sprint(i + 1), g.date(), g.email(f, l), mobile, f + " " + l[:1] + ".", g.chars(32, hexa),
			strings.ReplaceAll(g.ssn(), "-", ""), fmt.Sprint(1940 + g.r.IntN(60)), "Hallo {{name}}, willkommen!", note, g.card(), g.phone(), g.email(l, f)})
	}
	add(hard, map[string]Class{"geb_datum": DOB, "e_mail_addr": Email, "mobile": Phone, "display_name": Name, "pwd_reset_token": Secret,
		"tax_number": SSN, "fax": Phone, "work_email": Email})

	var b strings.Builder
	b.WriteString("CREATE SCHEMA billing; CREATE SCHEMA hr;\n")
	for _, t := range ts {
		b.WriteString(t.sql())
	}
	b.WriteString("CREATE VIEW customer_contacts AS SELECT id, lower(email) AS contact_address, first_name || ' ' || last_name AS who, status FROM customers;\n")
	labels["public.customer_contacts.contact_address"] = Email
	labels["public.customer_contacts.who"] = Name
	return fixture{sql: b.String(), labels: labels}
}
