package pg

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/inspect"
)

// Masking outside DataRow: COPY ... TO STDOUT output, and the free text of notices, errors
// and notifications. DataRow masking lives in relay.go (dataRow), on the hot path.

// copyRefusedRule names the refusal of a COPY whose output columns could not be classified.
const copyRefusedRule = "mask-copy-unclassified"

// fastPathRefusedRule names the refusal of a fast-path FunctionCall in a masked session.
const fastPathRefusedRule = "mask-fastpath"

// refuseMaskedFastPath turns an allowed FunctionCall into a deny when the session's results
// are masked. Its result comes with no row description and no statement text to follow, from
// any function the client names by OID (query_to_xml of any query, a large object's bytes),
// so neither the column map nor lineage can place it, and the value detectors alone would
// let names, phone numbers and dates of birth through: refusing is the only sound answer.
func (r *relay) refuseMaskedFastPath(c *gate.Check) {
	if !c.Allowed() || r.srv.Gate.Masker == nil || c.Decision.MaskProfile == "none" {
		return
	}
	if r.srv.Gate.Masker.ShowsRaw(c.Decision.MaskProfile) {
		return
	}
	c.Decision = gate.Decision{
		Action: gate.Deny, Rule: fastPathRefusedRule,
		Message: "fast-path function calls (the FunctionCall message, e.g. libpq large-object functions) are refused for sessions whose results are masked, because their results cannot be masked; call the function in a SELECT instead",
	}
	if len(c.Statements) > 0 {
		c.Denied = c.Statements[0]
	}
}

// isCopyOut reports whether st is a COPY ... TO STDOUT: it streams rows to the client. Its
// Kind is "COPY" unless the query inside it writes (COPY (DELETE ... RETURNING *) TO
// STDOUT is a "DELETE"), so the text decides then.
func isCopyOut(st *inspect.Statement) bool {
	if st == nil || !st.Export || st.ServerFile || st.Program {
		return false
	}
	return st.Kind == "COPY" || startsWithCopy(st.Text)
}

// startsWithCopy reports whether the first keyword of sql, after blanks and comments, is COPY.
func startsWithCopy(sql string) bool {
	for i := 0; i < len(sql); {
		switch {
		case sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' || sql[i] == '\f':
			i++
		case strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return false
			}
			i += j + 1
		case strings.HasPrefix(sql[i:], "/*"):
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return false
			}
			i += j + 4
		default:
			rest := sql[i:]
			return len(rest) >= 4 && strings.EqualFold(rest[:4], "copy") && (len(rest) == 4 || !isIdentByte(rest[4]))
		}
	}
	return false
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// planCopy asks the gate for a masker for every COPY ... TO STDOUT of an allowed check,
// before the check is forwarded. When one of them cannot be planned (its columns could not
// be classified), the check is turned into a deny: refusing is the only safe answer, since
// its output would otherwise leave unmasked.
func (r *relay) planCopy(ctx context.Context, c *gate.Check) []gate.CopyMasker {
	if r.srv.Gate.Masker == nil {
		return nil
	}
	var plans []gate.CopyMasker
	for _, st := range c.Statements {
		if !isCopyOut(st) {
			continue
		}
		one := *c
		one.Statements = []*inspect.Statement{st}
		cm, err := r.srv.Gate.CopyOutMasker(ctx, r.sess, &one)
		if err != nil {
			// The error may quote the statement (and so its literals): log the redacted
			// text only.
			r.srv.log().Info("pg COPY refused: its output could not be classified for masking",
				"session", r.sess.ID, "statement", st.Redacted)
			c.Decision = gate.Decision{
				Action: gate.Deny, Rule: copyRefusedRule,
				Message: "the output columns of this COPY ... TO STDOUT could not be classified, so it is refused rather than sent unmasked; COPY a table or a query over catalogued tables, or SELECT the data instead",
			}
			c.Denied = st
			return nil
		}
		plans = append(plans, cm)
	}
	return plans
}

// textCopyMasker is the last line of defence for COPY output the client loop did not plan
// for (a COPY the inspector did not recognise as one): the value detectors scrub each row.
type textCopyMasker struct {
	g *gate.Gate
	c *gate.Check
}

// MaskData implements gate.CopyMasker.
func (m textCopyMasker) MaskData(data []byte) ([]byte, int, error) {
	out, n := m.g.MaskText(m.c, string(data))
	if n == 0 {
		return data, 0, nil
	}
	return []byte(out), n, nil
}

