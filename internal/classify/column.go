package classify

import (
	"fmt"
	"strings"
)

// Classification is the verdict on one column: its class (None when not sensitive), how sure
// the classifier is (0–1) and the evidence, in words an operator can check.
type Classification struct {
	Class      Class
	Confidence float64
	Evidence   string
}

// Sensitive reports whether the classification labels the column as sensitive.
func (c Classification) Sensitive() bool { return c.Class != "" && c.Class != None }

// MinConfidence is the confidence from which a classification counts as sensitive.
const MinConfidence = 0.5

// nameTokens splits a column name into lower-case words at underscores, dashes, spaces, dots
// and camelCase boundaries: "customerEmail" → [customer email].
func nameTokens(s string) []string {
	var toks []string
	start := 0
	flush := func(end int) {
		if end > start {
			toks = append(toks, strings.ToLower(s[start:end]))
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '-' || c == ' ' || c == '.':
			flush(i)
			start = i + 1
		case isUpper(c) && i > start && isLower(s[i-1]):
			flush(i)
			start = i
		case isDigit(c) && i > start && !isDigit(s[i-1]):
			flush(i)
			start = i
		}
	}
	flush(len(s))
	return toks
}

func has(toks []string, words ...string) bool {
	for _, t := range toks {
		for _, w := range words {
			if t == w {
				return true
			}
		}
	}
	return false
}

// Name words that turn a sensitive-sounding column into metadata about it ("email_verified",
// "phone_count", "password_changed_at").
var metaWords = []string{"count", "verified", "confirmed", "enabled", "status", "flag", "sent", "at",
	"type", "template", "format", "length", "len", "pref", "preference", "opt", "optin", "bounced",
	"provider", "changed", "updated", "expires", "expiry", "policy", "hint", "required",
	"is", "has", "valid", "validated", "domain", "country", "visible", "public", "kind", "version"}

// Name words of business identifiers whose values may pass a validator by chance (nine-digit
// order numbers, Luhn-valid SKUs, dotted version strings).
var lookalikeWords = []string{"order", "invoice", "amount", "cents", "price", "total", "qty", "quantity",
	"sku", "product", "item", "part", "tracking", "shipment", "parcel", "version", "release", "build",
	"commit", "sha", "checksum", "digest", "barcode", "ean", "upc", "isbn", "gtin", "reference", "ref",
	"batch", "lot", "serial", "revision", "model", "catalog", "code", "balance", "ticket", "booking",
	"confirmation", "transaction", "txn", "sequence", "seq", "firmware", "fw", "ver", "supplier", "vendor", "article"}

// productCodeWords name codes of goods and parties to trade, which may be built like IBANs.
var productCodeWords = []string{"product", "sku", "item", "article", "part", "code", "model", "catalog", "serial", "batch",
	"lot", "supplier", "vendor", "barcode", "ean", "upc", "gtin", "isbn", "order", "invoice", "tracking", "shipment", "parcel"}

// personTables are table-name words under which a bare "name" column holds people's names.
var personTables = []string{"customer", "customers", "user", "users", "person", "persons", "people",
	"employee", "employees", "patient", "patients", "member", "members", "contact", "contacts", "client",
	"clients", "staff", "student", "students", "author", "authors", "account", "accounts", "applicant",
	"applicants", "guest", "guests", "passenger", "passengers", "subscriber", "subscribers", "cliente",
	"clientes", "kunde", "kunden", "personne", "usuario", "usuarios", "utilisateur", "mitarbeiter", "emp", "emps"}

