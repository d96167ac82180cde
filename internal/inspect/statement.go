// Package inspect turns SQL text into facts about what each statement really does, using the
// real PostgreSQL parser, so guardrails cannot be bypassed by rewriting a statement.
package inspect

// Category is the coarse class of a statement that policies most often key on.
type Category string

// The statement categories. Unknown is never a free pass: policies can fail closed on it.
const (
	Read        Category = "read"
	Write       Category = "write"
	DDL         Category = "ddl"
	Admin       Category = "admin"
	Transaction Category = "transaction"
	SessionCat  Category = "session"
	Unknown     Category = "unknown"
)

// Statement holds the facts about one SQL statement. Values returned by an Inspector may be
// shared through its cache: treat them as read-only.
type Statement struct {
	// Text is this statement's own text (one statement of a multi-statement string).
	Text string
	// Kind names what the statement does, upper case: "SELECT", "INSERT", "DROP TABLE",
	// "CREATE INDEX", "SET", "BEGIN", "COPY", ... The worst effect wins: EXPLAIN ANALYZE
	// DELETE is "DELETE", PREPARE p AS DELETE is "DELETE", a SELECT (or INSERT, or COPY)
	// whose CTE deletes is "DELETE" (DELETE > UPDATE > MERGE > INSERT > SELECT), and
	// SELECT set_config('role', ...) is "SET ROLE". PostgreSQL refuses PREPARE of a DROP,
	// so that text is "UNKNOWN". Unparseable text is "UNKNOWN".
	Kind string
	// Category is read, write, ddl, admin, transaction, session or unknown.
	Category Category
	// ObjectType names the object a DDL statement acts on ("table", "index", "role", ...).
	ObjectType string
	// TablesRead and TablesWritten are schema-qualified where the text qualifies them, in
	// the parser's spelling: unquoted names lower-cased, quoted names as written
	// ("Public"."Users" is Public.Users). Views are listed as named. CTE names are not
	// tables (but a table of the same name outside the CTE's scope is). TablesWritten also
	// holds the tables a DDL statement changes or drops (ALTER, DROP, TRUNCATE, CREATE
	// INDEX, GRANT ON); plain EXPLAIN lists everything under TablesRead.
	TablesRead    []string
	TablesWritten []string
	// Columns are the column names the statement references ("*" for a star).
	Columns []string
	// HasWhere is true when every UPDATE and DELETE in the statement (at the top or in a
	// CTE) has a WHERE clause; MERGE counts its ON condition. For a statement with no
	// UPDATE/DELETE/MERGE it tells whether the top-level SELECT has a WHERE.
	HasWhere bool
	// HasLimit is true when a SELECT has a LIMIT (or FETCH FIRST).
	HasLimit bool
	// Export is true when the statement moves data out in bulk (COPY TO, SELECT INTO,
	// CREATE TABLE AS, lo_export).
	Export bool
	// Functions are the functions called, lower case, schema-qualified when written so
	// (and operators written as OPERATOR(schema.op) outside pg_catalog). A function not on
	// the inspector's list of vouched-for built-ins makes a read or write Unknown; a
	// privileged one (server files, large objects, dblink, set_config, backend signals)
	// makes it Admin.
	Functions []string
	// Fingerprint identifies the statement's shape regardless of literal values.
	Fingerprint string
	// Redacted is the text with literals replaced, safe to store in the ledger.
	Redacted string
	// Shape is pg_query's Normalize of the text (constants replaced by $n), or "" when it
	// could not be computed. Texts that differ only in the values of their constants have
	// the same Shape, so what depends on a statement's structure but not on its values
	// (the lineage of its result columns, say) can be cached per Shape instead of per
	// text: simple-protocol clients send a new text for every value.
	Shape string
	// ParseError is set when the text could not be parsed; Category is then Unknown. It never
	// quotes the statement text (which may hold secrets), only the position of the error.
	ParseError string
	// SyntaxError is the parser's own message for text that does not parse, as PostgreSQL
	// words it ("syntax error at or near \"SELEC\""), and SyntaxPosition the 1-based character
	// position it points at (0: none). The message may quote the text: it is for the client
	// that sent it, never for the ledger (ParseError is). Empty when the text parses or was
	// refused for another reason (a NUL byte, an inspector failure).
	SyntaxError    string
	SyntaxPosition int

	// WhereTrivial is true when a WHERE clause that HasWhere reports is a constant-true
	// expression (WHERE true, WHERE 1=1, WHERE id = id, ...), so policies can treat it
	// like no WHERE at all.
	WhereTrivial bool
	// WhereTrivialIfNotNull is set when WhereTrivial is false but a WHERE would restrict
	// nothing if some columns of its target were NOT NULL (DELETE FROM t WHERE id IS NOT
	// NULL): one entry per such UPDATE/DELETE/MERGE. The inspector does not know the
	// catalog; the gate, which does, treats the statement as WhereTrivial when every column
	// of one entry is NOT NULL in its table.
	WhereTrivialIfNotNull []NotNullCondition
	// NonStandardStrings is true when the statement turns standard_conforming_strings off
	// (SET, set_config, ALTER ROLE/DATABASE/SYSTEM ... SET), or sets it to a value the text
	// does not show. The inspector reads string literals with it on, as pg_query does: with
	// it off PostgreSQL would read a backslash before a quote as an escape and see other
	// statements than the ones decided, so the gate refuses such a statement.
	NonStandardStrings bool
	// Privileged is true when the statement calls a function the inspector knows as a
	// privileged capability (server files, large objects, backend signals, configuration
	// reloads, replication and backup control, set_config, ...), whatever else it does: an
	// unknown function next to one makes the statement Unknown, and a policy that lets
	// unknown statements through must still see the privileged call.
	Privileged bool
	// Program is true for COPY ... TO PROGRAM / FROM PROGRAM (runs a shell command on the
	// database server).
	Program bool
	// ServerFile is true for COPY to or from a file on the database server.
	ServerFile bool
	// Locking is true for SELECT ... FOR UPDATE / FOR SHARE: still a read, but it takes row
	// locks that block writers.
	Locking bool
	// Setting names the configuration parameter of SET / RESET / SHOW / ALTER SYSTEM
	// (lower case), or of a constant set_config() call.
	Setting string
	// PreparedName names the prepared statement of PREPARE, EXECUTE and DEALLOCATE, so the
	// gate can map EXECUTE back to the facts it recorded at PREPARE.
	PreparedName string
	// Writes are the places the statement stores values that may derive from what it reads
	// (table columns, new tables and views, settings, sequences, notifications), each with
	// the query producing the stored values, for the gate's check that masked sessions do
	// not copy sensitive values out of the catalog's sight. Empty for reads and for writes of
	// constants and parameters only.
	Writes []WriteFlow
	// Notes explain, in words, facts a reader of the decision should know (why a statement
	// is unknown, that EXPLAIN ANALYZE runs its statement, ...).
	Notes []string

	// calls are the functions called whose effect the built-in list only guesses (vouched
	// for as reads, or unknown), which a target's own catalog may re-decide
	// (WithFunctionEffects); callsBase is the category of everything else, and kindCat the
	// category of the statement's own kind (DDL and admin statements only define code that
	// calls functions: an unknown function does not make them Unknown).
	calls     []string
	callsBase Category
	kindCat   Category
}

// NotNullCondition names columns of one table (spelled as in TablesWritten) that, when all
// are NOT NULL, make a WHERE clause on that table restrict nothing.
type NotNullCondition struct {
	Table   string
	Columns []string
}