// copyOutStart handles a CopyOutResponse: the COPY's output begins, masked by the next
// planned masker of p.
func (r *relay) copyOutStart(p *pending) {
	p.copying, p.copyMask = true, nil
	if p.copyNext < len(p.copyPlans) {
		p.copyMask = p.copyPlans[p.copyNext]
		p.copyNext++
		return
	}
	if r.srv.Gate.Masker != nil && (p.check == nil || p.check.Decision.MaskProfile != "none") {
		p.copyMask = textCopyMasker{g: r.srv.Gate, c: p.check}
	}
}

// copyData forwards one CopyData message of COPY output, masked when its COPY needs it. A
// row the masker cannot read ends the session: forwarding it unmasked is not an option and
// the COPY cannot be failed half way through in a way every client understands.
func (r *relay) copyData(ctx context.Context, p *pending, frame []byte) error {
	if !p.copying || p.copyMask == nil {
		p.out.Bytes += int64(len(frame))
		r.emit(frame)
		return nil
	}
	if fm, ok := p.copyMask.(copyFrameMasker); ok {
		for {
			// The masked message is appended straight to the client's output: one copy.
			dst := r.out.tail(len(frame) + copySlack)
			buf, n, err := fm.MaskCopyData(dst, frame[5:])
			if err != nil {
				return r.copyFailed(ctx, p, err)
			}
			r.relayMasked(p, frame, dst, buf, n)
			// The rows already read are relayed here rather than one by one through the
			// upstream loop, within the loop's bound on output held back for records.
			if r.out.holding() > outHoldMax {
				return nil
			}
			if frame = r.ur.nextBuffered('d'); frame == nil {
				return nil
			}
		}
	}
	data, n, err := p.copyMask.MaskData(frame[5:])
	if err != nil {
		return r.copyFailed(ctx, p, err)
	}
	if n == 0 {
		p.out.Bytes += int64(len(frame))
		r.emit(frame)
		return nil
	}
	p.out.Masked += int64(n)
	buf := append(r.outBuf[:0], 'd', 0, 0, 0, 0)
	binary.BigEndian.PutUint32(buf[1:], uint32(len(data)+4))
	buf = append(buf, data...)
	r.outBuf = buf
	p.out.Bytes += int64(len(buf))
	r.emit(buf)
	return nil
}

// copySlack is how much a masked CopyData message may grow beyond the original (escapes of
// a masked value) for the space copyData asks the client's output for: a guess, not a bound.
const copySlack = 64

// copyFrameMasker is a COPY masker that appends the masked CopyData message, header
// included, to a buffer (mask.CopyMasker, the gate's own): the door's streaming path.
type copyFrameMasker interface {
	// MaskCopyData appends the masked message of a CopyData body to dst and returns how
	// many values it masked (none: dst unchanged, send the original message).
	MaskCopyData(dst, body []byte) ([]byte, int, error)
}

// copyFailed records a COPY whose output could not be masked and returns the error that
// ends the session.
func (r *relay) copyFailed(ctx context.Context, p *pending, err error) error {
	if p.check != nil {
		o := p.out
		o.SQLState, o.Error = "XX000", "COPY output could not be masked"
		if derr := r.srv.Gate.Done(ctx, r.sess, p.check, o); derr != nil {
			r.srv.log().Error("pg ledger record failed", "session", r.sess.ID, "err", derr)
		}
		p.check = nil
	}
	return fmt.Errorf("a row of the COPY output could not be masked, so the session was ended rather than send it unmasked: %w", err)
}

// frameMasker is a row masker that masks a DataRow message as bytes (mask.ResultMasker,
// the gate's own): the door's streaming path, with no decoding of the row into values and
// no re-encoding of the columns it leaves alone.
type frameMasker interface {
	// MaskDataRow appends the masked message of a DataRow body (after type and length) to
	// dst, and returns how many values it masked (none: send the original message).
	MaskDataRow(dst, body []byte) ([]byte, int, error)
}

// relayMasked sends a message a frame masker handled: the masked copy it appended to dst
// (buf, committed to the client's output) when it masked n > 0 values, else the original
// frame as it came, and counts the bytes and values for the statement's record.
func (r *relay) relayMasked(p *pending, frame, dst, buf []byte, n int) {
	if n == 0 {
		p.out.Bytes += int64(len(frame))
		r.emit(frame)
		return
	}
	p.out.Masked += int64(n)
	p.out.Bytes += int64(len(buf) - len(dst))
	r.out.commit(buf)
}