// NameClass returns the class a column's name suggests (and "" when it suggests none). The
// table name disambiguates bare words such as "name".
func NameClass(table, column string) Class {
	toks := nameTokens(column)
	if len(toks) == 0 {
		return ""
	}
	joined := strings.Join(toks, "")
	if has(toks, metaWords...) {
		return ""
	}
	switch {
	case has(toks, "token", "secret") && !has(toks, "count", "type", "expires", "expiry"):
		return Secret
	case has(toks, "password", "passwd", "pwd", "passwort", "contrasena", "contraseña", "passphrase") ||
		strings.Contains(joined, "password") || strings.Contains(joined, "motdepasse"):
		return Password
	case has(toks, "email", "mail", "correo", "courriel", "emailaddress") || strings.Contains(joined, "email"):
		return Email
	case has(toks, "ssn") || strings.Contains(joined, "socialsecurity"):
		return SSN
	case has(toks, "iban") || joined == "bankaccount" || joined == "bankaccountnumber" || joined == "kontonummer":
		return IBAN
	case has(toks, "pan", "cc", "ccnum", "ccnumber", "cardnumber", "creditcard", "kreditkarte", "tarjeta") ||
		(has(toks, "card") && (has(toks, "number", "no", "num", "nr") || has(toks, "credit", "debit"))) ||
		strings.Contains(joined, "creditcard") || strings.Contains(joined, "cardnumber"):
		if has(toks, lookalikeWords...) || has(toks, "gift", "loyalty", "rfid", "sim", "id", "key", "access") {
			return ""
		}
		return Card
	case has(toks, "nino", "sin", "dni", "nie", "nif", "nir", "insee", "tin", "passport", "cpf", "curp", "bsn", "pesel", "steuerid", "personalausweis", "ahv") ||
		strings.Contains(joined, "nationalid") || strings.Contains(joined, "nationalinsurance") ||
		strings.Contains(joined, "socialinsurance") || strings.Contains(joined, "taxid") || strings.Contains(joined, "taxnumber") ||
		strings.Contains(joined, "passportnumber") || strings.Contains(joined, "idnumber"):
		return NationalID
	case has(toks, "ip", "ipaddr", "ipaddress", "ipv4", "ipv6") || joined == "remoteaddr" || joined == "clientaddr" || joined == "inetaddr":
		return IP
	case has(toks, "phone", "telephone", "tel", "mobile", "cell", "cellphone", "fax", "telefono", "teléfono", "telefon", "handy", "portable", "msisdn", "telefonnummer", "movil") ||
		strings.Contains(joined, "phone"):
		return Phone
	case has(toks, "geb", "gebdat") && has(toks, "datum", "dat", "gebdat"), has(toks, "fecha") && has(toks, "nac", "nacim"):
		return DOB
	case has(toks, "dob", "birthday", "birthdate", "geburtsdatum", "geburtstag", "nacimiento", "naissance", "birth") ||
		strings.Contains(joined, "dateofbirth") || strings.Contains(joined, "birthdate"):
		return DOB
	case has(toks, "address", "addr", "adresse", "direccion", "dirección", "indirizzo", "street", "strasse", "straße", "calle", "rue",
		"city", "ciudad", "ville", "stadt", "ort", "zip", "zipcode", "postcode", "plz", "postleitzahl", "postal", "postalcode", "codigopostal", "cp") ||
		strings.Contains(joined, "address") || strings.Contains(joined, "zipcode") || strings.Contains(joined, "postalcode") ||
		strings.Contains(joined, "codepostal") || strings.Contains(joined, "codigopostal"):
		if has(toks, "mac", "wallet", "contract", "memory", "url", "web", "host") {
			return ""
		}
		return Address
	case isPersonName(table, toks, joined):
		return Name
	case has(toks, "secret", "token", "apikey", "credential", "credentials", "bearer") ||
		(has(toks, "key") && has(toks, "api", "access", "private", "secret", "signing", "encryption", "license", "ssh")) ||
		(has(toks, "auth") && has(toks, "code")):
		return Secret
	}
	return ""
}

