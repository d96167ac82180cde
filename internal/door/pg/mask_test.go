package pg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
	"github.com/gatehouse/gatehouse/internal/ledger"
	"github.com/gatehouse/gatehouse/internal/mask"
)

// where returns the recorded statement events for which keep holds.
func (r *recorder) where(keep func(*ledger.Event) bool) []*ledger.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*ledger.Event
	for _, ev := range r.events {
		if ev.Type == ledger.EventStatement && len(ev.Statements) > 0 && keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// fullMasker is a masking planner with every optional hook: rows (ssnMasker), COPY output
// and free text. COPY output: SSNs keep their last four digits; a COPY whose text mentions
// "unclassified" cannot be planned, one mentioning "nothing_sensitive" needs no masker.
// Free text: e-mail addresses become "***@***".
type fullMasker struct {
	ssnMasker
	copyPlans atomic.Int64
}

var (
	ssnRE   = regexp.MustCompile(`\d{3}-\d{2}-(\d{4})`)
	emailRE = regexp.MustCompile(`[a-z0-9.]+@[a-z0-9.]+\.[a-z]+`)
)

func (m *fullMasker) PlanCopy(ctx context.Context, s *gate.Session, c *gate.Check) (gate.CopyMasker, error) {
	m.copyPlans.Add(1)
	if len(c.Statements) != 1 {
		return nil, errors.New("want one statement per COPY plan")
	}
	switch text := c.Statements[0].Text; {
	case strings.Contains(text, "unclassified"):
		return nil, errors.New("cannot tell the columns of " + text)
	case strings.Contains(text, "nothing_sensitive"):
		return nil, nil
	case strings.Contains(text, "broken_masker"):
		return copyMaskFunc(func(b []byte) ([]byte, int, error) { return nil, 0, errors.New("bad row") }), nil
	}
	return copyMaskFunc(func(b []byte) ([]byte, int, error) {
		n := len(ssnRE.FindAllIndex(b, -1))
		if n == 0 {
			return b, 0, nil
		}
		return ssnRE.ReplaceAll(b, []byte("***-**-$1")), n, nil
	}), nil
}

func (m *fullMasker) MaskText(_, s string) (string, int) {
	n := len(emailRE.FindAllStringIndex(s, -1))
	if n == 0 {
		return s, 0
	}
	return emailRE.ReplaceAllString(s, "***@***"), n
}

type copyMaskFunc func([]byte) ([]byte, int, error)

func (f copyMaskFunc) MaskData(b []byte) ([]byte, int, error) { return f(b) }

// rawForCarl lets carl see raw values (masking profile "none"), like a compliance group.
func rawForCarl(e *env) {
	e.policy.extra = func(in gate.Input) (gate.Decision, bool) {
		if in.Session.Identity.Subject == "carl" {
			return gate.Decision{Action: gate.Allow, Rule: "raw", MaskProfile: "none"}, true
		}
		return gate.Decision{}, false
	}
}

func maskEnv(t *testing.T) (*env, *fullMasker) {
	m := &fullMasker{}
	e := startEnv(t, func(e *env) {
		e.srv.Gate.Masker = m
		e.srv.Gate.Inspector = inspect.New(100)
	}, rawForCarl)
	return e, m
}

func TestCopyOutMasked(t *testing.T) {
	e, m := maskEnv(t)
	ctx := ctxT(t, 30*time.Second)
	pc := connect(t, e.dsn("alice", "main")).PgConn()
	const q = `copy (select 'ann' as name, '123-45-6789' as ssn from generate_series(1, 3)) to stdout`
	var out bytes.Buffer
	tag, err := pc.CopyTo(ctx, &out, q)
	if err != nil || tag.RowsAffected() != 3 {
		t.Fatalf("copy: %v %v", tag, err)
	}
	if want := strings.Repeat("ann\t***-**-6789\n", 3); out.String() != want {
		t.Fatalf("text COPY output %q, want %q", out.String(), want)
	}
	ev := e.rec.statements("copy (select")
	if len(ev) != 1 || ev[0].ValuesMasked != 3 || ev[0].Rows != 3 {
		t.Fatalf("ledger: %+v", ev)
	}

	// CSV with a header; the COPY's kind is DELETE when its query writes, still planned.
	out.Reset()
	if _, err := pc.CopyTo(ctx, &out, `copy (select '987-65-4321' as ssn) to stdout with (format csv, header)`); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ssn\n***-**-4321\n" {
		t.Fatalf("CSV COPY output %q", out.String())
	}
	if _, err := pc.Exec(ctx, "create temp table w(ssn text); insert into w values ('111-22-3333')").ReadAll(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := pc.CopyTo(ctx, &out, `/* c */ copy (delete from w returning ssn) to stdout`); err != nil {
		t.Fatal(err)
	}
	if out.String() != "***-**-3333\n" {
		t.Fatalf("COPY (DELETE ... RETURNING) output %q", out.String())
	}

	// A COPY that needs no masker passes untouched.
	out.Reset()
	if _, err := pc.CopyTo(ctx, &out, `copy (select 'nothing_sensitive', '123-45-6789') to stdout`); err != nil || out.String() != "nothing_sensitive\t123-45-6789\n" {
		t.Fatalf("unmasked COPY: %q %v", out.String(), err)
	}

	// A COPY whose columns cannot be classified is refused, not sent unmasked; the session
	// goes on.
	out.Reset()
	_, err = pc.CopyTo(ctx, &out, `copy (select 'unclassified', '123-45-6789') to stdout`)
	if pgCode(err) != "42501" || !strings.Contains(pgMessage(err), "could not be classified") || out.Len() != 0 {
		t.Fatalf("unclassifiable COPY: %v (%q)", err, out.String())
	}
	ev = e.rec.where(func(ev *ledger.Event) bool { return ev.Rule == copyRefusedRule })
	if len(ev) != 1 || ev[0].Decision != "deny" || ev[0].Rule != copyRefusedRule {
		t.Fatalf("refused COPY recorded as %+v", ev)
	}
	if _, err := pc.Exec(ctx, "select 1").ReadAll(); err != nil {
		t.Fatalf("session after refused COPY: %v", err)
	}

	// COPY FROM is not COPY output: nothing to plan.
	before := m.copyPlans.Load()
	if _, err := pc.CopyFrom(ctx, strings.NewReader("222-33-4444\n"), "copy w from stdin"); err != nil {
		t.Fatal(err)
	}
	if m.copyPlans.Load() != before {
		t.Fatal("COPY FROM was planned as COPY output")
	}

	// Carl may see raw values: no masker.
	pcCarl := connect(t, e.dsn("carl", "main")).PgConn()
	out.Reset()
	if _, err := pcCarl.CopyTo(ctx, &out, `copy (select '123-45-6789') to stdout`); err != nil || out.String() != "123-45-6789\n" {
		t.Fatalf("raw COPY: %q %v", out.String(), err)
	}
}

// TestCopyOutExtended drives COPY through Parse/Bind/Execute, as some drivers do.
func TestCopyOutExtended(t *testing.T) {
	e, _ := maskEnv(t)
	for _, tc := range []struct{ sql, want string }{
		{`copy (select '123-45-6789' as ssn) to stdout`, "***-**-6789\n"},
		{`copy (select 'unclassified', '123-45-6789') to stdout`, ""},
	} {
		c, fe := rawLogin(t, e, "alice")
		fe.Send(&pgproto3.Parse{Query: tc.sql})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		code := ""
		for done := false; !done; {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("%s: %v", tc.sql, err)
			}
			switch m := msg.(type) {
			case *pgproto3.CopyData:
				got.Write(m.Data)
			case *pgproto3.ErrorResponse:
				code = m.Code
			case *pgproto3.ReadyForQuery:
				done = true
			}
		}
		_ = c.Close()
		if tc.want == "" {
			if code != "42501" || got.Len() != 0 {
				t.Fatalf("%s: want a refusal, got %q %q", tc.sql, code, got.String())
			}
		} else if got.String() != tc.want || code != "" {
			t.Fatalf("%s: got %q (error %q), want %q", tc.sql, got.String(), code, tc.want)
		}
	}
}