// maskedRow forwards one DataRow masked by fm, and the DataRows after it that are already
// read: they are relayed here rather than one by one through the upstream loop (as
// copyData relays CopyData), within the loop's bound on output held back for records. A
// result under a row limit goes row by row (dataRow counts its rows against the limit).
func (r *relay) maskedRow(p *pending, fm frameMasker, frame []byte) error {
	batch := p.check == nil || p.check.Decision.MaxRows <= 0
	for {
		// The masked message is appended straight to the client's output: one copy.
		dst := r.out.tail(len(frame) + copySlack)
		buf, n, err := fm.MaskDataRow(dst, frame[5:])
		if err != nil {
			return fmt.Errorf("malformed DataRow from upstream: %w", err)
		}
		r.relayMasked(p, frame, dst, buf, n)
		if !batch || r.out.holding() > outHoldMax {
			return nil
		}
		if frame = r.ur.nextBuffered('D'); frame == nil {
			return nil
		}
		p.rows++
		p.resRows++
	}
}

// textCheck is the check whose masking profile applies to free text arriving now: the
// statement being answered, else the latest one seen (nil before any: masked).
func (r *relay) textCheck(p *pending) *gate.Check {
	if p != nil && p.check != nil {
		return p.check
	}
	return r.lastCheck
}

// scrubFields passes the free-text fields of an error or notice through the gate's value
// detectors; a unique violation's Detail, for one, quotes the duplicate key value.
func (r *relay) scrubFields(c *gate.Check, er *pgproto3.ErrorResponse) int {
	total := 0
	for _, f := range []*string{&er.Message, &er.Detail, &er.Hint, &er.Where, &er.InternalQuery} {
		if *f == "" {
			continue
		}
		out, n := r.srv.Gate.MaskText(c, *f)
		if n > 0 {
			*f = out
			total += n
		}
	}
	return total
}

// asyncMessage handles NoticeResponse and NotificationResponse, whose text can carry data (a
// RAISE NOTICE of a column, a pg_notify payload built from a row): they pass through the
// value detectors. ParameterStatus passes as is.
func (r *relay) asyncMessage(frame []byte) error {
	if r.srv.Gate.Masker == nil || frame[0] == 'S' {
		r.emit(frame)
		return nil
	}
	p := r.peek()
	c := r.textCheck(p)
	var msg pgproto3.BackendMessage
	n := 0
	if frame[0] == 'N' {
		var nr pgproto3.NoticeResponse
		if err := nr.Decode(frame[5:]); err != nil {
			return fmt.Errorf("malformed NoticeResponse from upstream: %w", err)
		}
		n = r.scrubFields(c, (*pgproto3.ErrorResponse)(&nr))
		msg = &nr
	} else {
		var nr pgproto3.NotificationResponse
		if err := nr.Decode(frame[5:]); err != nil {
			return fmt.Errorf("malformed NotificationResponse from upstream: %w", err)
		}
		nr.Payload, n = r.srv.Gate.MaskText(c, nr.Payload)
		msg = &nr
	}
	if n == 0 {
		r.emit(frame)
		return nil
	}
	if p != nil && p.check != nil {
		p.out.Masked += int64(n)
	}
	r.emitMsg(msg)
	return nil
}

// redactedValue stands in for a value Gatehouse removed from an error message.
const redactedValue = "[redacted]"

