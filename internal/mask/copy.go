package mask

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
	"github.com/gatehouse/gatehouse/internal/lineage"
)

// CopyOptions are the output options of a COPY ... TO STDOUT statement.
type CopyOptions struct {
	Format    string // "text", "csv" or "binary"
	Delimiter byte
	Null      string
	Quote     byte
	Escape    byte
	Header    bool
}

// ParseCopyOptions reads the options of a COPY statement (both the WITH (...) and the old
// CSV HEADER spellings), with PostgreSQL's defaults.
func ParseCopyOptions(sql string) (CopyOptions, error) {
	o := CopyOptions{Format: "text"}
	tree, err := pg.Parse(sql)
	if err != nil {
		return o, fmt.Errorf("parse COPY statement: %w", err)
	}
	if len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetCopyStmt() == nil {
		return o, errors.New("parse COPY statement: not a single COPY statement")
	}
	cs := tree.Stmts[0].Stmt.GetCopyStmt()
	var delim, quote, escape, null *string
	for _, n := range cs.Options {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		sval := ""
		if s := d.Arg.GetString_(); s != nil {
			sval = s.Sval
		}
		switch strings.ToLower(d.Defname) {
		case "format":
			o.Format = strings.ToLower(sval)
		case "delimiter":
			delim = &sval
		case "null":
			null = &sval
		case "quote":
			quote = &sval
		case "escape":
			escape = &sval
		case "header":
			o.Header = d.Arg == nil || (d.Arg.GetBoolean() != nil && d.Arg.GetBoolean().Boolval) ||
				(d.Arg.GetInteger() != nil && d.Arg.GetInteger().Ival != 0) ||
				strings.EqualFold(sval, "true") || strings.EqualFold(sval, "on") || strings.EqualFold(sval, "match")
		}
	}
	single := func(s *string, def byte) (byte, error) {
		if s == nil {
			return def, nil
		}
		if len(*s) != 1 {
			return 0, fmt.Errorf("COPY option must be a single one-byte character, got %q", *s)
		}
		return (*s)[0], nil
	}
	csv := o.Format == "csv"
	defDelim := byte('\t')
	if csv {
		defDelim = ','
	}
	if o.Delimiter, err = single(delim, defDelim); err != nil {
		return o, err
	}
	if o.Quote, err = single(quote, '"'); err != nil {
		return o, err
	}
	if o.Escape, err = single(escape, o.Quote); err != nil {
		return o, err
	}
	switch {
	case null != nil:
		o.Null = *null
	case csv:
		o.Null = ""
	default:
		o.Null = `\N`
	}
	return o, nil
}

// CopyMasker masks the rows of one COPY ... TO STDOUT, one CopyData message (one row) at a
// time, honouring the format's escaping so the output stays loadable with COPY FROM. Only
// the fields whose rule masks anything are decoded; every other field is copied as the
// bytes PostgreSQL sent, and a row is rebuilt (in the caller's buffer, see MaskCopyData)
// only when a value in it changed: the door appends the masked message straight into what
// it sends the client, so a row is copied once.
type CopyMasker struct {
	m     *Masker
	rules []Rule
	// busy[i] reports whether rules[i] can change a value; the fields of the other rules
	// are skipped unread. Computed once (see prepare): a rule's fields are looked up per
	// row, and the predicate compares strings.
	busy     []bool
	prepared bool
	// fast[i] is the fast path of rules[i] (uncertainFast: of uncertain), see fastOf.
	fast          []fastPath
	uncertainFast fastPath
	// star is the index of the rule that stands for however many columns a `*` of unknown
	// width expands into (the rules after it apply to the last columns), -1 when every
	// column has its own rule; columns beyond the rules get uncertain.
	star      int
	uncertain Rule
	opts      CopyOptions
	header    bool // the next text/CSV line is the header
	started   bool // binary: the signature has been seen
	// out is the masked row MaskData returns, dec a field's decoded value and val its
	// masked value: reused from row to row.
	out, dec, val []byte
}

