package regress

import "maps"

// Reasons shared by both identities of the built-in policy.
const (
	// The refused SET SESSION AUTHORIZATION left the session as its own role, so a
	// statement PostgreSQL refuses the other role runs.
	followsRoleChange = "follows the refused SET [SESSION AUTHORIZATION|ROLE]: the statement runs as the session's own role, which may what the other role may not (and PostgreSQL's error shows more of the row)"
)

// knownBugs are differences both identities see, owned by other engineers.
var knownBugs = map[diffKey]reason{}

// dbaDiffs are the differences a DBA (group dba, admin access) on a dev target sees under
// the built-in policy, by file and statement, with their reasons.
var dbaDiffs = union(knownBugs, map[diffKey]reason{
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
var devDiffs = union(knownBugs, map[diffKey]reason{
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