// redactErrorValues removes the values PostgreSQL quotes in data exceptions (class 22:
// `invalid input syntax for type integer: "<value>"`) and integrity violations (class 23:
// `Key (email)=(<value>) already exists`, `Failing row contains (<row>)`) when they may be
// sensitive (sensitive answers, see gate.ErrorClassifier): a cast that fails would otherwise
// show a column's value, including those (names, phone numbers, dates) no value detector can
// find in free text. A value that cannot be sensitive — of a key column the catalog classes
// as ordinary, from a statement that reads no sensitive table — stays, so ordinary errors
// keep their meaning; a column or table name is never a value. It reports how many fields
// it changed.
//
// A quoted value the client wrote itself in its statements (a literal, an option name:
// `unrecognized parameter "fillfactor"`) stays too: it reveals nothing the client did not
// send. written tells.
func redactErrorValues(er *pgproto3.ErrorResponse, sensitive func(table string, columns []string) bool, written func(value string) bool) int {
	if len(er.Code) != 5 || (er.Code[:2] != "22" && er.Code[:2] != "23") {
		return 0
	}
	n := 0
	if er.Code[:2] == "22" && sensitive("", nil) {
		// Data exceptions quote the offending value. (Integrity violations quote names of
		// constraints, columns and tables in their message: those stay.)
		fields := []*string{&er.Message, &er.Detail}
		if er.Code == "22P04" {
			// Bad COPY data: the message quotes a column name (`missing data for column
			// "x"`); the value is in the context.
			fields = fields[1:]
		}
		for _, f := range fields {
			if out := redactQuoted(*f, written); out != *f {
				*f = out
				n++
			}
		}
		if er.Where != "" {
			// The context of a data exception can quote the input (JSON data, line 1: ...).
			er.Where = redactedValue
			n++
		}
	}
	table := ""
	if er.TableName != "" {
		table = er.SchemaName + "." + er.TableName
		if er.SchemaName == "" {
			table = er.TableName
		}
	}
	if strings.Contains(er.Detail, ") is still referenced from table ") {
		// The error names the referencing table; the key is the referenced table's, which
		// the statement changes.
		table = ""
	}
	if cols, ok := keyColumns(er.Detail); ok && sensitive(table, cols) {
		if d := redactKeyValues(er.Detail, written); d != er.Detail {
			er.Detail = d
			n++
		}
	} else if strings.HasPrefix(er.Detail, "Failing row contains (") && sensitive(table, nil) {
		er.Detail = "Failing row contains (" + redactedValue + ")."
		n++
	}
	return n
}

// keyColumns returns the columns of a `Key (a, b)=(...)` detail. A key of expressions
// (`Key (lower(email))=(...)`) names no plain column: then no columns and ok, which means
// every column of the table.
func keyColumns(detail string) ([]string, bool) {
	if !strings.HasPrefix(detail, "Key (") {
		return nil, false
	}
	i := strings.Index(detail, ")=(")
	if i < 0 {
		return nil, false
	}
	var cols []string
	for _, c := range strings.Split(detail[len("Key ("):i], ", ") {
		if c == "" || strings.ContainsAny(c, "() '") {
			return nil, true
		}
		if len(c) >= 2 && c[0] == '"' && c[len(c)-1] == '"' {
			c = strings.ReplaceAll(c[1:len(c)-1], `""`, `"`)
		}
		cols = append(cols, c)
	}
	return cols, true
}

// redactQuoted replaces the text from the first double quote to the last: PostgreSQL quotes
// the offending value there, and the value itself may hold quotes (a JSON document). A
// value the client wrote stays.
func redactQuoted(s string, written func(string) bool) string {
	i := strings.IndexByte(s, '"')
	if i < 0 {
		return s
	}
	j := strings.LastIndexByte(s, '"')
	if j == i {
		return s[:i+1] + redactedValue
	}
	if written(s[i+1 : j]) {
		return s
	}
	return s[:i+1] + redactedValue + s[j:]
}

// redactKeyValues replaces the values of a `Key (cols)=(values)` detail, keeping the column
// names.
func redactKeyValues(s string, written func(string) bool) string {
	i := strings.Index(s, ")=(")
	if i < 0 || !strings.HasPrefix(s, "Key (") {
		return s
	}
	rest := s[i+3:]
	// The values end at the last ")" followed by a space or the end of the detail.
	j := strings.LastIndex(rest, ") ")
	if j < 0 {
		j = strings.LastIndexByte(rest, ')')
	}
	if j < 0 {
		return s[:i+3] + redactedValue + ")"
	}
	if written(rest[:j]) {
		return s // the key the client's statement wrote
	}
	return s[:i+3] + redactedValue + rest[j:]
}

// writtenIn returns whether a value appears in the text of c's statements as the client
// wrote it: as a quoted literal or identifier, or, when it is at least four characters
// long (shorter ones appear by chance), anywhere in it regardless of case (PostgreSQL
// folds unquoted names to lower case).
func writtenIn(c *gate.Check) func(string) bool {
	return func(v string) bool {
		if c == nil || v == "" {
			return false
		}
		for _, st := range c.Statements {
			if st == nil {
				continue
			}
			t := st.Text
			if strings.Contains(t, "'"+strings.ReplaceAll(v, "'", "''")+"'") || strings.Contains(t, `"`+strings.ReplaceAll(v, `"`, `""`)+`"`) {
				return true
			}
			if len(v) >= 4 && strings.Contains(strings.ToLower(t), strings.ToLower(v)) {
				return true
			}
		}
		return false
	}
}