func isPersonName(table string, toks []string, joined string) bool {
	if has(toks, "firstname", "lastname", "surname", "surnames", "givenname", "familyname", "fullname", "middlename",
		"maidenname", "vorname", "nachname", "nombre", "nombres", "apellido", "apellidos", "prenom", "prénom",
		"forename", "cardholder", "nom") ||
		strings.Contains(joined, "firstname") || strings.Contains(joined, "lastname") || strings.Contains(joined, "fullname") ||
		strings.Contains(joined, "nomdefamille") || strings.Contains(joined, "holdername") {
		return true
	}
	if len(toks) == 1 && has(toks, "manager", "supervisor", "spouse") && has(nameTokens(lastPart(table)), personTables...) {
		// In a table of people these hold another person's name (as ids their type is
		// numeric, which no name fits).
		return true
	}
	if has(toks, "name") {
		if has(toks, "first", "last", "full", "middle", "given", "family", "maiden", "contact", "customer",
			"person", "patient", "employee", "holder", "legal", "billing", "shipping", "recipient", "real", "manager", "supervisor", "spouse") {
			return true
		}
		// A bare "name" names a person in a table of people. So does a "display_name", also
		// when the table is unknown; but services, products and feature flags have display
		// names too.
		person := has(nameTokens(lastPart(table)), personTables...)
		if len(toks) == 2 && has(toks, "display") {
			return table == "" || person
		}
		if len(toks) == 1 {
			return person
		}
	}
	return false
}

func joined(toks []string) string { return strings.Join(toks, "") }

func lastPart(table string) string {
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		return table[i+1:]
	}
	return table
}

// typeFamily groups PostgreSQL type names by what they can hold.
type typeFamily int

const (
	famText typeFamily = iota
	famNumber
	famDate
	famBool
	famInet
	famOther
	// famTime holds times of day and intervals: never a person's data on its own.
	famTime
	// famOpaque holds identifiers and machine values (uuid, oid, pg_lsn, ...) that cannot
	// spell a name, an address or a number people write.
	famOpaque
)

func familyOf(typ string) typeFamily {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(strings.TrimSuffix(t, "[]"), "_")
	switch {
	case t == "" || t == "text" || t == "varchar" || t == "bpchar" || t == "character varying" || t == "character" ||
		t == "citext" || t == "name" || t == "json" || t == "jsonb" || t == "bytea" || strings.HasPrefix(t, "varchar") || strings.HasPrefix(t, "char"):
		return famText
	case t == "int2" || t == "int4" || t == "int8" || t == "smallint" || t == "integer" || t == "bigint" || t == "numeric" ||
		t == "float4" || t == "float8" || t == "real" || t == "double precision" || t == "money" || strings.HasPrefix(t, "numeric(") ||
		t == "decimal" || t == "int" || t == "serial" || t == "bigserial" || t == "smallserial":
		return famNumber
	case t == "date" || strings.HasPrefix(t, "timestamp"):
		return famDate
	case t == "bool" || t == "boolean":
		return famBool
	case t == "inet" || t == "cidr":
		return famInet
	case t == "time" || t == "timetz" || strings.HasPrefix(t, "time ") || strings.HasPrefix(t, "time(") || strings.HasPrefix(t, "interval"):
		return famTime
	case t == "uuid" || t == "oid" || t == "xid" || t == "xid8" || t == "cid" || t == "tid" || t == "pg_lsn" || t == "regclass" ||
		t == "regtype" || t == "regproc" || t == "regprocedure" || t == "regnamespace" || t == "regrole" || t == "macaddr" || t == "macaddr8" ||
		t == "bit" || t == "varbit" || t == "tsvector" || t == "tsquery" || t == "int2vector" || t == "oidvector":
		return famOpaque
	}
	return famOther
}

// nameFits reports whether a column of type family fam can hold values of class, so that
// its name alone may label it so. A name never makes an integer, numeric, boolean, date or
// time column a free-text class (name, address, e-mail, ...): such a column cannot hold
// one, and masking it as one turns ordinary numbers into NULL (issue 13). Numbers people
// store as integers (phone, SSN, card and national id numbers, IPv4 addresses as integers)
// stay possible for number columns; a date column can be a date of birth.
func nameFits(class Class, fam typeFamily) bool {
	switch fam {
	case famText, famOther:
		return true
	case famNumber:
		return class == Phone || class == SSN || class == Card || class == NationalID || class == IP
	case famDate:
		return class == DOB
	case famInet:
		return class == IP
	}
	return false
}