// TestCopyOutOffline covers what a live server rarely produces: two COPYs in one query
// string, COPY output nobody planned for, and a row the masker cannot read.
func TestCopyOutOffline(t *testing.T) {
	m := &fullMasker{}
	upstream := func(r *relay, msgs ...pgproto3.BackendMessage) error {
		var b []byte
		for _, msg := range msgs {
			var err error
			if b, err = msg.Encode(b); err != nil {
				t.Fatal(err)
			}
		}
		r.ur = newFrameReader(bytes.NewReader(b), 1<<16)
		for {
			fr, err := r.ur.next()
			if err == io.EOF {
				return r.out.release(context.Background(), true)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := r.fromUpstream(context.Background(), fr); err != nil {
				return err
			}
		}
	}
	copyOut := func(rows ...string) []pgproto3.BackendMessage {
		msgs := []pgproto3.BackendMessage{&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}}}
		for _, row := range rows {
			msgs = append(msgs, &pgproto3.CopyData{Data: []byte(row)})
		}
		return append(msgs, &pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")})
	}
	ctx := context.Background()

	// Two COPYs: the first is masked, the second needs nothing.
	r, out := offlineRelay(bytes.NewReader(nil), m)
	r.srv.Gate.Inspector = inspect.New(10)
	c := r.srv.Gate.Check(ctx, r.sess, "copy (select '1') to stdout; copy (select 'nothing_sensitive') to stdout", gate.ViaQuery)
	p := &pending{request: request{kind: pQuery, check: c, copyPlans: r.planCopy(ctx, c)}}
	if len(p.copyPlans) != 2 || p.copyPlans[0] == nil || p.copyPlans[1] != nil {
		t.Fatalf("plans %v", p.copyPlans)
	}
	r.push(p)
	msgs := append(copyOut("123-45-6789\n"), copyOut("123-45-6789\n")...)
	if err := upstream(r, append(msgs, &pgproto3.ReadyForQuery{TxStatus: 'I'})...); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); strings.Count(s, "***-**-6789") != 1 || strings.Count(s, "123-45-6789") != 1 {
		t.Fatalf("two COPYs: %q", s)
	}

	// COPY output the client loop did not plan for: the value detectors scrub it.
	r, out = offlineRelay(bytes.NewReader(nil), m)
	r.push(&pending{request: request{kind: pQuery, check: &gate.Check{Decision: gate.Decision{Action: gate.Allow}}}})
	if err := upstream(r, append(copyOut("bob@example.com\t1\n"), &pgproto3.ReadyForQuery{TxStatus: 'I'})...); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); strings.Contains(s, "bob@example.com") || !strings.Contains(s, "***@***\t1\n") {
		t.Fatalf("unplanned COPY: %q", s)
	}

	// A row the masker cannot read ends the session rather than pass unmasked.
	r, out = offlineRelay(bytes.NewReader(nil), m)
	r.srv.Gate.Inspector = inspect.New(10)
	c = r.srv.Gate.Check(ctx, r.sess, "copy (select 'broken_masker') to stdout", gate.ViaQuery)
	r.push(&pending{request: request{kind: pQuery, check: c, copyPlans: r.planCopy(ctx, c)}})
	if err := upstream(r, copyOut("123-45-6789\n")...); err == nil || !strings.Contains(err.Error(), "could not be masked") {
		t.Fatalf("broken masker: %v", err)
	}
	if strings.Contains(out.String(), "123-45-6789") {
		t.Fatalf("broken masker leaked: %q", out.String())
	}
}

