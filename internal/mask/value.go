package mask

import (
	"strconv"

	"github.com/gatehouse/gatehouse/internal/classify"
)

// Rule says how to mask the values of one result column.
type Rule struct {
	Kind   Kind
	Format int16 // 0 text, 1 binary
	// Class is the column's sensitive class ("" when none). Composite is set instead when
	// the value mixes several classes (email || ssn), which no partial mask can keep apart.
	Class     string
	Composite bool
	Strategy  Strategy
	// Derived is true when the value came through an expression (lineage), so its shape is
	// not guaranteed: partial masks then apply only to values that still validate as the
	// class, and anything else is redacted.
	Derived bool
	// Transformed is true for a derived value that is not its sources' values as they are
	// (reverse(email), substring(ssn, 1, 3)): no partial mask applies, see Rule.plan.
	Transformed bool
	// samples marks planner statistics columns, masked as NULL whatever the profile's
	// strategy for their class (see Rule.plan).
	samples bool
	// Keys maps JSON keys / record field names to classes ("" for known non-sensitive
	// columns) for whole-row values such as row_to_json(c).
	Keys map[string]string
	// ConstKeys are the string literals of the statement: a JSON object key equal to one
	// was written by the client (json_build_object('e', email)) and is not masked.
	ConstKeys map[string]bool
	// KeyKinds gives the wire kind of keyed fields where the catalog knows the column type,
	// so a sensitive number inside a row literal becomes an empty (NULL) field, not text.
	KeyKinds map[string]Kind
	// Fields are the record's field names in order, for a whole-row value in text format.
	Fields []string
	// FreeText runs the value detectors on text no class covers.
	FreeText bool
	// Strat gives the strategy per class for free text and keyed structured values.
	Strat StrategyFunc
	// Origin names the source column(s), for the ledger ("public.customers.email").
	Origin []string
}

// sensitive reports whether the rule masks the whole value (rather than scanning it).
func (r *Rule) sensitive() bool {
	return (r.Class != "" || r.Composite) && r.Strategy != Raw
}

// Apply masks one value (nil is SQL NULL and stays NULL). It returns the value to send and
// whether it was masked; when masked is false the original slice is returned.
func (m *Masker) Apply(r *Rule, v []byte) (out []byte, masked bool) {
	if v == nil {
		return nil, false
	}
	switch r.Kind {
	case KindText:
		return m.applyText(r, v)
	case KindOther:
		if r.Format == 0 {
			if len(r.Fields) > 0 || len(r.Keys) > 0 {
				return m.applyRecord(r, v)
			}
			return m.applyText(r, v)
		}
		if r.sensitive() {
			return nil, true
		}
		return v, false
	case KindJSON:
		return m.applyJSON(r, v)
	case KindArray, KindJSONArr:
		return m.applyArray(r, v)
	case KindRecord:
		if r.Format == 0 {
			return m.applyRecord(r, v)
		}
		if r.sensitive() || r.FreeText {
			return nil, true // a binary record cannot be inspected cheaply: fail closed
		}
		return v, false
	case KindDate, KindTime:
		if !r.sensitive() {
			return v, false
		}
		return maskDateValue(r, v), true
	case KindInet:
		if !r.sensitive() {
			return v, false
		}
		if r.Strategy == Partial && r.Class == classify.IP {
			if r.Format == 1 {
				return maskBinaryInet(v), true
			}
			if out, ok := partialIP(nil, v); ok {
				return out, true
			}
		}
		return nil, true
	}
	// Opaque types (numbers, bytea, uuid): NULL is the only value valid for every one.
	if r.sensitive() {
		return nil, true
	}
	return v, false
}

func maskDateValue(r *Rule, v []byte) []byte {
	s := r.Strategy
	if s == Null {
		return nil
	}
	if r.Class != classify.DOB && s == Partial {
		s = Redact // only a date of birth has a meaningful partial (its year)
	}
	if r.Format == 1 {
		if r.Kind == KindDate {
			return maskBinaryDate(v, s)
		}
		return maskBinaryTimestamp(v, s)
	}
	if s == Partial {
		return partialDate(nil, v)
	}
	if r.Kind == KindTime {
		return []byte(placeholderDate + " 00:00:00")
	}
	return []byte(placeholderDate)
}

