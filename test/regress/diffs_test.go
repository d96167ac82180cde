package regress

import "maps"

// Reasons shared by both identities of the built-in policy.
const (
	// Issue 13 item 1, owned by engineer "mask" (internal/lineage, internal/mask): the
	// result columns of a CTE with a column list or of a recursive CTE lose their lineage,
	// so the masker fails closed on ordinary values (integers come back NULL, text
	// "[redacted]") for DBAs and developers alike.
	todoCTELineage = "TODO(mask, issue 13 item 1): a CTE's column list / recursive CTE loses result-column lineage; ordinary values of a non-sensitive table come back NULL or [redacted]"
	// Issue 13 item 1 ("Error text"), owned by engineer "mask": a value quoted in an error
	// detail is redacted though its column is not sensitive.
	todoErrorText = "TODO(mask, issue 13 item 1): the value in an error's DETAIL (Key (id)=(red)) is redacted though no sensitive column is involved"
	// The refused SET SESSION AUTHORIZATION left the session as its own role, so a
	// statement PostgreSQL refuses the other role runs.
	followsRoleChange = "follows the refused SET [SESSION AUTHORIZATION|ROLE]: the statement runs as the session's own role, which may what the other role may not (and PostgreSQL's error shows more of the row)"
)

// withDiffs are the statements of with.sql whose results lose their lineage (todoCTELineage).
var withDiffs = map[diffKey]reason{
	{"with", "SELECT * FROM subdepartment ORDER BY name;"}:                  {why: todoCTELineage},
	{"with", "SELECT * FROM subdepartment WHERE level >= 2 ORDER BY name;"}: {why: todoCTELineage},
	{"with", "select * from q limit 24;"}:                                   {why: todoCTELineage},
	{"with", "select * from q limit 32;"}:                                   {why: todoCTELineage},
	{"with", "select * from search_graph;"}:                                 {why: todoCTELineage},
	{"with", "select * from search_graph order by seq;"}:                    {why: todoCTELineage},
	{"with", "select * from search_graph order by path;"}:                   {why: todoCTELineage},
	{"with", " SELECT * FROM x;"}:                                           {why: todoCTELineage},
	{"with", "SELECT * FROM t2;"}:                                           {why: todoCTELineage},
	{"enum", "INSERT INTO enumtest_child VALUES ('red');"}:                  {why: todoErrorText},
}

// dbaDiffs are the differences a DBA (group dba, admin access) on a dev target sees under
// the built-in policy, by file and statement, with their reasons.
var dbaDiffs = union(withDiffs, map[diffKey]reason{
	// role changes: refused for everyone
	{"select_into", "SET SESSION AUTHORIZATION regress_selinto_user;"}:      {rule: "no-role-change"},
	{"select_into", "RESET SESSION AUTHORIZATION;"}:                         {rule: "no-role-change"},
	{"select_into", "INSERT INTO selinto_schema.tbl_withdata1 VALUES (4);"}: {why: followsRoleChange},
	// server files: COPY ... TO 'file' (PostgreSQL would refuse this one itself)
	{"select_into", "COPY (SELECT 1 INTO frak UNION SELECT 2) TO 'blob';"}: {rule: "no-dangerous-functions"},
})

// devDiffs are the differences an ordinary engineer (kind human, no group, write access)
// on a dev target sees under the built-in policy. Beyond the DBA's, the refusals are by the
// access level: what write access does not cover even outside production (roles and their
// privileges, server files) is refused as "access-level" — the deny rules that also match
// (no-role-change, no-dangerous-functions) are reported that way below admin.
var devDiffs = union(withDiffs, map[diffKey]reason{
	// role changes and role management
	{"select_into", "CREATE USER regress_selinto_user;"}:                      {rule: "access-level"},
	{"select_into", "\t  REVOKE INSERT ON TABLES FROM regress_selinto_user;"}: {rule: "access-level"}, // ALTER DEFAULT PRIVILEGES FOR ROLE
	{"select_into", "\t  GRANT INSERT ON TABLES TO regress_selinto_user;"}:    {rule: "access-level"}, // ALTER DEFAULT PRIVILEGES FOR ROLE
	{"select_into", "SET SESSION AUTHORIZATION regress_selinto_user;"}:        {rule: "access-level"},
	{"select_into", "RESET SESSION AUTHORIZATION;"}:                           {rule: "access-level"},
	{"select_into", "DROP USER regress_selinto_user;"}:                        {rule: "access-level"},
	{"select_into", "INSERT INTO selinto_schema.tbl_withdata1 VALUES (4);"}:   {why: followsRoleChange},
	// server files
	{"select_into", "COPY (SELECT 1 INTO frak UNION SELECT 2) TO 'blob';"}: {rule: "access-level"},
})

func union(a, b map[diffKey]reason) map[diffKey]reason {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}
