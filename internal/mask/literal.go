package mask

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// leafFunc masks one scalar found inside a structured value (a JSON string or number, an
// array element, a record field). key is the JSON object key, the record field name, or ""
// for array elements outside any object. It appends the replacement to dst; null asks for a
// NULL (JSON null, array NULL, empty record field); changed is false when v stays as it is.
type leafFunc func(dst []byte, key string, v []byte) (out []byte, null, changed bool)

// keyFunc masks one object key: the key to write and whether it changed.
type keyFunc func(key string) (string, bool)

// rewriteJSONKeys masks the strings (and numbers) of a JSON document through leaf, keeping the
// document valid and its key order. changed is false when nothing was masked, and then the
// caller keeps the original bytes.
//
// Every object key passes through keyf (nil keeps keys as they are); the values under a key
// are still looked up by the original key.
func rewriteJSONKeys(dst, doc []byte, leaf leafFunc, keyf keyFunc) (out []byte, changed bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		object    bool
		expectKey bool
		first     bool
		key       string
	}
	stack := make([]frame, 0, 8)
	start := len(dst)
	var scratch []byte
	key := func() string {
		for i := len(stack) - 1; i >= 0; i-- {
			if stack[i].object {
				return stack[i].key
			}
		}
		return ""
	}
	sep := func() {
		if len(stack) == 0 {
			return
		}
		f := &stack[len(stack)-1]
		if f.object && !f.expectKey {
			dst = append(dst, ':')
			return
		}
		if !f.first {
			dst = append(dst, ',')
		}
		f.first = false
	}
	after := func() {
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expectKey = !stack[len(stack)-1].expectKey
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return dst[:start], false, fmt.Errorf("mask json value: %w", err)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				sep()
				dst = append(dst, byte(t))
				stack = append(stack, frame{object: t == '{', expectKey: true, first: true})
			case '}', ']':
				stack = stack[:len(stack)-1]
				dst = append(dst, byte(t))
				after()
			}
			continue
		case string:
			if len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expectKey {
				sep()
				stack[len(stack)-1].key = t
				if keyf != nil {
					if k, ch := keyf(t); ch {
						dst = appendJSONString(dst, k)
						changed = true
						after()
						continue
					}
				}
				dst = appendJSONString(dst, t)
				after()
				continue
			}
			sep()
			var null, ch bool
			scratch, null, ch = leaf(scratch[:0], key(), []byte(t))
			switch {
			case null:
				dst = append(dst, "null"...)
				changed = true
			case ch:
				dst = appendJSONString(dst, string(scratch))
				changed = true
			default:
				dst = appendJSONString(dst, t)
			}
		case json.Number:
			sep()
			var null, ch bool
			scratch, null, ch = leaf(scratch[:0], key(), []byte(t))
			if null || ch {
				dst = append(dst, "null"...)
				changed = true
			} else {
				dst = append(dst, t...)
			}
		case bool:
			sep()
			if t {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case nil:
			sep()
			dst = append(dst, "null"...)
		}
		after()
	}
	if len(stack) != 0 {
		return dst[:start], false, errors.New("mask json value: truncated document")
	}
	return dst, changed, nil
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// rewriteArrayText masks the elements of a PostgreSQL array literal ({a,"b c",NULL},
// nested arrays, an optional [lo:hi]= dimension prefix).
func rewriteArrayText(dst, v []byte, leaf leafFunc) (out []byte, changed bool, err error) {
	start := len(dst)
	i := 0
	if len(v) > 0 && v[0] == '[' {
		eq := bytes.IndexByte(v, '=')
		if eq < 0 {
			return dst, false, errors.New("mask array value: bad dimension prefix")
		}
		dst = append(dst, v[:eq+1]...)
		i = eq + 1
	}
	var elem []byte
	var scratch []byte
	depth := 0
	for i < len(v) {
		c := v[i]
		switch c {
		case '{':
			depth++
			dst = append(dst, c)
			i++
			continue
		case '}':
			depth--
			dst = append(dst, c)
			i++
			continue
		case ',':
			dst = append(dst, c)
			i++
			continue
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		if depth == 0 {
			return dst[:start], false, errors.New("mask array value: element outside braces")
		}
		elem = elem[:0]
		if c == '"' {
			i++
			for i < len(v) && v[i] != '"' {
				if v[i] == '\\' && i+1 < len(v) {
					i++
				}
				elem = append(elem, v[i])
				i++
			}
			if i >= len(v) {
				return dst[:start], false, errors.New("mask array value: unterminated quoted element")
			}
			i++
		} else {
			for i < len(v) && v[i] != ',' && v[i] != '}' {
				if v[i] == '\\' && i+1 < len(v) {
					i++
				}
				elem = append(elem, v[i])
				i++
			}
			elem = bytes.TrimRight(elem, " \t\r\n")
			if bytes.EqualFold(elem, []byte("NULL")) {
				dst = append(dst, "NULL"...)
				continue
			}
		}
		var null, ch bool
		scratch, null, ch = leaf(scratch[:0], "", elem)
		switch {
		case null:
			dst = append(dst, "NULL"...)
			changed = true
		case ch:
			dst = appendArrayElem(dst, scratch)
			changed = true
		default:
			dst = appendArrayElem(dst, elem)
		}
	}
	if depth != 0 {
		return dst[:start], false, errors.New("mask array value: unbalanced braces")
	}
	return dst, changed, nil
}

func appendArrayElem(dst, e []byte) []byte {
	need := len(e) == 0 || bytes.EqualFold(e, []byte("NULL"))
	for _, c := range e {
		switch c {
		case '{', '}', ',', '"', '\\', ' ', '\t', '\n', '\r', '\v', '\f':
			need = true
		}
	}
	if !need {
		return append(dst, e...)
	}
	dst = append(dst, '"')
	for _, c := range e {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// rewriteRecordText masks the fields of a row literal ((1,"a b",,x)); names gives each
// field's name (may be shorter than the record) and reaches leaf as the key.
func rewriteRecordText(dst, v []byte, names []string, leaf leafFunc) (out []byte, changed bool, err error) {
	start := len(dst)
	if len(v) < 2 || v[0] != '(' || v[len(v)-1] != ')' {
		return dst, false, errors.New("mask record value: not a row literal")
	}
	dst = append(dst, '(')
	i := 1
	field := 0
	var elem, scratch []byte
	for {
		elem = elem[:0]
		quotedAny := false
		for i < len(v)-1 && v[i] != ',' {
			if v[i] == '"' {
				quotedAny = true
				i++
				for i < len(v)-1 {
					if v[i] == '"' {
						if i+1 < len(v)-1 && v[i+1] == '"' {
							elem = append(elem, '"')
							i += 2
							continue
						}
						break
					}
					if v[i] == '\\' && i+1 < len(v)-1 {
						i++
					}
					elem = append(elem, v[i])
					i++
				}
				if i >= len(v)-1 {
					return dst[:start], false, errors.New("mask record value: unterminated quoted field")
				}
				i++
				continue
			}
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			elem = append(elem, v[i])
			i++
		}
		if len(elem) > 0 || quotedAny {
			name := ""
			if field < len(names) {
				name = names[field]
			}
			var null, ch bool
			scratch, null, ch = leaf(scratch[:0], name, elem)
			switch {
			case null:
				changed = true
			case ch:
				dst = appendRecordField(dst, scratch)
				changed = true
			default:
				dst = appendRecordField(dst, elem)
			}
		}
		field++
		if i >= len(v)-1 {
			break
		}
		dst = append(dst, ',')
		i++
	}
	return append(dst, ')'), changed, nil
}

func appendRecordField(dst, e []byte) []byte {
	need := len(e) == 0
	for _, c := range e {
		switch c {
		case '(', ')', ',', '"', '\\', ' ', '\t', '\n', '\r', '\v', '\f':
			need = true
		}
	}
	if !need {
		return append(dst, e...)
	}
	dst = append(dst, '"')
	for _, c := range e {
		if c == '"' || c == '\\' {
			dst = append(dst, c)
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// rewriteArrayBinary masks the elements of a binary-format array of a text type.
func rewriteArrayBinary(v []byte, leaf leafFunc) (out []byte, changed bool, err error) {
	bad := errors.New("mask array value: malformed binary array")
	if len(v) < 12 {
		return nil, false, bad
	}
	ndim := int(int32(binary.BigEndian.Uint32(v[0:4])))
	if ndim < 0 || ndim > 6 || len(v) < 12+8*ndim {
		return nil, false, bad
	}
	n := 1
	if ndim == 0 {
		n = 0
	}
	for d := 0; d < ndim; d++ {
		dim := int(int32(binary.BigEndian.Uint32(v[12+8*d:])))
		if dim < 0 || dim > len(v) {
			return nil, false, bad
		}
		n *= dim
	}
	hdr := 12 + 8*ndim
	out = make([]byte, hdr, len(v))
	copy(out, v[:hdr])
	p := hdr
	hasNull := false
	var scratch []byte
	for e := 0; e < n; e++ {
		if p+4 > len(v) {
			return nil, false, bad
		}
		l := int(int32(binary.BigEndian.Uint32(v[p:])))
		p += 4
		if l < 0 {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			hasNull = true
			continue
		}
		if p+l > len(v) {
			return nil, false, bad
		}
		elem := v[p : p+l]
		p += l
		var null, ch bool
		scratch, null, ch = leaf(scratch[:0], "", elem)
		switch {
		case null:
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			hasNull, changed = true, true
		case ch:
			out = binary.BigEndian.AppendUint32(out, uint32(len(scratch)))
			out = append(out, scratch...)
			changed = true
		default:
			out = binary.BigEndian.AppendUint32(out, uint32(l))
			out = append(out, elem...)
		}
	}
	if hasNull {
		binary.BigEndian.PutUint32(out[4:8], 1)
	}
	return out, changed, nil
}