// applyText masks a text value (text format, or binary of a text type, which is the same
// bytes).
func (m *Masker) applyText(r *Rule, v []byte) ([]byte, bool) {
	if !r.sensitive() && (!r.FreeText || !mayContainSensitive(v)) {
		return v, false
	}
	out, res := m.appendText(make([]byte, 0, len(v)+len(RedactedText)+16), r, v)
	switch res {
	case Unchanged:
		return v, false
	case Nulled:
		return nil, true
	}
	return out, true
}

// Outcome is what masking did to one value (see Masker.AppendApply).
type Outcome uint8

// The outcomes of masking one value.
const (
	// Unchanged: the value leaves as it is.
	Unchanged Outcome = iota
	// Replaced: the masked value was appended.
	Replaced
	// Nulled: the value becomes SQL NULL.
	Nulled
)

// AppendApply is Apply for the streaming paths (DataRow, COPY): it appends the masked value
// to dst instead of allocating it, so a result of millions of rows masks each value into
// one reused buffer. v must not be nil (SQL NULL stays NULL and is never masked). dst is
// returned as it was unless the outcome is Replaced.
func (m *Masker) AppendApply(dst []byte, r *Rule, v []byte) ([]byte, Outcome) {
	switch {
	case r.Kind == KindText, r.Kind == KindOther && r.Format == 0 && len(r.Fields) == 0 && len(r.Keys) == 0:
		if !r.sensitive() {
			if !r.FreeText || !mayContainSensitive(v) {
				return dst, Unchanged
			}
		} else if r.Strategy == Partial && !r.Derived && !r.Composite {
			// A column of one class as it is stored, the commonest sensitive column: what
			// appendText ends in, without its steps (every row of a streamed result).
			return partial(dst, r.Class, v), Replaced
		}
		return m.appendText(dst, r, v)
	case r.Kind == KindOpaque:
		if r.sensitive() {
			return dst, Nulled
		}
		return dst, Unchanged
	}
	out, masked := m.Apply(r, v)
	switch {
	case !masked:
		return dst, Unchanged
	case out == nil:
		return dst, Nulled
	}
	return append(dst, out...), Replaced
}

// fastPath is what AppendApply comes down to for a rule, decided once per result instead
// of per value (see fastOf): the streaming paths mask millions of values with few rules.
type fastPath uint8

// The fast paths.
const (
	// fastNone: AppendApply itself.
	fastNone fastPath = iota
	// fastKeep: every value stays as it is.
	fastKeep
	// fastScan: text that stays unless the value detectors may find something in it.
	fastScan
	// fastEmail: a partial e-mail mask of every value (an e-mail column as it is stored).
	fastEmail
	// fastPartial: the partial mask of the rule's class of every value.
	fastPartial
	// fastNull: every value becomes NULL.
	fastNull
)

// fastOf returns the fast path of r: what AppendApply does with every value of it, for the
// commonest rules of streamed results, and fastNone for the others. It must be asked again
// when r changes.
func fastOf(r *Rule) fastPath {
	text := r.Kind == KindText || r.Kind == KindOther && r.Format == 0 && len(r.Fields) == 0 && len(r.Keys) == 0
	switch {
	case text && !r.sensitive() && !r.FreeText, r.Kind == KindOpaque && !r.sensitive():
		return fastKeep
	case text && !r.sensitive():
		return fastScan
	case text && r.Strategy == Partial && !r.Derived && !r.Composite && r.Class == classify.Email:
		return fastEmail
	case text && r.Strategy == Partial && !r.Derived && !r.Composite:
		return fastPartial
	case r.Kind == KindOpaque:
		return fastNull
	}
	return fastNone
}

// appendFast is AppendApply for a rule whose fast path is f (fastOf(r)).
func (m *Masker) appendFast(dst []byte, f fastPath, r *Rule, v []byte) ([]byte, Outcome) {
	switch f {
	case fastKeep:
		return dst, Unchanged
	case fastScan:
		if !mayContainSensitive(v) {
			return dst, Unchanged
		}
		return m.appendText(dst, r, v)
	case fastEmail:
		return partialEmail(dst, v), Replaced
	case fastPartial:
		return partial(dst, r.Class, v), Replaced
	case fastNull:
		return dst, Nulled
	}
	return m.AppendApply(dst, r, v)
}