// NewCopyMasker returns a masker for COPY output with one rule per column. Rules are for text
// representations (Format 0) in text and CSV, binary values in binary format.
func NewCopyMasker(m *Masker, rules []Rule, opts CopyOptions) *CopyMasker {
	format := int16(0)
	if opts.Format == "binary" {
		format = 1
	}
	return &CopyMasker{m: m, rules: rules, star: -1, uncertain: uncertainRule(format), opts: opts, header: opts.Header}
}

// prepare computes busy for the current rules (once; rules are not changed after the first
// row).
func (cm *CopyMasker) prepare() {
	cm.prepared = true
	cm.busy = make([]bool, len(cm.rules))
	cm.fast = make([]fastPath, len(cm.rules))
	for i := range cm.rules {
		cm.busy[i] = !cm.rules[i].inert()
		cm.fast[i] = fastOf(&cm.rules[i])
	}
	cm.uncertainFast = fastOf(&cm.uncertain)
	if cm.val == nil {
		// Non-nil, so an empty masked value is not taken for NULL.
		cm.val = make([]byte, 0, 64)
	}
}

// ruleIndex returns the index in rules of the rule of column i of a row of n columns (n
// matters only with a star), or -1 for uncertain.
func (cm *CopyMasker) ruleIndex(i, n int) int {
	k := len(cm.rules)
	switch {
	case cm.star < 0 && i < k:
		return i
	case cm.star < 0:
		return -1
	case i < cm.star:
		return i
	case i >= n-(k-cm.star-1) && i-(n-k) > cm.star:
		return i - (n - k)
	}
	return cm.star
}

// rule returns the rule of column i of a row of n columns (n matters only with a star).
func (cm *CopyMasker) rule(i, n int) *Rule {
	if k := cm.ruleIndex(i, n); k >= 0 {
		return &cm.rules[k]
	}
	return &cm.uncertain
}

// inert reports whether a rule leaves every value as it is, so its fields need not be read.
func (r *Rule) inert() bool {
	return !r.sensitive() && !r.FreeText && len(r.Keys) == 0
}

// MaskData masks one CopyData payload and returns the payload to send and how many values
// were masked. The payload returned is data itself when nothing was masked, else a buffer
// of the masker's that the next call overwrites. A malformed row is an error: the door must
// then fail the COPY rather than forward it.
func (cm *CopyMasker) MaskData(data []byte) ([]byte, int, error) {
	out, n, err := cm.AppendData(cm.out[:0], data)
	if err != nil {
		return nil, 0, err
	}
	if n == 0 {
		return data, 0, nil
	}
	cm.out = out
	return out, n, nil
}

// MaskCopyData masks one CopyData message given its body (the payload, after type and
// length) and appends the whole masked message, header included, to dst: the door's
// streaming path, which appends straight into the client's output. It returns how many
// values it masked; with none (or an error) dst is returned unchanged and the original
// message is the one to send. A malformed row is an error, as for MaskData.
func (cm *CopyMasker) MaskCopyData(dst, body []byte) ([]byte, int, error) {
	base := len(dst)
	dst, n, err := cm.AppendData(append(dst, 'd', 0, 0, 0, 0), body)
	if err != nil || n == 0 {
		return dst[:base], 0, err
	}
	binary.BigEndian.PutUint32(dst[base+1:], uint32(len(dst)-base-1))
	return dst, n, nil
}