// NameClassOfType is NameClass for a column of PostgreSQL type typ (a pg_type name such as
// "int4" or "text"; "" when unknown, which constrains nothing): a name whose class the
// type cannot hold ("zip" on an integer, "city_id") suggests none.
func NameClassOfType(table, column, typ string) Class {
	nc := NameClass(table, column)
	if nc == "" || nameFits(nc, familyOf(typ)) {
		return nc
	}
	return ""
}

// TypeNameOfOID returns the pg_type name of a built-in type OID as RowDescription carries
// it ("int4" for 23), or "" for a type it does not know (user-defined types, domains), so
// callers holding only a result column's type OID can use NameClassOfType.
func TypeNameOfOID(oid uint32) string {
	return builtinTypeNames[oid]
}

// builtinTypeNames are the fixed OIDs of PostgreSQL's built-in scalar types and their
// arrays (pg_type.dat), limited to the ones whose family matters for classification.
var builtinTypeNames = map[uint32]string{
	16: "bool", 1000: "_bool",
	17: "bytea", 18: "char", 19: "name", 25: "text", 1042: "bpchar", 1043: "varchar", 114: "json", 3802: "jsonb",
	20: "int8", 21: "int2", 23: "int4", 26: "oid", 700: "float4", 701: "float8", 790: "money", 1700: "numeric",
	1016: "_int8", 1005: "_int2", 1007: "_int4", 1028: "_oid", 1021: "_float4", 1022: "_float8", 1231: "_numeric",
	1082: "date", 1114: "timestamp", 1184: "timestamptz", 1083: "time", 1266: "timetz", 1186: "interval",
	1182: "_date", 1115: "_timestamp", 1185: "_timestamptz", 1183: "_time", 1270: "_timetz", 1187: "_interval",
	869: "inet", 650: "cidr", 2950: "uuid", 2951: "_uuid", 3220: "pg_lsn", 28: "xid", 5069: "xid8", 29: "cid", 27: "tid",
	829: "macaddr", 774: "macaddr8", 1560: "bit", 1562: "varbit", 3614: "tsvector", 3615: "tsquery", 2205: "regclass",
	2206: "regtype", 24: "regproc",
}

// isHostAddr reports whether an IP address as PostgreSQL prints it (inet::text omits a
// full-length prefix) names one host rather than a network: "10.1.2.3", "10.1.2.3/32",
// "::1/128", but not "10.1.2.0/24". Only a host address can be a person's.
func isHostAddr(s string) bool {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return true
	}
	bits := s[i+1:]
	if strings.IndexByte(s[:i], ':') >= 0 {
		return bits == "128"
	}
	return bits == "32"
}

// valueStats counts how many sampled values pass each validator.
type valueStats struct {
	n                                                 int
	email, card, iban, ssnDashed, ssnBare, natID, sin int
	ip, phone, pwHash, token, highEntropy, date, e164 int
}

func sampleStats(samples []string) valueStats {
	var st valueStats
	for _, raw := range samples {
		v := strings.TrimSpace(raw)
		if v == "" {
			continue
		}
		st.n++
		if IsEmail(v) {
			st.email++
		}
		if IsCard(v) {
			st.card++
		}
		if IsIBAN(v) {
			st.iban++
		}
		switch SSNForm(v) {
		case SSNDashed:
			st.ssnDashed++
		case SSNBare:
			st.ssnBare++
		}
		if IsNationalID(v) {
			st.natID++
		}
		if IsCanadianSIN(v) {
			st.sin++
		}
		if IsIP(v) && isHostAddr(v) {
			st.ip++
		}
		if IsPhone(v) {
			st.phone++
			if v[0] == '+' {
				st.e164++
			}
		}
		if IsPasswordHash(v) {
			st.pwHash++
		}
		if TokenKind(v) != "" {
			st.token++
		}
		if IsHighEntropySecret(v) {
			st.highEntropy++
		}
		if IsDate(v) {
			st.date++
		}
	}
	return st
}

