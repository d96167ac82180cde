package mask

import (
	"fmt"
	"slices"

	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/policy"
)

// Profile is a named set of masking choices that policy assigns per identity (the decision's
// MaskProfile): a strategy per class and whether the value detectors run on text of unknown
// origin.
type Profile struct {
	Name string
	// Strategies maps a class to its strategy; classes not listed use Default.
	Strategies map[string]Strategy
	// Default is the strategy of classes not in Strategies (Partial when empty).
	Default Strategy
	// FreeText runs the value detectors on every text value no column mapping covers.
	FreeText bool
}

// The built-in profile names. "none" means raw values (policy decides who gets it).
const (
	ProfileDefault = "default"
	ProfileStrict  = "strict"
	ProfileHash    = "hash"
	ProfileNone    = "none"
)

// DefaultStrategies are the per-class defaults: shape-keeping partial masks for identifiers
// people need to recognise, redaction for secrets and postal addresses.
func DefaultStrategies() map[string]Strategy {
	return map[string]Strategy{
		classify.Email: Partial, classify.Phone: Partial, classify.Card: Partial, classify.IBAN: Partial,
		classify.SSN: Partial, classify.NationalID: Partial, classify.IP: Partial, classify.DOB: Partial,
		classify.Name: Partial, classify.Address: Redact, classify.Password: Redact, classify.APIKey: Redact,
		classify.Secret: Redact,
	}
}

// BuiltinProfiles returns the profiles every installation has: default (per-class
// defaults), strict (redact everything, NULL for dates), hash (keyed tokens, so joins and
// GROUP BY still work) and none (raw).
func BuiltinProfiles() map[string]*Profile {
	return map[string]*Profile{
		ProfileDefault: {Name: ProfileDefault, Strategies: DefaultStrategies(), Default: Partial, FreeText: true},
		ProfileStrict:  {Name: ProfileStrict, Strategies: map[string]Strategy{classify.DOB: Null}, Default: Redact, FreeText: true},
		ProfileHash: {Name: ProfileHash, Strategies: map[string]Strategy{
			classify.Password: Redact, classify.APIKey: Redact, classify.Secret: Redact, classify.DOB: Partial,
		}, Default: Hash, FreeText: true},
		ProfileNone: {Name: ProfileNone, Default: Raw},
	}
}

// For returns the strategy of class.
func (p *Profile) For(class string) Strategy {
	if s, ok := p.Strategies[class]; ok {
		return s
	}
	if p.Default == "" {
		return Partial
	}
	return p.Default
}

// Raw reports whether the profile shows everything as it is.
func (p *Profile) Raw() bool {
	if p.Default != Raw || p.FreeText {
		return false
	}
	for _, s := range p.Strategies {
		if s != Raw {
			return false
		}
	}
	return true
}

// Validate checks every strategy name, for profiles read from a policy file.
func (p *Profile) Validate() error {
	if p.Default != "" && !p.Default.Valid() {
		return fmt.Errorf("mask profile %q: default strategy %q is not one of raw, partial, hash, redact, null", p.Name, p.Default)
	}
	for c, s := range p.Strategies {
		if !s.Valid() {
			return fmt.Errorf("mask profile %q: class %s: strategy %q is not one of raw, partial, hash, redact, null", p.Name, c, s)
		}
	}
	return nil
}

// FromPolicy turns a policy file's named profile into a masking profile: the default
// strategies, then the profile's strategies ("*" for every class it does not name), then its
// raw classes shown as they are ("*" for all). The value detectors run unless everything is
// raw.
func FromPolicy(pp *policy.Profile) *Profile {
	out := &Profile{Name: pp.Name, Strategies: DefaultStrategies(), Default: Partial, FreeText: true}
	if slices.Contains(pp.Raw, "*") {
		out.Strategies, out.Default = map[string]Strategy{}, Raw
	}
	if all, ok := pp.Strategies["*"]; ok {
		out.Strategies, out.Default = map[string]Strategy{}, Strategy(all)
	}
	for class, s := range pp.Strategies {
		if class != "*" {
			out.Strategies[class] = Strategy(s)
		}
	}
	for _, class := range pp.Raw {
		if class != "*" {
			out.Strategies[class] = Raw
		}
	}
	if out.Default == Raw && len(pp.Strategies) == 0 {
		out.FreeText = false
	}
	if out.Validate() != nil {
		// The policy parser checks strategy names; should one slip through, fail closed.
		return &Profile{Name: pp.Name, Strategies: map[string]Strategy{classify.DOB: Null}, Default: Redact, FreeText: true}
	}
	return out
}