// AppendData masks one CopyData payload and appends the masked payload to dst. It returns
// how many values it masked; with none (or an error) dst is returned unchanged (its length;
// bytes past it may have been written) and data is the payload to send.
func (cm *CopyMasker) AppendData(dst, data []byte) ([]byte, int, error) {
	if !cm.prepared {
		cm.prepare()
	}
	if cm.opts.Format == "binary" {
		return cm.appendBinary(dst, data)
	}
	if cm.header {
		cm.header = false
		return dst, 0, nil
	}
	if len(data) == 2 && data[0] == '\\' && data[1] == '.' || len(data) == 3 && string(data) == "\\.\n" {
		return dst, 0, nil
	}
	csv := cm.opts.Format == "csv"
	delim := cm.opts.Delimiter
	line := trimEOL(data)
	// A line without a backslash (text) or a quote (CSV), which is most, needs no decoding:
	// its fields are what lies between the delimiters.
	special := byte('\\')
	if csv {
		special = cm.opts.Quote
	}
	var plain bool
	if cm.star < 0 {
		out, n, ok := cm.appendPlain(dst, data, line, csv)
		if ok {
			return out, n, nil
		}
		// The line has an escape or a quote: the general path below decodes its fields.
	} else {
		plain = bytes.IndexByte(line, special) < 0
	}
	n := -1
	if cm.star >= 0 {
		// The rules of the columns after a star count from the end of the row.
		var err error
		if n, err = cm.countFields(line, csv, plain); err != nil {
			return dst, 0, err
		}
	}
	base := len(dst)
	val := cm.val
	copied, masked := 0, 0
	for i, start := 0, 0; ; i++ {
		k := cm.ruleIndex(i, n)
		var end int
		if plain {
			if end = bytes.IndexByte(line[start:], delim); end < 0 {
				end = len(line)
			} else {
				end += start
			}
		} else {
			var err error
			if end, err = cm.fieldEnd(line, start, csv); err != nil {
				cm.val = val
				return dst[:base], 0, err
			}
		}
		if k < 0 || cm.busy[k] {
			r, f := &cm.uncertain, cm.uncertainFast
			if k >= 0 {
				r, f = &cm.rules[k], cm.fast[k]
			}
			v, err := cm.fieldValue(line, start, end, csv, plain)
			if err != nil {
				cm.val = val
				return dst[:base], 0, err
			}
			if v != nil {
				var res Outcome
				val, res = cm.m.appendFast(val[:0], f, r, v)
				if res != Unchanged {
					dst = append(dst, data[copied:start]...)
					var f []byte
					if res != Nulled {
						f = val
					}
					if csv {
						dst = appendCSV(dst, f, &cm.opts)
					} else {
						dst = appendText(dst, f, &cm.opts)
					}
					copied = end
					masked++
				}
			}
		}
		if end >= len(line) {
			break
		}
		start = end + 1
	}
	cm.val = val
	if masked == 0 {
		return dst[:base], 0, nil
	}
	return append(dst, data[copied:]...), masked, nil
}

// appendPlain is AppendData for a plain line (no escapes, no quotes) of a COPY whose
// columns each have their own rule (no star): every row of an ordinary COPY, in a loop kept
// free of what the other lines need. It looks for the field ends and for the byte that
// makes a line not plain (a backslash in text, the quote in CSV) in one pass, eight bytes at
// a time; ok is false, with dst unchanged, when it finds the latter: the line is then the
// general path's.
func (cm *CopyMasker) appendPlain(dst, data, line []byte, csv bool) (out []byte, masked int, ok bool) {
	o := &cm.opts
	special := byte('\\')
	if csv {
		special = o.Quote
	}
	dpat, spat := swarOnes*uint64(o.Delimiter), swarOnes*uint64(special)
	busy, rules, fast := cm.busy, cm.rules, cm.fast
	base := len(dst)
	val := cm.val
	copied := 0
	for i, start := 0, 0; ; i++ {
		end := indexEither(line, start, dpat, spat)
		if end < len(line) && line[end] == special {
			cm.val = val
			return dst[:base], 0, false
		}
		if i >= len(busy) || busy[i] {
			r, f := &cm.uncertain, cm.uncertainFast
			if i < len(rules) {
				r, f = &rules[i], fast[i]
			}
			if raw := line[start:end]; string(raw) != o.Null {
				var res Outcome
				val, res = cm.m.appendFast(val[:0], f, r, raw)
				if res != Unchanged {
					dst = append(dst, data[copied:start]...)
					var f []byte
					if res != Nulled {
						f = val
					}
					if csv {
						dst = appendCSV(dst, f, o)
					} else {
						dst = appendText(dst, f, o)
					}
					copied = end
					masked++
				}
			}
		}
		if end >= len(line) {
			break
		}
		start = end + 1
	}
	cm.val = val
	if masked == 0 {
		return dst[:base], 0, true
	}
	return append(dst, data[copied:]...), masked, true
}