// appendText masks a text value that is sensitive or may hold what the value detectors
// find, appending the result to dst.
func (m *Masker) appendText(dst []byte, r *Rule, v []byte) ([]byte, Outcome) {
	if r.sensitive() {
		class, strat := r.Class, r.Strategy
		if r.Composite && strat == Partial {
			strat = Redact
		}
		out, null, _ := m.scalar(dst, class, strat, r.Derived, v, r.Strat)
		if null {
			return dst, Nulled
		}
		return out, Replaced
	}
	if r.FreeText {
		if out, n := m.FreeText(dst, v, r.Strat); n > 0 {
			return out, Replaced
		}
	}
	return dst, Unchanged
}

// hasValidator reports whether a class has a value validator, so a derived value can be
// checked to still be of the class before a partial mask shows part of it.
func hasValidator(class string) bool {
	switch class {
	case classify.Email, classify.Card, classify.SSN, classify.IBAN, classify.Phone, classify.IP, classify.NationalID:
		return true
	}
	return false
}

func validates(class string, v []byte) bool {
	s := str(v)
	switch class {
	case classify.Email:
		return classify.IsEmail(s)
	case classify.Card:
		return classify.IsCard(s)
	case classify.SSN:
		return classify.SSNForm(s) != classify.NotSSN
	case classify.IBAN:
		return classify.IsIBAN(s)
	case classify.Phone:
		return classify.IsPhone(s) || (len(s) >= 7 && len(s) <= 15 && countDigits(v) == len(v))
	case classify.IP:
		return classify.IsIP(s)
	case classify.NationalID:
		return classify.IsNationalID(s) || classify.IsCanadianSIN(s)
	}
	return false
}

// scalar masks one scalar text value of class. For derived values with a partial strategy it
// shows part of the value only when the value still validates as the class, or when the
// value detectors account for all of it (string_agg of e-mails); otherwise it redacts.
func (m *Masker) scalar(dst []byte, class string, strat Strategy, derived bool, v []byte, sf StrategyFunc) (out []byte, null, changed bool) {
	switch strat {
	case Raw:
		return dst, false, false
	case Null:
		return dst, true, true
	case Partial:
		if derived && hasValidator(class) && !validates(class, v) {
			if mayContainSensitive(v) {
				var buf [8]span
				if spans := findSpans(v, buf[:0]); len(spans) > 0 && residueClean(v, spans) {
					out, n := m.FreeText(dst, v, sf)
					if n > 0 {
						return out, false, true
					}
				}
			}
			return append(dst, RedactedText...), false, true
		}
	}
	out, ok := m.Text(dst, class, strat, v)
	return out, !ok, true
}

// leaf returns the function masking scalars inside structured values of r.
func (m *Masker) leaf(r *Rule, total *int) leafFunc {
	return func(dst []byte, key string, v []byte) ([]byte, bool, bool) {
		class, known := "", false
		if r.Keys != nil {
			class, known = r.Keys[key]
		}
		strat := Raw
		switch {
		case known && class != "":
			strat = r.Strat(class)
		case known:
		case r.Composite && r.Strategy != Raw:
			strat = r.Strategy
			if strat == Partial {
				strat = Redact
			}
		case r.Class != "":
			class, strat = r.Class, r.Strategy
		}
		if strat != Raw {
			switch r.KeyKinds[key] {
			case KindOpaque, KindInet, KindDate, KindTime:
				if !(strat == Partial && (class == classify.DOB || class == classify.IP)) {
					*total++
					return dst, true, true
				}
			}
			out, null, ch := m.scalar(dst, class, strat, true, v, r.Strat)
			if ch {
				*total++
			}
			return out, null, ch
		}
		if r.FreeText {
			out, n := m.FreeText(dst, v, r.Strat)
			if n > 0 {
				*total++
				return out, false, true
			}
		}
		return dst, false, false
	}
}

