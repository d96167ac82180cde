package gate

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// SyntaxErrorState is the SQLSTATE of a statement that does not parse (syntax_error), which
// Gatehouse answers itself, as PostgreSQL would, instead of forwarding text it cannot read.
const SyntaxErrorState = "42601"

// RuleSyntaxError names the refusal of a statement that does not parse, in the ledger.
const RuleSyntaxError = "syntax-error"

// refuseUnparsed refuses c when one of its statements does not parse: the client gets the
// parser's message and position with SQLSTATE 42601, as PostgreSQL would say it, and the
// text is not forwarded (what Gatehouse cannot read, it cannot decide). Reports whether it
// refused.
func refuseUnparsed(c *Check) bool {
	for _, st := range c.Statements {
		if st.SyntaxError == "" {
			continue
		}
		c.Decision = Decision{Action: Deny, Rule: RuleSyntaxError, Message: st.SyntaxError,
			SQLState: SyntaxErrorState, Position: st.SyntaxPosition}
		c.Denied = st
		return true
	}
	return false
}

// RuleNonStandardStrings names the refusal of a statement that turns
// standard_conforming_strings off.
const RuleNonStandardStrings = "standard-conforming-strings"

// refuseNonStandardStrings refuses c when one of its statements turns
// standard_conforming_strings off, whatever the policy: Gatehouse's parser reads string
// literals with it on, so afterwards PostgreSQL could run other statements than the ones
// Gatehouse decided ('a\'; DROP TABLE t; --' is one literal to one and a DROP to the
// other). SQLSTATE 0A000 (feature_not_supported). Reports whether it refused.
func refuseNonStandardStrings(c *Check) bool {
	for _, st := range c.Statements {
		if !st.NonStandardStrings {
			continue
		}
		c.Decision = Decision{Action: Deny, Rule: RuleNonStandardStrings, SQLState: "0A000",
			Message: "standard_conforming_strings cannot be turned off through Gatehouse: it reads string literals as PostgreSQL does with the setting on, and with it off the two would read backslashes differently"}
		c.Denied = st
		return true
	}
	return false
}

// resolveFunctions re-decides statement i of c with what the target's own catalog says of
// the functions it calls (see inspect.Statement.WithFunctionEffects). The statement and the
// slice holding it may be shared through the inspector's cache, so a changed one is a copy.
func (g *Gate) resolveFunctions(ctx context.Context, s *Session, c *Check, i int) *inspect.Statement {
	st := c.Statements[i]
	if g.Catalog == nil || s == nil || s.Target == nil || len(st.Functions) == 0 {
		return st
	}
	fx := g.Catalog.FunctionEffects(ctx, catalogKey(s))
	if fx == nil {
		return st
	}
	resolved := st.WithFunctionEffects(fx)
	if resolved != st {
		c.Statements = slices.Clone(c.Statements)
		c.Statements[i] = resolved
	}
	return resolved
}
