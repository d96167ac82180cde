package mask

import (
	"strconv"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// lineageKey names the lineage cache entry of one statement of a result: the catalog
// generation gen (a DDL or rescan starts a new one), temps (what the planner knows of the
// session's temporary tables, "" when nothing) and the statement itself. text is what the
// lineage is computed from: the statement's own text, or the DECLARE of the cursor a FETCH
// reads.
//
// When text is the statement's own text and the inspector computed its Shape (the text
// with every constant replaced by $n), the key holds the Shape instead of the text, so a
// simple-protocol client that sends `... WHERE aid = 17` and then `... WHERE aid = 42`
// parses the lineage once: lineage looks at what an expression is made of (column
// references, functions, whether it is a constant) but never at a constant's value, so
// texts of one Shape have the same lineage. The leading letter keeps a Shape apart from a
// text that happens to read the same.
func lineageKey(gen uint64, temps string, st *inspect.Statement, text string) string {
	kind, body := "t", text
	if st.Shape != "" && text == st.Text {
		kind, body = "s", st.Shape
	}
	return strconv.FormatUint(gen, 10) + "\x00" + temps + "\x00" + kind + body
}
