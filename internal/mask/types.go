package mask

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// PostgreSQL type OIDs the masker treats specially (pg_type.h).
const (
	OIDBool        = 16
	OIDBytea       = 17
	OIDChar        = 18
	OIDName        = 19
	OIDInt8        = 20
	OIDInt2        = 21
	OIDInt4        = 23
	OIDText        = 25
	OIDOid         = 26
	OIDJSON        = 114
	OIDXML         = 142
	OIDFloat4      = 700
	OIDFloat8      = 701
	OIDUnknown     = 705
	OIDCidr        = 650
	OIDInet        = 869
	OIDBpchar      = 1042
	OIDVarchar     = 1043
	OIDDate        = 1082
	OIDTime        = 1083
	OIDTimestamp   = 1114
	OIDTimestamptz = 1184
	OIDNumeric     = 1700
	OIDRecord      = 2249
	OIDUUID        = 2950
	OIDJSONB       = 3802
	OIDJSONArray   = 199
	OIDJSONBArray  = 3807
	OIDTextArray   = 1009
	OIDNameArray   = 1003
	OIDBpcharArray = 1014
	OIDVarcharArr  = 1015
	OIDCharArray   = 1002
)

// Kind groups wire types by how a masked value stays valid for them.
type Kind int

// The kinds of wire types.
const (
	KindText    Kind = iota // text, varchar, bpchar, name, unknown: any text
	KindJSON                // json, jsonb: strings inside are masked, the document stays valid
	KindArray               // arrays of text types: elements are masked
	KindJSONArr             // arrays of json/jsonb
	KindDate                // date
	KindTime                // timestamp, timestamptz
	KindInet                // inet, cidr
	KindRecord              // anonymous or table row types in text format
	KindOpaque              // numbers, bytea, uuid, ...: only NULL is a safe valid value
	KindOther               // a type OID the masker does not know (enums, domains, composite types, citext)
)

// KindOf returns the kind of a type OID.
func KindOf(oid uint32) Kind {
	switch oid {
	case OIDText, OIDVarchar, OIDBpchar, OIDName, OIDUnknown, OIDChar, OIDXML:
		return KindText
	case OIDJSON, OIDJSONB:
		return KindJSON
	case OIDTextArray, OIDVarcharArr, OIDBpcharArray, OIDNameArray, OIDCharArray:
		return KindArray
	case OIDJSONArray, OIDJSONBArray:
		return KindJSONArr
	case OIDDate:
		return KindDate
	case OIDTimestamp, OIDTimestamptz:
		return KindTime
	case OIDInet, OIDCidr:
		return KindInet
	case OIDRecord:
		return KindRecord
	case OIDBool, OIDBytea, OIDInt8, OIDInt2, OIDInt4, OIDOid, OIDFloat4, OIDFloat8, OIDNumeric, OIDUUID, OIDTime:
		return KindOpaque
	}
	if oid < 10000 {
		// Other built-in types (intervals, geometric, ranges, ...): never text-like.
		return KindOpaque
	}
	return KindOther
}

// partialIP keeps the network part of an address: 192.168.1.20 → 192.168.0.0,
// 2001:db8:1:2::5 → 2001:db8::, keeping a /prefix if there was one.
func partialIP(dst, v []byte) ([]byte, bool) {
	s := string(v)
	suffix := ""
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			s, suffix = s[:i], s[i:]
			break
		}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return dst, false
	}
	if a.Is4() || a.Is4In6() {
		b := a.As4()
		b[2], b[3] = 0, 0
		dst = netip.AddrFrom4(b).AppendTo(dst)
	} else {
		b := a.As16()
		for i := 4; i < 16; i++ {
			b[i] = 0
		}
		dst = netip.AddrFrom16(b).AppendTo(dst)
	}
	return append(dst, suffix...), true
}

// pgEpoch is PostgreSQL's date and timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// placeholderDate is what non-partial strategies leave in date columns: a valid date that no
// one was born on in a production database.
const placeholderDate = "1900-01-01"

// maskBinaryDate masks a binary date (int32 days since 2000-01-01): Partial keeps the year,
// other strategies give 1900-01-01.
func maskBinaryDate(v []byte, s Strategy) []byte {
	if len(v) != 4 {
		return nil
	}
	days := int32(binary.BigEndian.Uint32(v))
	year := 1900
	if s == Partial && days != int32(0x7fffffff) && days != int32(-0x80000000) {
		year = pgEpoch.AddDate(0, 0, int(days)).Year()
	}
	d := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC).Sub(pgEpoch).Hours() / 24
	out := make([]byte, 4)
	binary.BigEndian.PutUint32(out, uint32(int32(d)))
	return out
}

// maskBinaryTimestamp masks a binary timestamp (int64 microseconds since 2000-01-01).
func maskBinaryTimestamp(v []byte, s Strategy) []byte {
	if len(v) != 8 {
		return nil
	}
	us := int64(binary.BigEndian.Uint64(v))
	year := 1900
	if s == Partial && us != 0x7fffffffffffffff && us != -0x8000000000000000 {
		days := us / 86400e6
		if us < 0 && us%86400e6 != 0 {
			days--
		}
		year = pgEpoch.AddDate(0, 0, int(days)).Year()
	}
	t := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
	days := int64(t.Sub(pgEpoch).Hours() / 24)
	out := make([]byte, 8)
	binary.BigEndian.PutUint64(out, uint64(days*86400e6))
	return out
}

// maskBinaryInet zeroes the host part of a binary inet/cidr value (family, bits, is_cidr,
// length, address bytes), keeping 2 bytes of an IPv4 and 4 of an IPv6 address.
func maskBinaryInet(v []byte) []byte {
	if len(v) < 4 || int(v[3]) != len(v)-4 {
		return nil
	}
	out := append([]byte(nil), v...)
	keep := 2
	if len(v)-4 == 16 {
		keep = 4
	}
	for i := 4 + keep; i < len(out); i++ {
		out[i] = 0
	}
	// A cidr stays valid: zeroing address bits never sets a host bit.
	return out
}

// KindOfTypeName returns the kind of a column from its pg_type name (as the catalog stores
// it), for values whose type OID the wire does not carry (record fields, COPY fields).
func KindOfTypeName(typ string) Kind {
	switch typ {
	case "text", "varchar", "bpchar", "name", "char", "citext", "xml", "unknown":
		return KindText
	case "json", "jsonb":
		return KindJSON
	case "_text", "_varchar", "_bpchar", "_name", "_citext":
		return KindArray
	case "_json", "_jsonb":
		return KindJSONArr
	case "date":
		return KindDate
	case "timestamp", "timestamptz":
		return KindTime
	case "inet", "cidr":
		return KindInet
	case "":
		return KindText
	}
	return KindOpaque
}
