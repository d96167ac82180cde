package pg

// Allocation-free reading of the frontend messages the client loop handles for every
// statement. pgproto3's Decode methods copy every name and text into new strings (and
// Execute's into a slice first), which is an allocation or two per message on the relay's
// hottest path. These readers return views into the frame instead; the client loop turns a
// view into a string only when it has not seen the same bytes just before (see
// relay.textOf), which for a cached statement shape — a driver re-sending the same Parse, a
// pooler-style client re-sending the same Query — is never.

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Errors of the message readers; the caller wraps them with the message's name.
var (
	errNoTerminator = errors.New("string is not NUL-terminated")
	errShort        = errors.New("message is too short")
	errTrailing     = errors.New("unexpected bytes after the message's last field")
)

// cbytes returns the NUL-terminated string at the start of b, without its NUL, and the rest
// after it.
func cbytes(b []byte) (s, rest []byte, err error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, errNoTerminator
	}
	return b[:i], b[i+1:], nil
}

// readParse reads a Parse body: the statement name and its text. The parameter types are
// checked for length but not returned (the relay forwards them untouched).
func readParse(body []byte) (name, query []byte, err error) {
	if name, body, err = cbytes(body); err != nil {
		return nil, nil, err
	}
	if query, body, err = cbytes(body); err != nil {
		return nil, nil, err
	}
	if len(body) < 2 {
		return nil, nil, errShort
	}
	n := int(binary.BigEndian.Uint16(body))
	if len(body)-2 < 4*n {
		return nil, nil, errShort
	}
	return name, query, nil
}

// readTarget reads the body of a Describe or a Close: the object type ('S' for a statement,
// otherwise a portal) and the name, which must end the message.
func readTarget(body []byte) (typ byte, name []byte, err error) {
	if len(body) < 2 {
		return 0, nil, errShort
	}
	if i := bytes.IndexByte(body[1:], 0); i != len(body)-2 {
		if i < 0 {
			return 0, nil, errNoTerminator
		}
		return 0, nil, errTrailing
	}
	return body[0], body[1 : len(body)-1], nil
}

// readExecute reads an Execute body: the portal name and the row limit (0: all rows).
func readExecute(body []byte) (portal []byte, maxRows uint32, err error) {
	if portal, body, err = cbytes(body); err != nil {
		return nil, 0, err
	}
	if len(body) < 4 {
		return nil, 0, errShort
	}
	return portal, binary.BigEndian.Uint32(body), nil
}

// textOf returns b as a string, reusing have or the text of the client's previous statement
// when either holds the same bytes, so a statement that comes again costs no allocation
// (client loop only). Strings are never changed, so sharing them is safe.
func (r *relay) textOf(b []byte, have string) string {
	switch {
	case have == string(b):
		return have
	case r.lastText == string(b):
		return r.lastText
	}
	r.lastText = string(b)
	return r.lastText
}