// indexEither returns the index of the first byte of b from i on that is the byte dpat
// repeats or the one spat repeats (see swarMatch), or len(b): the end of a COPY field, or
// what makes its line need decoding. Eight bytes at a time, the last (partial) word read
// overlapping the one before it, so a field of a few bytes costs a load or two.
func indexEither(b []byte, i int, dpat, spat uint64) int {
	n := len(b)
	for ; i+8 <= n; i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if m := swarMatch(w, dpat) | swarMatch(w, spat); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	if i >= n {
		return n
	}
	if n >= 8 {
		// The last word of b: its first 8-(n-i) bytes were searched already.
		w := binary.LittleEndian.Uint64(b[n-8:])
		m := (swarMatch(w, dpat) | swarMatch(w, spat)) >> (uint(8-(n-i)) * 8)
		if m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		return n
	}
	d, s := byte(dpat), byte(spat)
	for ; i < n; i++ {
		if c := b[i]; c == d || c == s {
			return i
		}
	}
	return n
}

var errCopyRow = errors.New("mask COPY row: malformed")

// Byte masks for textPlain's eight-bytes-at-a-time search.
const (
	swarOnes  = 0x0101010101010101
	swarLow7s = 0x7f7f7f7f7f7f7f7f
)

// swarMatch returns a word with the top bit set in every byte of w that equals the byte
// pat repeats (pat = c * swarOnes), and no other bit set.
func swarMatch(w, pat uint64) uint64 {
	t := w ^ pat
	return ^((t&swarLow7s + swarLow7s) | t | swarLow7s)
}

// countFields counts the fields of a text or CSV line.
func (cm *CopyMasker) countFields(line []byte, csv, plain bool) (int, error) {
	if plain {
		return bytes.Count(line, []byte{cm.opts.Delimiter}) + 1, nil
	}
	n := 0
	for start := 0; ; start++ {
		end, err := cm.fieldEnd(line, start, csv)
		if err != nil {
			return 0, err
		}
		n++
		if end >= len(line) {
			return n, nil
		}
		start = end
	}
}

// fieldEnd returns the end (the delimiter's index, or len(line)) of the field starting at
// start of a line that has escapes (text) or quotes (CSV), without decoding it.
func (cm *CopyMasker) fieldEnd(line []byte, start int, csv bool) (int, error) {
	o := &cm.opts
	if csv {
		return csvField(nil, line, start, o, false)
	}
	end := start
	for end < len(line) {
		c := line[end]
		if c == o.Delimiter {
			return end, nil
		}
		if c == '\\' {
			end++
			if end >= len(line) {
				return 0, errCopyRow
			}
		}
		end++
	}
	return end, nil
}

// fieldValue returns the decoded value of the field line[start:end] (nil for NULL). The
// value is the line's own bytes when the field needs no decoding, else the masker's decode
// buffer.
func (cm *CopyMasker) fieldValue(line []byte, start, end int, csv, plain bool) ([]byte, error) {
	o := &cm.opts
	raw := line[start:end]
	if plain {
		if string(raw) == o.Null {
			return nil, nil
		}
		return raw, nil
	}
	if csv {
		if bytes.IndexByte(raw, o.Quote) < 0 {
			if string(raw) == o.Null {
				return nil, nil
			}
			return raw, nil
		}
		if cm.dec == nil {
			cm.dec = make([]byte, 0, 64)
		}
		dec := cm.dec[:0]
		if _, err := csvField(&dec, line, start, o, true); err != nil {
			return nil, err
		}
		cm.dec = dec
		return dec, nil
	}
	if string(raw) == o.Null {
		return nil, nil
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, nil
	}
	cm.dec = unescapeText(cm.dec[:0], raw)
	return cm.dec, nil
}

func trimEOL(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	return line
}