func (st valueStats) frac(k int) float64 {
	if st.n == 0 {
		return 0
	}
	return float64(k) / float64(st.n)
}

// ClassifyColumn decides the class of table.column of PostgreSQL type typ (a pg_type name
// such as "text", "int8", "date"; "" when unknown) from its name and sampled values. Value
// validators alone decide only for formats that are specific by construction (e-mail, IBAN,
// key and token formats, password hashes) or, for looser ones (card, SSN with dashes, IP,
// phone, national ids), when the name does not mark the column as a business identifier.
// Nine bare digits are an SSN only when the name says so.
func ClassifyColumn(table, column, typ string, samples []string) Classification {
	fam := familyOf(typ)
	if fam == famBool {
		return Classification{Class: None, Evidence: "boolean column"}
	}
	if strings.EqualFold(typ, "cidr") || strings.EqualFold(typ, "_cidr") {
		// A cidr value is a network, never one person's address.
		return Classification{Class: None, Evidence: "network (cidr) column"}
	}
	toks := nameTokens(column)
	lookalike := has(toks, lookalikeWords...)
	nc := NameClass(table, column)
	st := sampleStats(samples)

	valueClass := func(class Class, k int, what string) (Classification, bool) {
		f := st.frac(k)
		if st.n == 0 || f < 0.8 {
			return Classification{}, false
		}
		if nc == class {
			return Classification{class, 0.99, fmt.Sprintf("name %q and %d/%d sampled values are %s", column, k, st.n, what)}, true
		}
		return Classification{class, 0.6 + 0.35*f, fmt.Sprintf("%d/%d sampled values are %s", k, st.n, what)}, true
	}
	// Formats specific enough to decide alone.
	if c, ok := valueClass(APIKey, st.token, "API keys or tokens"); ok {
		return c
	}
	if c, ok := valueClass(Password, st.pwHash, "password hashes"); ok {
		return c
	}
	if fam == famText || fam == famOther {
		if c, ok := valueClass(Email, st.email, "e-mail addresses"); ok {
			return c
		}
		// Product, supplier and article codes are often built like IBANs (country prefix,
		// mod-97 check digits): a product-code name wins over the values there, but a
		// payment reference or transaction column holding IBANs is still one.
		if c, ok := valueClass(IBAN, st.iban, "valid IBANs (mod-97)"); ok && (!has(toks, productCodeWords...) || nc == IBAN) {
			return c
		}
	}
	if !lookalike {
		if c, ok := valueClass(Card, st.card, "Luhn-valid card numbers with issuer prefixes"); ok {
			return c
		}
		if c, ok := valueClass(SSN, st.ssnDashed, "SSNs written ddd-dd-dddd"); ok {
			return c
		}
		if c, ok := valueClass(NationalID, st.natID, "national ids with valid check characters"); ok {
			return c
		}
		if c, ok := valueClass(IP, st.ip, "IP addresses"); ok && nc != Phone {
			return c
		}
		if c, ok := valueClass(Phone, st.phone, "telephone numbers"); ok && (nc == Phone || st.frac(st.e164) >= 0.8) {
			return c
		}
	}

	if nc == "" {
		return Classification{Class: None}
	}
	if !nameFits(nc, fam) {
		return Classification{None, 0.2, fmt.Sprintf("name %q on a %s column", column, typ)}
	}
	// The name suggests a class: check the values do not contradict it and the type can hold it.
	nameOnly := func(conf float64) Classification {
		return Classification{nc, conf, fmt.Sprintf("name %q", column)}
	}
	corroborated := func(k int, what string) Classification {
		return Classification{nc, 0.95, fmt.Sprintf("name %q and %d/%d sampled values are %s", column, k, st.n, what)}
	}
	contradicted := func(what string) Classification {
		return Classification{None, 0.3, fmt.Sprintf("name %q but sampled values are not %s", column, what)}
	}
	switch nc {
	case DOB:
		if fam == famDate {
			return Classification{DOB, 0.95, fmt.Sprintf("name %q on a %s column", column, typ)}
		}
		if st.n > 0 && st.frac(st.date) >= 0.5 {
			return corroborated(st.date, "dates")
		}
		if st.n == 0 && fam == famText {
			return nameOnly(0.6)
		}
		return contradicted("dates")
	case Name, Address:
		if st.n > 0 && (st.frac(st.email) > 0.5 || st.frac(st.token+st.pwHash) > 0.5) {
			return contradicted("names or addresses")
		}
		return nameOnly(0.8)
	case Password:
		if st.pwHash > 0 {
			return corroborated(st.pwHash, "password hashes")
		}
		return nameOnly(0.85)
	case Secret:
		if st.n == 0 {
			return nameOnly(0.6)
		}
		if k := st.token + st.highEntropy; st.frac(k) >= 0.6 {
			return corroborated(k, "high-entropy strings or tokens")
		}
		return contradicted("high-entropy strings")
	case Email:
		if st.n == 0 || st.frac(st.email) >= 0.3 {
			return nameOnly(0.8)
		}
		return contradicted("e-mail addresses")
	case SSN:
		if st.n == 0 {
			return nameOnly(0.8)
		}
		if k := st.ssnDashed + st.ssnBare; st.frac(k) >= 0.5 {
			return corroborated(k, "valid SSNs")
		}
		return contradicted("SSNs")
	case Card:
		if st.n == 0 {
			return nameOnly(0.75)
		}
		if st.frac(st.card) >= 0.5 {
			return corroborated(st.card, "Luhn-valid card numbers")
		}
		return contradicted("card numbers")
	case IBAN:
		if st.n == 0 {
			return nameOnly(0.75)
		}
		if st.frac(st.iban) >= 0.5 {
			return corroborated(st.iban, "valid IBANs")
		}
		return contradicted("IBANs")
	case NationalID:
		if k := st.ssnBare + st.ssnDashed; strings.Contains(joined(toks), "tax") && st.n > 0 && st.frac(k) >= 0.8 {
			// A US taxpayer's tax number is the SSN.
			return Classification{SSN, 0.9, fmt.Sprintf("name %q and %d/%d sampled values are valid SSNs", column, k, st.n)}
		}
		if k := st.natID + st.sin + st.ssnBare + st.ssnDashed; st.n > 0 && st.frac(k) >= 0.5 {
			return corroborated(k, "national ids")
		}
		if st.n > 0 && strings.Contains(joined(toks), "taxnumber") {
			// Companies have tax numbers too (VAT ids): only values that are a person's
			// national id make one.
			return contradicted("national ids")
		}
		return nameOnly(0.7)
	case IP:
		if fam == famInet {
			return Classification{IP, 0.95, fmt.Sprintf("name %q on an %s column", column, typ)}
		}
		if st.n == 0 || st.frac(st.ip) >= 0.5 {
			return nameOnly(0.8)
		}
		return contradicted("IP addresses")
	case Phone:
		if st.n == 0 {
			return nameOnly(0.75)
		}
		if st.frac(st.phone) >= 0.5 {
			return corroborated(st.phone, "telephone numbers")
		}
		// National numbers are often stored as bare digits; the name is the evidence.
		digits := 0
		for _, s := range samples {
			if s = strings.TrimSpace(s); s != "" && allOf(s, isDigit) && len(s) >= 7 && len(s) <= 15 {
				digits++
			}
		}
		if st.frac(digits) >= 0.5 {
			return corroborated(digits, "digit strings of telephone length")
		}
		return contradicted("telephone numbers")
	}
	return nameOnly(0.6)
}
