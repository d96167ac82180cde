// Package maske2e proves masking end to end: a real Gatehouse (servertest) in front of a
// throwaway PostgreSQL cluster seeded with sensitive values and look-alike business values,
// real clients (pgx in every protocol mode, psql, psycopg) connecting through a loopback
// forwarder that records every byte the proxy sends, and a search of those bytes for every
// seeded raw value. It also holds the streaming benchmark of issue 5.
package maske2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/server/servertest"
	"github.com/gatehouse/gatehouse/internal/testkit"
)

// ctxT is a context bounded by d and by the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// customer is one seeded row of sensitive values.
type customer struct {
	id                                    int
	name, email, phone, ssn, card, iban   string
	dob                                   time.Time
	apiKey, jwt, pwHash, ipAddr, passport string
}

// fixture is the seeded data set.
type fixture struct {
	customers []customer
	orders    [][4]string // order_number, customer_id, amount_cents, product_code
}

const nCustomers = 40

var (
	firstNames = []string{"Maria", "John", "Aisha", "Lukas", "Sofia", "Carlos", "Emma", "Noah", "Wei", "Ana"}
	lastNames  = []string{"Garcia", "Smith", "Okafor", "Mueller", "Dubois", "Rossi", "Kowalski", "Nakamura", "Silva", "Chen"}
)

// prng is a tiny deterministic generator, so every run seeds the same values.
type prng struct{ s uint64 }

func (p *prng) next() uint64 {
	p.s ^= p.s << 13
	p.s ^= p.s >> 7
	p.s ^= p.s << 17
	return p.s
}

func (p *prng) chars(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[p.next()%uint64(len(alphabet))]
	}
	return string(b)
}

func luhnComplete(prefix string) string {
	for c := '0'; c <= '9'; c++ {
		s := prefix + string(c)
		sum, double := 0, false
		for i := len(s) - 1; i >= 0; i-- {
			d := int(s[i] - '0')
			if double {
				d *= 2
				if d > 9 {
					d -= 9
				}
			}
			sum += d
			double = !double
		}
		if sum%10 == 0 {
			return s
		}
	}
	panic("unreachable")
}

// germanIBAN builds a valid DE IBAN (mod-97) from an 18-digit BBAN.
func germanIBAN(bban string) string {
	// Move "DE00" to the end, letters as numbers: D=13, E=14.
	n, _ := new(big.Int).SetString(bban+"131400", 10)
	check := 98 - int(new(big.Int).Mod(n, big.NewInt(97)).Int64())
	return fmt.Sprintf("DE%02d%s", check, bban)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

const (
	alnum   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	bcryptA = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

func newFixture() *fixture {
	r := &prng{s: 0x9e3779b97f4a7c15}
	f := &fixture{}
	dob := time.Date(1961, 3, 7, 0, 0, 0, 0, time.UTC)
	for i := range nCustomers {
		first, last := firstNames[i%len(firstNames)], lastNames[(i*3+i/len(firstNames))%len(lastNames)]
		c := customer{
			id:     i + 1,
			name:   first + " " + last,
			email:  fmt.Sprintf("%s.%s%d@example.com", strings.ToLower(first), strings.ToLower(last), 100+i),
			phone:  fmt.Sprintf("+1 415 555 %04d", 1000+i*37),
			ssn:    fmt.Sprintf("%03d-%02d-%04d", 201+i*7, 11+i, 1000+i*113),
			card:   luhnComplete("4" + fmt.Sprintf("%014d", 31415926535+int64(i)*7919)),
			iban:   germanIBAN(fmt.Sprintf("37040044%010d", 532013000+i*1117)),
			dob:    dob.AddDate(0, 0, i*397),
			apiKey: "sk_live_" + r.chars(24, alnum),
			jwt: b64(`{"alg":"HS256","typ":"JWT"}`) + "." + b64(fmt.Sprintf(`{"sub":"user-%d","iat":1700000000}`, i)) +
				"." + r.chars(43, alnum),
			pwHash:   "$2b$12$" + r.chars(53, bcryptA),
			ipAddr:   fmt.Sprintf("203.0.113.%d", 10+i),
			passport: "",
		}
		if c.dob.Month() == 1 && c.dob.Day() == 1 {
			// A partial date mask keeps the year (→ January 1st): never seed that date.
			c.dob = c.dob.AddDate(0, 0, 1)
		}
		if i == 0 {
			// The values everyone knows from documentation.
			c.ssn, c.card, c.iban = "123-45-6789", "4242424242424242", "DE89370400440532013000"
		}
		f.customers = append(f.customers, c)
	}
	for i := range 3 * nCustomers {
		f.orders = append(f.orders, [4]string{
			strconv.Itoa(812345670 + i*1013), // nine digits, like an SSN without dashes
			strconv.Itoa(i%nCustomers + 1),
			strconv.Itoa(1999 + i*250), // cents
			fmt.Sprintf("SKU-%04d-%c%c", 4242+i, 'A'+byte(i%26), 'A'+byte((i/26)%26)),
		})
	}
	return f
}

// schema is the fixture's DDL; views and a function over it are created with it.
const schema = `
CREATE TABLE customers (
  id            int PRIMARY KEY,
  full_name     text NOT NULL,
  email         text NOT NULL UNIQUE,
  phone         text,
  ssn           text,
  card_number   text,
  iban          text,
  date_of_birth date,
  api_key       text,
  session_jwt   text,
  password_hash text,
  last_login_ip text,
  loyalty_tier  text
);
CREATE TABLE orders (
  order_number bigint PRIMARY KEY,
  customer_id  int REFERENCES customers(id),
  amount_cents bigint NOT NULL,
  product_code text NOT NULL
);
CREATE VIEW customer_contacts AS SELECT id, full_name, email, phone FROM customers;
CREATE VIEW big_spenders AS
  SELECT c.email, sum(o.amount_cents) AS total_cents
  FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.email;
CREATE FUNCTION notice_first_email() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'first customer: %', (SELECT email FROM customers ORDER BY id LIMIT 1);
  RETURN 1;
END $$;
CREATE FUNCTION fail_with_ssn() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'bad record %', (SELECT ssn FROM customers ORDER BY id LIMIT 1)
    USING DETAIL = 'card ' || (SELECT card_number FROM customers ORDER BY id LIMIT 1);
END $$;
`

// seed creates the fixture in database app of pg, directly (not through Gatehouse).
func seed(t testing.TB, pg *testkit.Postgres, f *fixture) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	c, err := pgx.Connect(ctx, pg.DSN("app"))
	if err != nil {
		t.Fatalf("connect upstream: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, schema); err != nil {
		t.Fatalf("create fixture schema: %v", err)
	}
	rows := make([][]any, len(f.customers))
	for i, cu := range f.customers {
		rows[i] = []any{cu.id, cu.name, cu.email, cu.phone, cu.ssn, cu.card, cu.iban, cu.dob, cu.apiKey, cu.jwt, cu.pwHash, cu.ipAddr, []string{"gold", "silver", "bronze"}[i%3]}
	}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"customers"},
		[]string{"id", "full_name", "email", "phone", "ssn", "card_number", "iban", "date_of_birth", "api_key", "session_jwt", "password_hash", "last_login_ip", "loyalty_tier"},
		pgx.CopyFromRows(rows)); err != nil {
		t.Fatalf("seed customers: %v", err)
	}
	orows := make([][]any, len(f.orders))
	for i, o := range f.orders {
		n, _ := strconv.ParseInt(o[0], 10, 64)
		cid, _ := strconv.Atoi(o[1])
		amt, _ := strconv.ParseInt(o[2], 10, 64)
		orows[i] = []any{n, cid, amt, o[3]}
	}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"order_number", "customer_id", "amount_cents", "product_code"}, pgx.CopyFromRows(orows)); err != nil {
		t.Fatalf("seed orders: %v", err)
	}
	// Planner statistics (pg_stats) hold sampled values of every column.
	if _, err := c.Exec(ctx, "ANALYZE customers; ANALYZE orders"); err != nil {
		t.Fatalf("analyze fixture: %v", err)
	}
}