func TestStartsWithCopy(t *testing.T) {
	for s, want := range map[string]bool{
		"COPY t TO STDOUT": true, "  -- x\n/* y */copy(select 1) to stdout": true, "copyx": false,
		"select 1": false, "/* unterminated": false, "-- only a comment": false, "copy": true,
	} {
		if got := startsWithCopy(s); got != want {
			t.Errorf("startsWithCopy(%q) = %v", s, got)
		}
	}
}

// TestFreeTextScrubbed proves that notices, error fields and notification payloads pass
// through the value detectors, except for an identity that may see raw values.
func TestFreeTextScrubbed(t *testing.T) {
	e, _ := maskEnv(t)
	ctx := ctxT(t, 30*time.Second)
	connectNotices := func(user string) (*pgx.Conn, *[]*pgconn.Notice) {
		var notices []*pgconn.Notice
		cfg, err := pgx.ParseConfig(e.dsn(user, "main"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n) }
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c, &notices
	}
	alice, notices := connectNotices("alice")
	const raise = `do $$ begin raise notice 'contact %', 'ann@example.com' using detail = 'or ann.b@example.org', hint = 'x'; end $$`
	if _, err := alice.Exec(ctx, raise); err != nil {
		t.Fatal(err)
	}
	if len(*notices) != 1 || (*notices)[0].Message != "contact ***@***" || (*notices)[0].Detail != "or ***@***" {
		t.Fatalf("notice: %+v", *notices)
	}
	ev := e.rec.where(func(ev *ledger.Event) bool { return ev.Subject == "alice" && ev.Statements[0].Kind == "DO" })
	if len(ev) != 1 || ev[0].ValuesMasked != 2 {
		t.Fatalf("notice masking recorded as %+v", ev)
	}

	// A unique violation's Detail quotes the duplicate key.
	if _, err := alice.Exec(ctx, "create temp table u(email text unique); insert into u values ('dup@example.com')"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		_, err := alice.Exec(ctx, "insert into u values ('dup@example.com')", mode)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" || strings.Contains(pe.Detail, "dup@") || pe.Detail != "Key (email)=([redacted]) already exists." {
			t.Fatalf("%v: unique violation: %+v", mode, err)
		}
	}
	// A RAISE EXCEPTION message, too.
	_, err := alice.Exec(ctx, `do $$ begin raise exception 'bad row for %', 'eve@example.com'; end $$`)
	if pgMessage(err) != "bad row for ***@***" {
		t.Fatalf("exception: %v", err)
	}

	// Notification payloads built from data.
	if _, err := alice.Exec(ctx, "listen gh_mask"); err != nil {
		t.Fatal(err)
	}
	bob := connect(t, e.dsn("bob", "main"))
	if _, err := bob.Exec(ctx, "select pg_notify('gh_mask', 'from zed@example.com')"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := alice.WaitForNotification(wctx)
	if err != nil || n.Payload != "from ***@***" {
		t.Fatalf("notification: %+v %v", n, err)
	}

	// Carl sees everything as it is.
	carl, carlNotices := connectNotices("carl")
	if _, err := carl.Exec(ctx, raise); err != nil {
		t.Fatal(err)
	}
	if len(*carlNotices) != 1 || (*carlNotices)[0].Message != "contact ann@example.com" {
		t.Fatalf("raw notice: %+v", *carlNotices)
	}
	if _, err := carl.Exec(ctx, "create temp table u(email text unique); insert into u values ('dup@example.com')"); err != nil {
		t.Fatal(err)
	}
	_, err = carl.Exec(ctx, "insert into u values ('dup@example.com')")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(pe.Detail, "dup@example.com") {
		t.Fatalf("raw unique violation: %v", err)
	}
}

