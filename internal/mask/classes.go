package mask

import "github.com/gatehouse/gatehouse/internal/gate"

var _ gate.ClassMasker = (*Planner)(nil)

// MasksClass implements gate.ClassMasker: sessions with the named profile see values of
// class masked unless the profile shows that class raw. The gate refuses their statements
// that would copy such values where masking no longer sees them.
func (p *Planner) MasksClass(profile, class string) bool {
	return p.Profile(profile).For(class) != Raw
}
