package policy

import "github.com/gatehouse/gatehouse/internal/inspect"

// whereTrivial reports whether an UPDATE or DELETE has a WHERE that cannot narrow it
// (WHERE true, WHERE 1=1). The inspector does not report it yet; until it does, only the
// absence of a WHERE counts.
func whereTrivial(st *inspect.Statement) bool { return false }