func TestRedactErrorValues(t *testing.T) {
	// reads: the statement reads a table with sensitive columns; customers.email is one, an
	// integer key is not.
	reads := func(table string, cols []string) bool {
		return table == "" || table == "public.customers" && (cols == nil || slices.Contains(cols, "email"))
	}
	literal := func(table string, cols []string) bool { return false }
	// namedTable: the table an error names is sensitive, the statement's tables are not.
	namedTable := func(table string, cols []string) bool { return table != "" }
	for _, tc := range []struct {
		sensitive         func(string, []string) bool
		code, msg, detail string
		wantMsg, wantDet  string
		where, wantWhere  string
		table             string
	}{
		{reads, "22P02", `invalid input syntax for type integer: "Maria Garcia"`, "", `invalid input syntax for type integer: "[redacted]"`, "", "", "", ""},
		{reads, "22P02", `invalid input syntax for type integer: "{"name":"Maria","x":"y"}"`, "", `invalid input syntax for type integer: "[redacted]"`, "", "", "", ""},
		{reads, "22P02", `invalid input syntax for type json`, `Token "Maria" is invalid.`, `invalid input syntax for type json`, `Token "[redacted]" is invalid.`, `JSON data, line 1: Maria...`, redactedValue, ""},
		{reads, "22003", `value "4242424242424242" is out of range for type integer`, "", `value "[redacted]" is out of range for type integer`, "", "", "", ""},
		{reads, "23505", `duplicate key value violates unique constraint "u_email_key"`, `Key (email)=(ann@example.com) already exists.`,
			`duplicate key value violates unique constraint "u_email_key"`, `Key (email)=([redacted]) already exists.`, "", "", "public.customers"},
		{reads, "23505", `duplicate key value violates unique constraint "u_lower_key"`, `Key (lower(email))=(ann@example.com) already exists.`,
			`duplicate key value violates unique constraint "u_lower_key"`, `Key (lower(email))=([redacted]) already exists.`, "", "", "public.customers"},
		{reads, "23502", `null value in column "full_name"`, `Failing row contains (41, null, +1 415 555 1000).`, `null value in column "full_name"`, `Failing row contains ([redacted]).`, "", "", "public.customers"},
		{reads, "23503", `insert or update violates foreign key constraint`, `Key (customer_id)=(99) is not present in table "customers".`, `insert or update violates foreign key constraint`, `Key (customer_id)=(99) is not present in table "customers".`, "", "", "public.orders"},
		{namedTable, "23503", `update or delete on table "k" violates foreign key constraint "c_a_fkey" on table "c"`, `Key (a)=(1) is still referenced from table "c".`,
			`update or delete on table "k" violates foreign key constraint "c_a_fkey" on table "c"`, `Key (a)=(1) is still referenced from table "c".`, "", "", "public.c"},
		{reads, "23505", `duplicate key value violates unique constraint "k_pkey"`, `Key (a)=(1) already exists.`, `duplicate key value violates unique constraint "k_pkey"`, `Key (a)=(1) already exists.`, "", "", "public.k"},
		{reads, "23514", `new row for relation "k" violates check constraint "k_a_check"`, `Failing row contains (1, x).`, `new row for relation "k" violates check constraint "k_a_check"`, `Failing row contains (1, x).`, "", "", "public.k"},
		// A column name is never a value.
		{reads, "22P04", `missing data for column "x"`, "", `missing data for column "x"`, "", `COPY g, line 1: "1"`, redactedValue, ""},
		// The client's own literal, or a statement over ordinary tables: the message stays.
		{literal, "22P02", `invalid input syntax for type integer: "abc"`, "", `invalid input syntax for type integer: "abc"`, "", "", "", ""},
		{literal, "22P02", `invalid input syntax for type smallint: "abc"`, "", `invalid input syntax for type smallint: "abc"`, "", `SQL function "f"`, `SQL function "f"`, ""},
		// What the client wrote itself: option names, a literal, a key.
		{reads, "23503", `insert or update violates foreign key constraint`, `Key (email)=(ab@example.com) is not present in table "customers".`, `insert or update violates foreign key constraint`, `Key (email)=(ab@example.com) is not present in table "customers".`, "", "", "public.customers"},
		{reads, "22023", `invalid value for boolean option "security_barrier": 100`, "", `invalid value for boolean option "security_barrier": 100`, "", "", "", ""},
		{reads, "22023", `unrecognized parameter "Fill"`, "", `unrecognized parameter "Fill"`, "", "", "", ""},
		{reads, "22P02", `invalid input syntax for type integer: "ab"`, "", `invalid input syntax for type integer: "ab"`, "", "", "", ""},
		{reads, "22P02", `invalid input syntax for type integer: "a"`, "", `invalid input syntax for type integer: "[redacted]"`, "", "", "", ""},
		// Other classes are not data.
		{reads, "42703", `column "nope" does not exist`, "", `column "nope" does not exist`, "", "", "", ""},
		{reads, "22P02", `unterminated "quote`, "", `unterminated "[redacted]`, "", "", "", ""},
	} {
		schema, table, _ := strings.Cut(tc.table, ".")
		er := &pgproto3.ErrorResponse{Code: tc.code, Message: tc.msg, Detail: tc.detail, Where: tc.where, SchemaName: schema, TableName: table}
		redactErrorValues(er, tc.sensitive, writtenIn(&gate.Check{Statements: []*inspect.Statement{{Text: "CREATE VIEW v WITH (Security_Barrier = 100, \"Fill\") AS SELECT x::int, 'ab'::int, 'ab@example.com' FROM customers"}}}))
		if er.Message != tc.wantMsg || er.Detail != tc.wantDet || er.Where != tc.wantWhere {
			t.Errorf("%s %q / %q: got %q / %q / %q", tc.code, tc.msg, tc.detail, er.Message, er.Detail, er.Where)
		}
	}
}

