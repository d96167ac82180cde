package policy

import "bytes"

// Text is the exact policy text this Policy was built from, so the console shows the policy
// in force rather than the file as it is now (which may hold an edit a reload refused).
func (p *Policy) Text() []byte { return bytes.Clone(p.raw) }
