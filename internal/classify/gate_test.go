// The gate imports classify, so the check that the catalog is what the gate needs lives in
// the external test package.
package classify_test

import (
	"github.com/gatehouse/gatehouse/internal/classify"
	"github.com/gatehouse/gatehouse/internal/gate"
)

// The catalog is what the gate consults for policies and the ledger.
var _ gate.Catalog = (*classify.Catalog)(nil)