// unescapeText appends the decoded value of a text-format COPY field to out.
func unescapeText(out, raw []byte) []byte {
	if out == nil {
		out = make([]byte, 0, len(raw))
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			out = append(out, c)
			continue
		}
		i++
		switch c = raw[i]; c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case 'x':
			v, k := 0, 0
			for k < 2 && i+1 < len(raw) && isHex(raw[i+1]) {
				i++
				v = v*16 + hexVal(raw[i])
				k++
			}
			if k == 0 {
				out = append(out, 'x')
			} else {
				out = append(out, byte(v))
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for k := 0; k < 2 && i+1 < len(raw) && raw[i+1] >= '0' && raw[i+1] <= '7'; k++ {
				i++
				v = v*8 + int(raw[i]-'0')
			}
			out = append(out, byte(v))
		default:
			out = append(out, c)
		}
	}
	return out
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}

// appendText appends a value as a text-format COPY field (nil is NULL), escaped.
func appendText(out, f []byte, o *CopyOptions) []byte {
	if f == nil {
		return append(out, o.Null...)
	}
	if textPlain(f, o.Delimiter) {
		return append(out, f...)
	}
	for _, c := range f {
		switch c {
		case '\\':
			out = append(out, '\\', '\\')
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		case '\t':
			out = append(out, '\\', 't')
		case '\b':
			out = append(out, '\\', 'b')
		case '\f':
			out = append(out, '\\', 'f')
		case '\v':
			out = append(out, '\\', 'v')
		default:
			if c == o.Delimiter {
				out = append(out, '\\')
			}
			out = append(out, c)
		}
	}
	return out
}

// textPlain reports whether f needs no escaping as a text-format COPY field: every
// character text COPY escapes is a control character, the backslash or the delimiter.
// Eight bytes at a time: every masked value of a streamed COPY goes through it.
func textPlain(f []byte, delim byte) bool {
	bpat, dpat := swarOnes*uint64('\\'), swarOnes*uint64(delim)
	i := 0
	for ; i+8 <= len(f); i += 8 {
		w := binary.LittleEndian.Uint64(f[i:])
		// (w - 0x20 per byte) &^ w has a top bit set somewhere iff some byte is below 0x20.
		if (w-swarOnes*0x20)&^w&(swarOnes<<7)|swarMatch(w, bpat)|swarMatch(w, dpat) != 0 {
			return false
		}
	}
	for ; i < len(f); i++ {
		if c := f[i]; c < 0x20 || c == '\\' || c == delim {
			return false
		}
	}
	return true
}

// csvField returns the end (the delimiter's index, or len(line)) of the CSV field starting
// at start; quoted parts may hold delimiters and newlines. With decode it appends the
// field's value (quotes and escapes removed) to *dst.
func csvField(dst *[]byte, line []byte, start int, o *CopyOptions, decode bool) (int, error) {
	i := start
	for i < len(line) && line[i] != o.Delimiter {
		if line[i] != o.Quote {
			if decode {
				*dst = append(*dst, line[i])
			}
			i++
			continue
		}
		i++
		for {
			if i >= len(line) {
				return 0, errCopyRow
			}
			c := line[i]
			if c == o.Escape && i+1 < len(line) && (line[i+1] == o.Quote || line[i+1] == o.Escape) && (o.Escape != o.Quote || line[i+1] == o.Quote) {
				if decode {
					*dst = append(*dst, line[i+1])
				}
				i += 2
				continue
			}
			i++
			if c == o.Quote {
				break
			}
			if decode {
				*dst = append(*dst, c)
			}
		}
	}
	return i, nil
}

// appendCSV appends a value as a CSV field (nil is NULL), quoted when it must be.
func appendCSV(out, f []byte, o *CopyOptions) []byte {
	if f == nil {
		return append(out, o.Null...)
	}
	need := len(f) == 0 || string(f) == o.Null || (len(f) >= 2 && f[0] == '\\' && f[1] == '.')
	for _, c := range f {
		if c == o.Delimiter || c == o.Quote || c == o.Escape || c == '\n' || c == '\r' {
			need = true
			break
		}
	}
	if !need {
		return append(out, f...)
	}
	out = append(out, o.Quote)
	for _, c := range f {
		if c == o.Quote || c == o.Escape {
			out = append(out, o.Escape)
		}
		out = append(out, c)
	}
	return append(out, o.Quote)
}

