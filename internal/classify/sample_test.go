package classify

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
)

// buildSampleSchema returns a realistic schema of business and operations data with no
// personal data in it, the negative set of TestClassifierPrecision: order and invoice
// numbers (nine digits, like SSNs without dashes), SKUs, quantities, prices, timestamps,
// version strings (four-part ones look like IPv4 addresses), service host names, file
// hashes, UUIDs, IBAN-shaped product codes that pass mod-97, Luhn-valid tracking numbers,
// EAN barcodes, and integers named like addresses (city_id, zip, street). Every column is
// labelled none.
func buildSampleSchema(n int) string {
	g := gen{rand.New(rand.NewPCG(2026, 13))}
	hexOf := func(sum []byte) string { return hex.EncodeToString(sum) }
	uuid := func() string {
		return fmt.Sprintf("%08x-%04x-4%03x-%x%03x-%012x", g.r.Uint32(), g.r.IntN(65536), g.r.IntN(4096), 8+g.r.IntN(4), g.r.IntN(4096), g.r.Int64N(1<<48))
	}
	ts := func() string {
		return fmt.Sprintf("2025-%02d-%02d %02d:%02d:%02d+00", 1+g.r.IntN(12), 1+g.r.IntN(28), g.r.IntN(24), g.r.IntN(60), g.r.IntN(60))
	}
	// ibanShaped is a product code with a country prefix, two check digits that pass
	// ISO 7064 mod-97 and the country's IBAN length: an IBAN by construction.
	ibanShaped := func(cc string, length int) string {
		bban := strings.ToUpper(g.chars(4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")) + g.digits(length-8)
		var num strings.Builder
		for _, c := range bban + cc + "00" {
			if c >= 'A' && c <= 'Z' {
				fmt.Fprintf(&num, "%d", c-'A'+10)
			} else {
				num.WriteRune(c)
			}
		}
		v, _ := new(big.Int).SetString(num.String(), 10)
		check := 98 - new(big.Int).Mod(v, big.NewInt(97)).Int64()
		return fmt.Sprintf("%s%02d%s", cc, check, bban)
	}
	luhnWith := func(prefix string, length int) string {
		d := prefix + g.digits(length-len(prefix)-1)
		for c := byte('0'); c <= '9'; c++ {
			if Luhn([]byte(d + string(c))) {
				return d + string(c)
			}
		}
		return d + "0"
	}
	ean13 := func() string {
		d := "40" + g.digits(10)
		sum := 0
		for i := 0; i < 12; i++ {
			w := 1
			if i%2 == 1 {
				w = 3
			}
			sum += int(d[i]-'0') * w
		}
		return d + fmt.Sprint((10-sum%10)%10)
	}
	services := []string{"payments-api", "search", "checkout", "inventory-sync", "auth-gateway", "mailer", "reporting"}
	regions := []string{"eu-west-1", "us-east-2", "ap-southeast-1"}
	var ts_ []*table

	orders := &table{name: "sales_orders", cols: []string{"id bigint", "order_number bigint", "order_no text", "invoice_number text", "invoice_id bigint",
		"po_number text", "sku text", "quantity int", "unit_price numeric(10,2)", "total_amount numeric(12,2)", "currency char(3)", "placed_at timestamptz",
		"shipped_on date", "status text", "tracking_code text", "customer_ref uuid", "channel text", "discount_pct real", "is_gift bool"}}
	for i := 0; i < n; i++ {
		orders.rows = append(orders.rows, []string{fmt.Sprint(i + 1), fmt.Sprint(100000000 + g.r.IntN(899999999)), g.digits(9), g.digits(9),
			fmt.Sprint(200000000 + g.r.IntN(700000000)), "PO-" + g.digits(7), fmt.Sprintf("SKU-%05d-%s", g.r.IntN(99999), g.pick("S", "M", "L", "XL")),
			fmt.Sprint(1 + g.r.IntN(20)), fmt.Sprintf("%d.%02d", g.r.IntN(500), g.r.IntN(100)), fmt.Sprintf("%d.%02d", g.r.IntN(5000), g.r.IntN(100)),
			g.pick("EUR", "USD", "GBP"), ts(), fmt.Sprintf("2025-%02d-%02d", 1+g.r.IntN(12), 1+g.r.IntN(28)), g.pick("placed", "paid", "shipped", "returned"),
			luhnWith("4", 16), uuid(), g.pick("web", "app", "store"), fmt.Sprint(g.r.IntN(30)), g.pick("true", "false")})
	}
	ts_ = append(ts_, orders)

	products := &table{name: "products", cols: []string{"id int", "product_code text", "name text", "description text", "ean text", "gtin text",
		"category text", "weight_kg numeric(8,3)", "length_mm int", "stock_qty int", "reorder_level int", "supplier_code text", "hs_code text",
		"created_at timestamptz", "updated_at timestamptz", "active boolean"}}
	for i := 0; i < n; i++ {
		cc := g.pick("DE", "FR", "GB", "NL")
		products.rows = append(products.rows, []string{fmt.Sprint(i + 1), ibanShaped(cc, ibanLengths[cc]), g.pick("Desk lamp", "Office chair", "Notebook A5", "Kettle 1.7l", "USB-C cable"),
			g.pick("Matte black, LED", "Ergonomic, adjustable", "Recycled paper", ""), ean13(), "0" + ean13(), g.pick("office", "kitchen", "electronics"),
			fmt.Sprintf("%d.%03d", g.r.IntN(20), g.r.IntN(1000)), fmt.Sprint(10 + g.r.IntN(2000)), fmt.Sprint(g.r.IntN(5000)), fmt.Sprint(g.r.IntN(100)),
			ibanShaped("NL", 18), fmt.Sprintf("%04d.%02d", g.r.IntN(9999), g.r.IntN(99)), ts(), ts(), g.pick("t", "f")})
	}
	ts_ = append(ts_, products)

	releases := &table{name: "releases", cols: []string{"id int", "service text", "version text", "firmware text", "build_number int", "git_sha text",
		"artifact_sha256 text", "released_at timestamptz", "service_host text", "hostname text", "fqdn text", "port int", "region text", "replicas smallint", "canary bool", "notes text"}}
	for i := 0; i < n; i++ {
		svc := g.pick(services...)
		sha, digest := sha1.Sum([]byte(g.digits(12))), sha256.Sum256([]byte(g.digits(12)))
		host := fmt.Sprintf("%s-%d.%s.internal.example.net", svc, 1+g.r.IntN(12), g.pick(regions...))
		releases.rows = append(releases.rows, []string{fmt.Sprint(i + 1), svc, fmt.Sprintf("%d.%d.%d", g.r.IntN(4), g.r.IntN(30), g.r.IntN(100)),
			fmt.Sprintf("%d.%d.%d.%d", 1+g.r.IntN(9), g.r.IntN(20), g.r.IntN(10), g.r.IntN(256)), fmt.Sprint(1000 + g.r.IntN(90000)),
			hexOf(sha[:]), hexOf(digest[:]), ts(), host, host, host,
			fmt.Sprint(g.pick("443", "8080", "5432", "9090")), g.pick(regions...), fmt.Sprint(1 + g.r.IntN(9)), g.pick("true", "false"),
			g.pick("hotfix for timeouts", "dependency bump", "feature flag cleanup", "")})
	}
	ts_ = append(ts_, releases)

	files := &table{name: "stored_files", cols: []string{"id uuid", "path text", "md5 text", "sha256 text", "checksum text", "etag text", "size_bytes bigint",
		"mime_type text", "uploaded_at timestamptz", "bucket text", "storage_key text", "retention_days int"}}
	for i := 0; i < n; i++ {
		body := []byte(g.digits(20))
		m, s := md5.Sum(body), sha256.Sum256(body)
		files.rows = append(files.rows, []string{uuid(), fmt.Sprintf("/srv/data/%d/%02d/%s.%s", 2020+g.r.IntN(6), 1+g.r.IntN(12), g.chars(10, hexa), g.pick("pdf", "png", "csv")),
			hexOf(m[:]), hexOf(s[:]), "sha256:" + hexOf(s[:]), `"` + hexOf(m[:]) + `"`, fmt.Sprint(g.r.Int64N(1 << 30)), g.pick("application/pdf", "image/png", "text/csv"), ts(),
			g.pick("invoices-archive", "exports", "thumbnails"), fmt.Sprintf("%s/%s", g.chars(2, hexa), g.chars(30, hexa)), fmt.Sprint(g.pick("30", "365", "3650"))})
	}
	ts_ = append(ts_, files)

	events := &table{name: "telemetry_events", cols: []string{"event_id text", "trace_id text", "span_id text", "occurred_at timestamptz", "duration_ms int",
		"latency_p99 double precision", "source text", "kind text", "payload jsonb", "attempt smallint", "success boolean", "request_path text", "http_status int"}}
	for i := 0; i < n; i++ {
		events.rows = append(events.rows, []string{uuid(), g.chars(32, hexa), g.chars(16, hexa), ts(), fmt.Sprint(g.r.IntN(5000)), fmt.Sprintf("%d.%d", g.r.IntN(900), g.r.IntN(10)),
			g.pick(services...), g.pick("request", "job", "cron"), fmt.Sprintf(`{"sku": "SKU-%05d", "qty": %d, "warehouse": "W%02d"}`, g.r.IntN(99999), 1+g.r.IntN(9), g.r.IntN(40)),
			fmt.Sprint(g.r.IntN(4)), g.pick("true", "false"), "/api/v2/orders/" + g.digits(9), g.pick("200", "201", "404", "503")})
	}
	ts_ = append(ts_, events)

	// Integers and other non-text columns named like addresses, names and contact data.
	locs := &table{name: "warehouse_locations", cols: []string{"id int", "city_id int", "zip int", "street int", "postcode_zone smallint", "address_id bigint",
		"name_id int", "region_code text", "aisle text", "shelf int", "bin_label text", "opened_on date", "capacity_m3 numeric", "phone_ext int", "last_name_change timestamptz"}}
	for i := 0; i < n; i++ {
		locs.rows = append(locs.rows, []string{fmt.Sprint(i + 1), fmt.Sprint(1 + g.r.IntN(400)), fmt.Sprint(10000 + g.r.IntN(89999)), fmt.Sprint(1 + g.r.IntN(300)),
			fmt.Sprint(g.r.IntN(10)), fmt.Sprint(1 + g.r.IntN(100000)), fmt.Sprint(1 + g.r.IntN(1000)), g.pick("N", "S", "E", "W") + g.digits(2),
			g.pick("A", "B", "C") + g.digits(2), fmt.Sprint(1 + g.r.IntN(12)), fmt.Sprintf("%s-%s-%s", g.digits(2), g.digits(2), g.digits(2)),
			fmt.Sprintf("20%02d-%02d-%02d", g.r.IntN(25), 1+g.r.IntN(12), 1+g.r.IntN(28)), fmt.Sprint(100 + g.r.IntN(9000)), fmt.Sprint(100 + g.r.IntN(900)), ts()})
	}
	ts_ = append(ts_, locs)

	ledger := &table{name: "gl_entries", cols: []string{"entry_no bigint", "account_code text", "cost_center text", "debit numeric(14,2)", "credit numeric(14,2)",
		"booking_date date", "period text", "document_number text", "reference text", "batch_id int", "posted boolean", "fx_rate numeric(10,6)"}}
	for i := 0; i < n; i++ {
		ledger.rows = append(ledger.rows, []string{fmt.Sprint(5000000 + i), fmt.Sprint(4000 + g.r.IntN(5000)), "CC-" + g.digits(3),
			fmt.Sprintf("%d.%02d", g.r.IntN(100000), g.r.IntN(100)), fmt.Sprintf("%d.%02d", g.r.IntN(100000), g.r.IntN(100)),
			fmt.Sprintf("2025-%02d-%02d", 1+g.r.IntN(12), 1+g.r.IntN(28)), fmt.Sprintf("2025-%02d", 1+g.r.IntN(12)), g.digits(9), g.digits(12),
			fmt.Sprint(g.r.IntN(1000)), g.pick("true", "false"), fmt.Sprintf("1.%06d", g.r.IntN(999999))})
	}
	ts_ = append(ts_, ledger)

	// Names of things, not people; contact and address words as metadata.
	svcs := &table{name: "services", cols: []string{"id int", "name text", "display_name text", "owner_team text", "contact_method text",
		"address_type text", "email_enabled boolean", "phone_verified_at timestamptz", "on_call_rotation text", "runbook_url text", "created_by text", "tier smallint"}}
	for i := 0; i < n; i++ {
		svc := g.pick(services...)
		svcs.rows = append(svcs.rows, []string{fmt.Sprint(i + 1), fmt.Sprintf("%s-%d", svc, i), strings.ToUpper(svc[:1]) + strings.ReplaceAll(svc[1:], "-", " "),
			g.pick("platform", "payments", "growth"), g.pick("email", "phone", "pager", "chat"), g.pick("billing", "shipping", "registered"),
			g.pick("true", "false"), ts(), g.pick("primary", "secondary"), "https://wiki.example.net/runbooks/" + svc, g.pick("svc-deployer", "terraform", "ci-bot"),
			fmt.Sprint(1 + g.r.IntN(3))})
	}
	ts_ = append(ts_, svcs)

	// Companies: VAT ids and tax numbers, nine-digit DUNS numbers.
	suppliers := &table{name: "suppliers", cols: []string{"id int", "supplier_name text", "vat_id text", "tax_number text", "duns_number text",
		"payment_terms_days int", "country char(2)", "website text"}}
	for i := 0; i < n; i++ {
		suppliers.rows = append(suppliers.rows, []string{fmt.Sprint(i + 1), g.pick("Acme GmbH", "Globex SARL", "Initech Ltd", "Umbrella BV") + " " + g.digits(2),
			"DE" + g.digits(9), g.digits(3) + "/" + g.digits(3) + "/" + g.digits(5), g.digits(9), g.pick("14", "30", "60"), g.pick("DE", "FR", "GB", "NL"),
			"https://www." + g.pick("acme", "globex", "initech") + ".example.com"})
	}
	ts_ = append(ts_, suppliers)

	var b strings.Builder
	for _, t := range ts_ {
		b.WriteString(t.sql())
	}
	b.WriteString("ANALYZE;\n")
	return b.String()
}