// secret is one seeded sensitive value and the forms it could take on the wire.
type secret struct {
	class string
	forms []string
}

func digitsOnly(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// secrets lists every seeded sensitive value with the forms a leak could take: as stored,
// and digits only for numbers people write with separators.
func (f *fixture) secrets() []secret {
	var out []secret
	for _, c := range f.customers {
		out = append(out,
			secret{"name", []string{c.name}},
			secret{"email", []string{c.email}},
			secret{"phone", []string{c.phone, digitsOnly(c.phone)}},
			secret{"ssn", []string{c.ssn, digitsOnly(c.ssn)}},
			secret{"card", []string{c.card}},
			secret{"iban", []string{c.iban}},
			secret{"dob", []string{c.dob.Format("2006-01-02")}},
			secret{"api_key", []string{c.apiKey}},
			secret{"jwt", []string{c.jwt}},
			secret{"password", []string{c.pwHash}},
		)
	}
	return out
}

// leaks returns the seeded values (class: value) found in captured bytes.
func (f *fixture) leaks(captured []byte) []string {
	var found []string
	seen := map[string]bool{}
	for _, s := range f.secrets() {
		for _, form := range s.forms {
			if form != "" && bytes.Contains(captured, []byte(form)) && !seen[s.class] {
				seen[s.class] = true
				found = append(found, s.class+": "+form)
			}
		}
	}
	return found
}

// tap is a loopback TCP forwarder in front of the proxy that records every byte the proxy
// sends to its clients. Clients connect to it with sslmode=disable (Gatehouse accepts
// cleartext tokens from loopback), so the recording is the plaintext protocol stream.
type tap struct {
	addr string
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (tp *tap) Write(p []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.buf.Write(p)
}

// take returns what was captured since the last take and starts a new recording.
func (tp *tap) take() []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := bytes.Clone(tp.buf.Bytes())
	tp.buf.Reset()
	return out
}

func startTap(t testing.TB, p *servertest.Proxy) *tap {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	target := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			cc, err := l.Accept()
			if err != nil {
				return
			}
			sc, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				_ = cc.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, cc, sc)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(sc, cc)
				_ = sc.Close()
			}()
			go func() {
				defer wg.Done()
				// The recording is written before the client gets the bytes, so whatever a
				// client has read is already in it.
				_, _ = io.Copy(io.MultiWriter(tp, cc), sc)
				_ = cc.Close()
			}()
		}
	}()
	return tp
}

// dsn is a libpq connection string through the tap, in cleartext over loopback.
func (tp *tap) dsn(user, secret string) string {
	host, port, _ := net.SplitHostPort(tp.addr)
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=main sslmode=disable connect_timeout=10", host, port, user, secret)
}

// connect opens a pgx connection through the tap, closed when the test ends.
func connect(t testing.TB, tp *tap, user, secret string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, tp.dsn(user, secret))
	if err != nil {
		t.Fatalf("connect %s through gatehouse: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
