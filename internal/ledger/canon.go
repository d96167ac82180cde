package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
)

// The canonical encoding of an event, which its hash covers, is defined on the event's JSON
// object rather than on the Go struct, so that a verifier needs nothing but the exported
// record and so that adding a field to Event never changes the hash of old events:
//
//  1. Take the event's JSON object (as written by encoding/json from Event, or as found in
//     an exported or stored record).
//  2. Remove the "hash" member.
//  3. Re-encode with members sorted by key (bytewise, recursively), no insignificant
//     whitespace, numbers exactly as written, strings escaped as encoding/json does with
//     HTML escaping off: ", \ and control characters escaped (\n, \t, \u00XX), U+2028 and
//     U+2029 as \u2028 and \u2029, invalid UTF-8 replaced by U+FFFD, everything else
//     literal UTF-8. This is RFC 8785 (JCS) for the values events hold (strings, integers,
//     booleans), apart from the two line separators.
//
// The event hash is hex(SHA-256(previous event's hash as hex text || "\n" || canonical)).
// Chaining the previous hash into the digest (and also recording it as "prev_hash" inside
// the canonical object) ties every event to its predecessor: changing, removing, inserting
// or reordering any event breaks the link of the next one.

// Canonical returns the canonical encoding of a JSON event object (see above).
func Canonical(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("decode event for canonical encoding: %w", err)
	}
	if obj == nil {
		return nil, fmt.Errorf("decode event for canonical encoding: not a JSON object")
	}
	delete(obj, "hash")
	// encoding/json writes map keys sorted, recursively, and keeps json.Number verbatim.
	// HTML escaping is off so that <, > and & stay literal, as in RFC 8785.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, fmt.Errorf("encode canonical event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// ChainHash returns the hash of an event given its canonical encoding and the hash of the
// event before it in the same instance's chain ("" for the first event).
func ChainHash(prevHash string, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(prevHash))
	h.Write([]byte{'\n'})
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// chainHasher computes ChainHash with state kept from one event to the next: the SHA-256
// state, the digest and its hex form are reused, so hashing an event allocates only the
// hash string itself (ChainHash allocates four times). Not safe for concurrent use; the
// ledger's is used under its chain lock.
type chainHasher struct {
	h   hash.Hash
	pre []byte
	sum [sha256.Size]byte
	hex [2 * sha256.Size]byte
}

// chainHash is ChainHash(prevHash, canonical).
func (c *chainHasher) chainHash(prevHash string, canonical []byte) string {
	if c.h == nil {
		c.h = sha256.New()
	} else {
		c.h.Reset()
	}
	c.pre = append(append(c.pre[:0], prevHash...), '\n')
	c.h.Write(c.pre)
	c.h.Write(canonical)
	hex.Encode(c.hex[:], c.h.Sum(c.sum[:0]))
	return string(c.hex[:])
}

// HashRecord recomputes the hash of a stored or exported JSON event record (whatever its
// "hash" member says) using the "prev_hash" it carries.
func HashRecord(raw []byte) (string, error) {
	canon, err := Canonical(raw)
	if err != nil {
		return "", err
	}
	var link struct {
		PrevHash string `json:"prev_hash"`
	}
	if err := json.Unmarshal(canon, &link); err != nil {
		return "", fmt.Errorf("read prev_hash: %w", err)
	}
	return ChainHash(link.PrevHash, canon), nil
}

// seal fills in ev.Hash from ev's fields (PrevHash must already be set) and returns the
// record as stored: the canonical object with its hash.
func seal(ev *Event) ([]byte, error) {
	ev.Hash = ""
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	canon, err := Canonical(raw)
	if err != nil {
		return nil, err
	}
	ev.Hash = ChainHash(ev.PrevHash, canon)
	// Append the hash member to the canonical object; "hash" sorts after most keys but the
	// stored form need not be canonical, only faithful.
	body := make([]byte, 0, len(canon)+80)
	body = append(body, canon[:len(canon)-1]...)
	body = append(body, `,"hash":"`...)
	body = append(body, ev.Hash...)
	body = append(body, `"}`...)
	return body, nil
}
