package ledger

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendCanonicalEvent appends the canonical encoding (see canon.go) of ev, without its
// hash, to b: the same bytes as Canonical(json.Marshal(ev)) with ev.Hash empty, written
// directly instead of through encoding/json, a decode and a sorted re-encode (the sealing
// of every event pays for it). Members are written in sorted key order by hand;
// TestCanonicalEventMatchesCanonical holds the two encodings equal.
//
// It returns ok false, and the caller takes the general path, for what it does not handle
// exactly like that path: strings that are not valid UTF-8 (their replacement can merge two
// map keys) and times encoding/json refuses.
func appendCanonicalEvent(b []byte, ev *Event) (_ []byte, ok bool) {
	w := canonWriter{b: b, ok: true}
	w.b = append(w.b, '{')
	first := true
	str := func(key, v string, always bool) {
		if v == "" && !always {
			return
		}
		w.key(&first, key)
		w.str(v)
	}
	num := func(key string, v int64, always bool) {
		if v == 0 && !always {
			return
		}
		w.key(&first, key)
		w.b = strconv.AppendInt(w.b, v, 10)
	}
	str("application_name", ev.ApplicationName, false)
	str("approval_id", ev.ApprovalID, false)
	str("auth_method", ev.AuthMethod, false)
	num("bytes", ev.Bytes, false)
	str("client_addr", ev.ClientAddr, false)
	str("database", ev.Database, false)
	str("decision", ev.Decision, false)
	num("duration_ns", int64(ev.Duration), false)
	str("environment", ev.Environment, false)
	if len(ev.Groups) > 0 {
		w.key(&first, "groups")
		w.strs(ev.Groups)
	}
	str("identity_kind", ev.IdentityKind, false)
	str("instance", ev.Instance, false)
	str("message", ev.Message, false)
	str("prev_hash", ev.PrevHash, false)
	str("purpose", ev.Purpose, false)
	num("rows", ev.Rows, false)
	str("rule", ev.Rule, false)
	num("seq", ev.Seq, true)
	str("session", ev.SessionID, false)
	str("sqlstate", ev.SQLState, false)
	if len(ev.Statements) > 0 {
		w.key(&first, "statements")
		w.b = append(w.b, '[')
		for i := range ev.Statements {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.statement(&ev.Statements[i])
		}
		w.b = append(w.b, ']')
	}
	str("subject", ev.Subject, false)
	str("target", ev.Target, false)
	w.key(&first, "time")
	// What Time.MarshalJSON writes, without its allocation: RFC 3339 with nanoseconds,
	// quoted; a year outside 0-9999 is refused by both.
	w.b = append(w.b, '"')
	tb, err := ev.Time.AppendText(w.b)
	if err != nil {
		return b, false
	}
	w.b = append(tb, '"')
	if ev.TLS {
		w.key(&first, "tls")
		w.b = append(w.b, "true"...)
	}
	str("traceparent", ev.Traceparent, false)
	str("type", string(ev.Type), true)
	str("upstream_role", ev.UpstreamRole, false)
	num("values_masked", ev.ValuesMasked, false)
	str("via", ev.Via, false)
	w.b = append(w.b, '}')
	return w.b, w.ok
}

// canonWriter appends canonical JSON; ok turns false at the first string that is not
// valid UTF-8.
type canonWriter struct {
	b  []byte
	ok bool
}

func (w *canonWriter) key(first *bool, k string) {
	if !*first {
		w.b = append(w.b, ',')
	}
	*first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *canonWriter) statement(st *Statement) {
	first := true
	w.b = append(w.b, '{')
	w.key(&first, "category")
	w.str(st.Category)
	if st.Fingerprint != "" {
		w.key(&first, "fingerprint")
		w.str(st.Fingerprint)
	}
	w.key(&first, "kind")
	w.str(st.Kind)
	if len(st.Sensitive) > 0 {
		w.key(&first, "sensitive")
		var small [8]string
		keys := small[:0]
		for k := range st.Sensitive {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		w.b = append(w.b, '{')
		for i, k := range keys {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.str(k)
			w.b = append(w.b, ':')
			w.str(st.Sensitive[k])
		}
		w.b = append(w.b, '}')
	}
	if len(st.TablesRead) > 0 {
		w.key(&first, "tables_read")
		w.strs(st.TablesRead)
	}
	if len(st.TablesWritten) > 0 {
		w.key(&first, "tables_written")
		w.strs(st.TablesWritten)
	}
	w.key(&first, "text")
	w.str(st.Redacted)
	w.b = append(w.b, '}')
}

func (w *canonWriter) strs(ss []string) {
	w.b = append(w.b, '[')
	for i, s := range ss {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.str(s)
	}
	w.b = append(w.b, ']')
}

// str appends s as encoding/json writes it with HTML escaping off.
func (w *canonWriter) str(s string) {
	const hex = "0123456789abcdef"
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			w.b = append(w.b, s[start:i]...)
			switch c {
			case '"', '\\':
				w.b = append(w.b, '\\', c)
			case '\b':
				w.b = append(w.b, '\\', 'b')
			case '\f':
				w.b = append(w.b, '\\', 'f')
			case '\n':
				w.b = append(w.b, '\\', 'n')
			case '\r':
				w.b = append(w.b, '\\', 'r')
			case '\t':
				w.b = append(w.b, '\\', 't')
			default:
				w.b = append(w.b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			w.ok = false
			i++
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			w.b = append(w.b, s[start:i]...)
			w.b = append(w.b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}

// sealEvent is seal (canon.go) with the direct canonical encoder: it fills in ev.Hash
// (PrevHash must already be set) and returns the stored record, the canonical object with
// its hash; events the direct encoder declines go through seal itself.
func sealEvent(ev *Event) ([]byte, error) {
	body, _, err := sealEventAppend(make([]byte, 0, 1024), ev, &chainHasher{})
	return body, err
}

// sealEventAppend is sealEvent writing the record at the end of buf, so that a batch of
// events shares one allocation (their records live as long as each other: until the batch
// is stored). It returns the record, capacity-capped so appending to it never writes into
// buf, and buf with the record appended. h computes the hash (reused from event to event).
func sealEventAppend(buf []byte, ev *Event, h *chainHasher) (body, rest []byte, err error) {
	ev.Hash = ""
	start := len(buf)
	out, ok := appendCanonicalEvent(buf, ev)
	if !ok {
		body, err := seal(ev)
		return body, buf, err
	}
	ev.Hash = h.chainHash(ev.PrevHash, out[start:])
	out = append(out[:len(out)-1], `,"hash":"`...)
	out = append(out, ev.Hash...)
	out = append(out, `"}`...)
	return out[start:len(out):len(out)], out, nil
}