var binarySignature = []byte("PGCOPY\n\xff\r\n\x00")

// appendBinary masks one binary COPY message: an optional file header, then a tuple (int16
// field count, then int32 length and bytes per field; -1 is NULL), or the -1 trailer. It
// appends the masked message to dst as AppendData does.
func (cm *CopyMasker) appendBinary(dst, data []byte) ([]byte, int, error) {
	p := 0
	if !cm.started {
		if len(data) < 19 || string(data[:11]) != string(binarySignature) {
			return dst, 0, errors.New("mask COPY binary: missing file header")
		}
		ext := int(binary.BigEndian.Uint32(data[15:19]))
		p = 19 + ext
		if p > len(data) {
			return dst, 0, errCopyRow
		}
		cm.started = true
	}
	if p == len(data) {
		return dst, 0, nil
	}
	if p+2 > len(data) {
		return dst, 0, errCopyRow
	}
	count := int(int16(binary.BigEndian.Uint16(data[p:])))
	if count < 0 {
		return dst, 0, nil // trailer
	}
	p += 2
	base := len(dst)
	val := cm.val
	copied, n := 0, 0
	for i := 0; i < count; i++ {
		if p+4 > len(data) {
			cm.val = val
			return dst[:base], 0, errCopyRow
		}
		start := p
		l := int(int32(binary.BigEndian.Uint32(data[p:])))
		p += 4
		if l < 0 {
			continue
		}
		if l > len(data)-p {
			cm.val = val
			return dst[:base], 0, errCopyRow
		}
		v := data[p : p+l]
		p += l
		k := cm.ruleIndex(i, count)
		r, f := &cm.uncertain, cm.uncertainFast
		if k >= 0 {
			if !cm.busy[k] {
				continue
			}
			r, f = &cm.rules[k], cm.fast[k]
		}
		var res Outcome
		val, res = cm.m.appendFast(val[:0], f, r, v)
		if res == Unchanged {
			continue
		}
		n++
		dst = append(dst, data[copied:start]...)
		if res == Nulled {
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
		} else {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(val)))
			dst = append(dst, val...)
		}
		copied = p
	}
	cm.val = val
	if p != len(data) {
		// PostgreSQL sends one tuple per message: anything after it is not a row of this
		// COPY's shape and cannot be masked by its rules.
		return dst[:base], 0, errCopyRow
	}
	if n == 0 {
		return dst[:base], 0, nil
	}
	return append(dst, data[copied:]...), n, nil
}

// PlanCopy returns the masker for the output of a COPY ... TO STDOUT statement (c's
// statement), or nil when nothing in it needs masking for this session. Its columns get the
// masks the same query gets as a SELECT: the query is described on the target (see
// Describer) and planned like a row description. When it cannot be described (a temporary
// table of the session, no describer), the statement's lineage decides, and a column whose
// lineage is not certain is masked as its possible sources require, NULL when they are
// unknown. An error means the statement could not be read; the door must then refuse the
// COPY rather than send unmasked data. It implements gate.CopyPlanner.
func (p *Planner) PlanCopy(ctx context.Context, s *gate.Session, c *gate.Check) (gate.CopyMasker, error) {
	cm, err := p.planCopy(ctx, s, c)
	if cm == nil || err != nil {
		// An untyped nil: a nil *CopyMasker in the interface would read as a masker.
		return nil, err
	}
	return cm, nil
}