// observingMasker records what the door shows it, like the mask planner's cursor memory.
type observingMasker struct {
	fullMasker
	seen   []string
	forgot atomic.Int64
}

func (m *observingMasker) Observe(ctx context.Context, s *gate.Session, c *gate.Check) {
	for _, st := range c.Statements {
		m.seen = append(m.seen, st.Text)
	}
}

func (m *observingMasker) Forget(id string) { m.forgot.Add(1) }

func TestMaskerObservesStatements(t *testing.T) {
	m := &observingMasker{}
	e := startEnv(t, func(e *env) { e.srv.Gate.Masker = m })
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.dsn("alice", "main"))
	if _, err := c.Exec(ctx, "select 'declare me'"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "select 1 from forbidden_table"); err == nil {
		t.Fatal("forbidden_table allowed")
	}
	_ = c.Close(ctx)
	eventually(t, 5*time.Second, "the session to be forgotten", func() bool { return m.forgot.Load() == 1 })
	if !slices.Contains(m.seen, "select 'declare me'") || slices.ContainsFunc(m.seen, func(s string) bool { return strings.Contains(s, "forbidden_table") }) {
		t.Fatalf("observed %q: want allowed statements only", m.seen)
	}
}

// streamCopyMasker is the COPY masker of the bench's streamed table (id, email, score, note)
// for the default profile: the e-mail partially masked, the note scanned by the value
// detectors.
func streamCopyMasker(t testing.TB, format string) *mask.CopyMasker {
	t.Helper()
	m, err := mask.NewMasker(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	prof := mask.BuiltinProfiles()[mask.ProfileDefault]
	f := int16(0)
	opts := mask.CopyOptions{Format: format, Delimiter: '\t', Null: `\N`, Quote: '"', Escape: '"'}
	switch format {
	case "csv":
		opts.Delimiter, opts.Null = ',', ""
	case "binary":
		f = 1
	}
	rules := []mask.Rule{
		{Kind: mask.KindOpaque, Format: f, Strat: prof.For},
		{Kind: mask.KindText, Format: f, Class: classify.Email, Strategy: prof.For(classify.Email), Strat: prof.For},
		{Kind: mask.KindOpaque, Format: f, Strat: prof.For},
		{Kind: mask.KindText, Format: f, FreeText: true, Strat: prof.For},
	}
	return mask.NewCopyMasker(m, rules, opts)
}

// choppyReader returns data in reads of random sizes, as a socket may.
type choppyReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *choppyReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+c.rng.IntN(5000))], c.data)
	c.data = c.data[n:]
	return n, nil
}