func (m *Masker) applyJSON(r *Rule, v []byte) ([]byte, bool) {
	if !r.sensitive() && !r.FreeText && len(r.Keys) == 0 {
		return v, false
	}
	doc, prefix := v, []byte(nil)
	if r.Format == 1 && r.Kind == KindJSON && len(v) > 0 && v[0] == 1 {
		// jsonb binary: a version byte, then the text. (json binary is the text itself,
		// which never starts with that byte: PostgreSQL accepts only valid JSON.)
		doc, prefix = v[1:], v[:1]
	}
	if !r.sensitive() && len(r.Keys) == 0 && !mayContainSensitive(doc) {
		return v, false
	}
	total := 0
	out, changed, err := rewriteJSONKeys(append([]byte(nil), prefix...), doc, m.leaf(r, &total), m.jsonKey(r, &total))
	if err != nil {
		if r.sensitive() {
			return nil, true
		}
		return v, false
	}
	if !changed {
		return v, false
	}
	return out, true
}

// jsonKey masks the object keys of a JSON value that may be data: json_object_agg(email,
// id) and json_build_object(ssn, 1) make keys of sensitive values. A key is kept when it
// names a source column (r.Keys: to_json(c), json_build_object('email', email) over a
// column of that name) or is a string literal of the statement (ConstKeys: the client wrote
// it); any other key of a value derived as a whole from sensitive data (a class, or a mix
// of classes) takes the value's strategy, never a partial one: a keyed token for hash
// (distinct values stay distinct keys), else a numbered redaction ("[redacted 1]",
// "[redacted 2]", ...) so the object keeps one key per entry and stays valid. In a record
// of columns (row_to_json(c): keys are its column names, nested keys are data of a JSON
// column) and in values without a class the value detectors decide, as for the values.
func (m *Masker) jsonKey(r *Rule, total *int) keyFunc {
	strat := Raw
	if r.Class != "" || r.Composite {
		strat = r.Strategy
	}
	n := 0
	return func(key string) (string, bool) {
		if _, ok := r.Keys[key]; ok {
			return key, false
		}
		if r.ConstKeys[key] {
			return key, false
		}
		s := strat
		if s == Raw {
			if !r.FreeText {
				return key, false
			}
			if _, found := m.FreeText(nil, []byte(key), r.Strat); found == 0 {
				return key, false
			}
			s = Redact
		}
		*total++
		if s == Hash {
			return string(m.Token(nil, []byte(key))), true
		}
		n++
		return RedactedText[:len(RedactedText)-1] + " " + strconv.Itoa(n) + "]", true
	}
}

func (m *Masker) applyArray(r *Rule, v []byte) ([]byte, bool) {
	if !r.sensitive() && !r.FreeText {
		return v, false
	}
	if !r.sensitive() && !mayContainSensitive(v) {
		return v, false
	}
	total := 0
	leaf := m.leaf(r, &total)
	if r.Kind == KindJSONArr {
		inner := *r
		inner.Kind = KindJSON
		inner.Format = 0
		leaf = func(dst []byte, _ string, e []byte) ([]byte, bool, bool) {
			out, masked := m.applyJSON(&inner, e)
			if !masked {
				return dst, false, false
			}
			if out == nil {
				return dst, true, true
			}
			return append(dst, out...), false, true
		}
		if r.Format == 1 {
			if r.sensitive() {
				return nil, true
			}
			return v, false
		}
	}
	var out []byte
	var changed bool
	var err error
	if r.Format == 1 {
		out, changed, err = rewriteArrayBinary(v, leaf)
	} else {
		out, changed, err = rewriteArrayText(nil, v, leaf)
	}
	if err != nil {
		if r.sensitive() {
			return nil, true
		}
		return v, false
	}
	if !changed {
		return v, false
	}
	return out, true
}

func (m *Masker) applyRecord(r *Rule, v []byte) ([]byte, bool) {
	if !r.sensitive() && !r.FreeText && len(r.Keys) == 0 {
		return v, false
	}
	total := 0
	out, changed, err := rewriteRecordText(nil, v, r.Fields, m.leaf(r, &total))
	if err != nil {
		if r.sensitive() || len(r.Keys) > 0 {
			return nil, true
		}
		return v, false
	}
	if !changed {
		return v, false
	}
	return out, true
}