func (p *Planner) planCopy(ctx context.Context, s *gate.Session, c *gate.Check) (*CopyMasker, error) {
	prof := p.Profile(c.Decision.MaskProfile)
	if prof.Raw() {
		return nil, nil
	}
	var sql string
	for _, st := range c.Statements {
		if st != nil && (sql == "" || strings.EqualFold(st.Kind, "COPY")) {
			sql = st.Text
		}
	}
	opts, err := ParseCopyOptions(sql)
	if err != nil {
		return nil, err
	}
	format := int16(0)
	if opts.Format == "binary" {
		format = 1
	}
	snap := p.snapshot(ctx, s)
	sid := ""
	if s != nil {
		sid = s.ID
	}
	resolve, _ := p.temps.resolver(sid, snap)
	res, err := lineage.Analyze(sql, resolve)
	if err != nil || len(res) != 1 || res[0] == nil {
		return nil, fmt.Errorf("plan COPY masking: cannot tell the columns of %q", sql)
	}
	if rules, ok := p.describedCopy(ctx, s, c, sql, res[0], format); ok {
		if rules == nil {
			return nil, nil
		}
		return NewCopyMasker(p.masker, rules, opts), nil
	}
	rules := make([]Rule, len(res[0].Columns))
	active := false
	star := -1
	for i, col := range res[0].Columns {
		r := &rules[i]
		r.Format, r.Kind = format, KindText
		if e := plainColumn(snap, col); e != nil {
			// A plain table column: its own type and class.
			r.Kind = KindOfTypeName(e.Type)
			r.Origin = []string{e.Key()}
			if e.IsSensitive() {
				r.Class = e.Class
			}
		} else {
			// A column placed by a Star entry is not certain to be any one of its sources:
			// nothing of it may show.
			r.Derived, r.Transformed = true, !col.Preserved || col.Star
			p.fromSources(r, snap, col.Sources, "")
			if format == 1 && (r.Class != "" || r.Composite) {
				r.Kind = KindOpaque // unknown binary representation: NULL is the safe value
			}
		}
		r.plan(prof)
		if col.Star && star < 0 {
			star = i
		}
		active = active || r.sensitive() || r.FreeText || len(r.Keys) > 0
	}
	if !active {
		return nil, nil
	}
	cm := NewCopyMasker(p.masker, rules, opts)
	if !res[0].Exact {
		cm.star = star
		if star < 0 {
			// Inexact without a star (nesting too deep): no column is certain.
			cm = NewCopyMasker(p.masker, []Rule{uncertainRule(format)}, opts)
			cm.star = 0
		}
	}
	return cm, nil
}

// describedCopy plans the columns of a COPY's query from its description on the target,
// exactly as a row description of the same query is planned. ok is false when the query
// cannot be described, or its description disagrees with the width the statement's own
// lineage is certain of (the describing connection saw other relations than the session
// does: a temporary table, another search_path); rules is nil when nothing needs masking.
func (p *Planner) describedCopy(ctx context.Context, s *gate.Session, c *gate.Check, sql string, lin *lineage.Result, format int16) (rules []Rule, ok bool) {
	if p.describer == nil || s == nil || s.Target == nil {
		return nil, false
	}
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetCopyStmt() == nil {
		return nil, false
	}
	query, err := copyQuery(tree.Stmts[0].Stmt.GetCopyStmt(), tree.Version)
	if err != nil {
		return nil, false
	}
	cols, err := p.describer.Describe(ctx, classify.TargetKey(s.Target, s.Database), query)
	if err != nil {
		p.log.Debug("mask: COPY query not described; planning from its text", "session", s.ID, "err", err)
		return nil, false
	}
	if lin.Exact && len(lin.Columns) != len(cols) {
		return nil, false
	}
	for i := range cols {
		cols[i].Format = format
	}
	rm := p.PlanResult(ctx, s, c, cols)
	if rm == nil {
		return nil, true
	}
	return rm.rules, true
}

// uncertainRule masks a COPY column whose source is not known: NULL, valid in every format
// and for every type.
func uncertainRule(format int16) Rule {
	return Rule{Kind: KindOpaque, Format: format, Class: classify.Secret, Strategy: Null, Derived: true, Transformed: true}
}

// plainColumn returns the catalog entry when an output column is a table column as it is
// (COPY table, or a query selecting the column unchanged).
func plainColumn(snap *classify.Snapshot, col lineage.Column) *classify.Entry {
	if len(col.Sources) != 1 || col.Sources[0].Column == "*" || !col.Preserved {
		return nil
	}
	e := snap.ByName(col.Sources[0].Table, col.Sources[0].Column)
	if e == nil || col.Name != e.Column {
		return nil
	}
	return e
}