// payloadOnly hides a masker's MaskCopyData, so the door takes the MaskData path.
type payloadOnly struct{ gate.CopyMasker }

// TestCopyOutFramesAppendedInPlace: the masked CopyData messages the door appends straight
// to the client's output (MaskCopyData) are those MaskData masks, in text, CSV and binary
// format, in order, across flushes of the output buffer and behind a ledger record that
// holds the output back; rows that need no masking pass as they came, and a malformed row
// leaves nothing of itself.
func TestCopyOutFramesAppendedInPlace(t *testing.T) {
	for _, format := range []string{"text", "csv", "binary"} {
		var rows [][]byte
		if format == "binary" {
			// One tuple per message, the file header in front of the first; a NULL e-mail
			// in every fourth row; the trailer.
			for i := range 3000 {
				var row []byte
				if i == 0 {
					row = append([]byte("PGCOPY\n\xff\r\n\x00"), 0, 0, 0, 0, 0, 0, 0, 0)
				}
				row = binary.BigEndian.AppendUint16(row, 4)
				for j, v := range [][]byte{binary.BigEndian.AppendUint32(nil, uint32(i)), fmt.Appendf(nil, "user%d@example.com", i), binary.BigEndian.AppendUint32(nil, uint32(i%1000)), fmt.Appendf(nil, "order %d", i)} {
					if j == 1 && i%4 == 1 {
						row = binary.BigEndian.AppendUint32(row, 0xffffffff)
						continue
					}
					row = binary.BigEndian.AppendUint32(row, uint32(len(v)))
					row = append(row, v...)
				}
				rows = append(rows, row)
			}
			rows = append(rows, []byte{0xff, 0xff})
		}
		for i := range 3000 {
			if format == "binary" {
				break
			}
			row := fmt.Sprintf("%d\tuser%d@example.com\t%d\torder %d\n", i, i, i%1000, i)
			switch i % 4 {
			case 1:
				row = fmt.Sprintf("%d\t\\N\t%d\torder \\\\ %d\\tx\n", i, i, i) // NULL e-mail: nothing masked
			case 2:
				row = fmt.Sprintf("%d\ta\\\\b%d@example.com\t1\tmail x%d@example.org\\n now\n", i, i, i)
			}
			if format == "csv" {
				row = strings.NewReplacer("\t", ",", "\\N", "", "\\\\", `\`, "\\t", "\t", "\\n", "\n").Replace(row)
				if i%4 == 2 || i%4 == 1 {
					f := strings.SplitN(strings.TrimSuffix(row, "\n"), ",", 4)
					row = f[0] + "," + f[1] + "," + f[2] + `,"` + strings.ReplaceAll(f[3], `"`, `""`) + "\"\n"
				}
			}
			rows = append(rows, []byte(row))
		}
		ref := streamCopyMasker(t, format)
		var want []byte
		masked := 0
		for _, row := range rows {
			out, n, err := ref.MaskData(row)
			if err != nil {
				t.Fatalf("%s: reference masking of %q: %v", format, row, err)
			}
			masked += n
			want = append(want, frame('d', out)...)
		}
		if masked < len(rows)*3/4-1 {
			t.Fatalf("%s: only %d values masked in %d rows", format, masked, len(rows))
		}
		for _, fm := range []gate.CopyMasker{streamCopyMasker(t, format), payloadOnly{streamCopyMasker(t, format)}} {
			r, out := offlineRelay(bytes.NewReader(nil), nil)
			p := &pending{request: request{kind: pQuery}, result: result{copying: true, copyMask: fm}}
			r.push(p)
			ack, answer := ledger.NewAck()
			for i, row := range rows {
				if i == 1000 {
					// A record not yet answered holds back everything after it.
					r.out.after(ack)
				}
				if i == 2000 {
					answer(nil)
				}
				if err := r.fromUpstream(context.Background(), frame('d', row)); err != nil {
					t.Fatal(err)
				}
				if i == 1999 && out.Len() > 1000*64 {
					t.Fatalf("%s: %d bytes left before their record was answered", format, out.Len())
				}
			}
			if err := r.out.release(context.Background(), true); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("%s %T: client got %d bytes, want the %d bytes MaskData gives", format, fm, out.Len(), len(want))
			}
			if p.out.Masked != int64(masked) {
				t.Fatalf("%s %T: %d values counted masked, want %d", format, fm, p.out.Masked, masked)
			}
		}
		// The same rows as they come from a socket, in reads of any size: the door relays
		// the rows already read in one go (the frame path) and gives the same output.
		var stream []byte
		for _, row := range rows {
			stream = append(stream, frame('d', row)...)
		}
		for _, fm := range []gate.CopyMasker{streamCopyMasker(t, format), payloadOnly{streamCopyMasker(t, format)}} {
			r, out := offlineRelay(bytes.NewReader(nil), nil)
			r.ur = newFrameReader(&choppyReader{data: stream, rng: rand.New(rand.NewPCG(3, 4))}, 1<<16)
			p := &pending{request: request{kind: pQuery}, result: result{copying: true, copyMask: fm}}
			r.push(p)
			for {
				fr, err := r.ur.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := r.fromUpstream(context.Background(), fr); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.out.release(context.Background(), true); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) || p.out.Masked != int64(masked) {
				t.Fatalf("%s %T from a socket: client got %d bytes (%d masked), want %d (%d)", format, fm, out.Len(), p.out.Masked, len(want), masked)
			}
		}
	}
	// A malformed row ends the session and leaves nothing of itself in the output.
	r, out := offlineRelay(bytes.NewReader(nil), nil)
	r.push(&pending{request: request{kind: pQuery}, result: result{copying: true, copyMask: streamCopyMasker(t, "text")}})
	if err := r.fromUpstream(context.Background(), frame('d', []byte("1\tann@example.com\t1\tbad\\"))); err == nil {
		t.Fatal("malformed row accepted")
	}
	_ = r.out.release(context.Background(), true)
	if out.Len() != 0 {
		t.Fatalf("malformed row: %q sent", out.Bytes())
	}
}

// BenchmarkCopyOutMasked relays the masked COPY output of the bench's streamed table
// through the response side, from upstream frames to the client's output, writing once per
// read as the upstream loop does: frame is the streaming path (the rows already read relayed
// in one loop, MaskCopyData into the output), payload the MaskData path (one row per message
// through the loop, the masked payload, then a message built around it, then copied to the
// output).
func BenchmarkCopyOutMasked(b *testing.B) {
	const n = 1000
	var data []byte
	for i := range n {
		data = append(data, frame('d', fmt.Appendf(nil, "%d\tuser%d@example.com\t%d\torder %d\n", i+1_000_000, i+1_000_000, i%1000, i+1_000_000))...)
	}
	for _, tc := range []struct {
		name string
		cm   func() gate.CopyMasker
	}{
		{"frame", func() gate.CopyMasker { return streamCopyMasker(b, "text") }},
		{"payload", func() gate.CopyMasker { return payloadOnly{streamCopyMasker(b, "text")} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, _ := offlineRelay(bytes.NewReader(nil), nil)
			r.out = newClientOut(io.Discard, r.recordFailed)
			r.ur = newFrameReader(&loopReader{data: data}, 0)
			p := &pending{request: request{kind: pQuery}, result: result{copying: true, copyMask: tc.cm()}}
			r.push(p)
			ctx := context.Background()
			b.SetBytes(int64(len(data) / n))
			b.ReportAllocs()
			start := processCPU()
			b.ResetTimer()
			// An op is a row (every row has one value masked); the door may relay several
			// rows per message it is handed.
			for p.out.Masked < int64(b.N) {
				relayUpstreamMessage(b, ctx, r)
			}
			b.StopTimer()
			// CPU time per row: on a shared, loaded machine wall time swings with the load.
			b.ReportMetric(float64(processCPU()-start)/float64(p.out.Masked), "cpu-ns/op")
		})
	}
}
