package inspect

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// maxNesting bounds how deep SQL found inside SQL (query_to_xml('...')) is inspected.
const maxNesting = 3

// analyzer turns the parse tree of one statement into its facts.
type analyzer struct {
	st      *Statement
	w       *walker
	nesting int
	// settingRow is the setting a SELECT ... FROM pg_settings WHERE name = '<setting>'
	// reads, so set_config(name, ...) in it names that setting (pg_dump's idiom for setting
	// a parameter only where the server has it).
	settingRow string
}

// dmlRank orders the kinds a statement can take from a data-modifying statement inside it:
// the highest wins ("WITH d AS (DELETE ...) INSERT ..." is a DELETE).
var dmlRank = map[string]int{"SELECT": 0, "COPY": 0, "DECLARE CURSOR": 0, "INSERT": 1, "MERGE": 2, "UPDATE": 3, "DELETE": 4}

// catRank orders categories by how much harm a statement can do; the worst effect wins.
var catRank = map[Category]int{Read: 1, SessionCat: 1, Transaction: 1, Write: 2, DDL: 3, Admin: 4, Unknown: 5}

func worse(a, b Category) Category {
	if catRank[b] > catRank[a] {
		return b
	}
	return a
}

func (a *analyzer) set(kind string, cat Category) {
	a.st.Kind = kind
	a.st.Category = cat
}

func (a *analyzer) note(s string) {
	for _, n := range a.st.Notes {
		if n == s {
			return
		}
	}
	a.st.Notes = append(a.st.Notes, s)
}

// ddl records a statement that changes the object target: target is written, everything
// else under body is walked as usual (a RangeVar elsewhere in it is read).
func (a *analyzer) ddl(kind string, cat Category, obj string, target *pg_query.RangeVar, body *pg_query.Node) {
	a.set(kind, cat)
	a.st.ObjectType = obj
	if target != nil {
		a.w.writeTable(target)
	}
	a.w.skip = target
	a.w.generic(body.ProtoReflect())
	a.w.skip = nil
}

// classify sets the kind and category of the statement n and walks it.
func (a *analyzer) classify(n *pg_query.Node) {
	st, w := a.st, a.w
	switch x := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		s := x.SelectStmt
		a.set("SELECT", Read)
		if s.IntoClause != nil {
			a.set("SELECT INTO", DDL)
			st.ObjectType = "table"
			st.Export = true
		}
		st.HasLimit = hasLimit(s, &w.literal)
		st.HasWhere = s.WhereClause != nil
		st.WhereTrivial, _ = trivialWhere(s.WhereClause, nil, &w.literal)
		a.settingRow = settingsRow(s, &w.literal)
		w.selectStmt(s)
	case *pg_query.Node_InsertStmt:
		a.set("INSERT", Write)
		w.node(n)
	case *pg_query.Node_UpdateStmt:
		a.set("UPDATE", Write)
		w.node(n)
	case *pg_query.Node_DeleteStmt:
		a.set("DELETE", Write)
		w.node(n)
	case *pg_query.Node_MergeStmt:
		a.set("MERGE", Write)
		w.node(n)
	case *pg_query.Node_ExplainStmt:
		for _, o := range x.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Arg != nil {
				w.literal = true
			}
		}
		if explainAnalyze(x.ExplainStmt.Options) {
			a.note("EXPLAIN ANALYZE executes the statement it explains")
			a.classify(x.ExplainStmt.Query)
			return
		}
		a.set("EXPLAIN", Read)
		w.node(x.ExplainStmt.Query)
		// Plain EXPLAIN plans without running: what the inner statement would touch is
		// listed as read, and its data changes do not count. Functions still count: the
		// planner may run immutable functions while folding constants.
		for _, t := range w.written.list {
			w.read.add(t)
		}
		w.written, w.dml, w.into = orderedSet{}, nil, false
	case *pg_query.Node_PrepareStmt:
		st.PreparedName = x.PrepareStmt.Name
		a.note("PREPARE " + x.PrepareStmt.Name + " is classified as the statement it prepares")
		a.classify(x.PrepareStmt.Query)
	case *pg_query.Node_ExecuteStmt:
		a.set("EXECUTE", Unknown)
		st.PreparedName = x.ExecuteStmt.Name
		a.note("EXECUTE runs a statement prepared earlier in the session; map it by PreparedName")
		w.nodes(x.ExecuteStmt.Params)
	case *pg_query.Node_DeallocateStmt:
		a.set("DEALLOCATE", SessionCat)
		st.PreparedName = x.DeallocateStmt.Name
	case *pg_query.Node_DeclareCursorStmt:
		a.set("DECLARE CURSOR", Read)
		if s := x.DeclareCursorStmt.Query.GetSelectStmt(); s != nil {
			st.HasLimit = hasLimit(s, &w.literal)
		}
		w.node(x.DeclareCursorStmt.Query)
	case *pg_query.Node_FetchStmt:
		if x.FetchStmt.Ismove {
			a.set("MOVE", Read)
		} else {
			a.set("FETCH", Read)
		}
	case *pg_query.Node_ClosePortalStmt:
		a.set("CLOSE", SessionCat)
	case *pg_query.Node_CopyStmt:
		a.copyStmt(x.CopyStmt)
	case *pg_query.Node_CreateTableAsStmt:
		c := x.CreateTableAsStmt
		kind, obj := "CREATE TABLE AS", "table"
		switch {
		case c.IsSelectInto:
			kind = "SELECT INTO"
		case c.Objtype == pg_query.ObjectType_OBJECT_MATVIEW:
			kind, obj = "CREATE MATERIALIZED VIEW", "materialized view"
		}
		a.set(kind, DDL)
		st.ObjectType = obj
		if c.Into != nil {
			w.writeTable(c.Into.Rel)
			st.Export = !c.Into.SkipData
		}
		if s := c.Query.GetSelectStmt(); s != nil {
			st.HasLimit = hasLimit(s, &w.literal)
		}
		w.node(c.Query)
	case *pg_query.Node_CreateStmt:
		a.ddl("CREATE TABLE", DDL, "table", x.CreateStmt.Relation, n)
	case *pg_query.Node_CreateForeignTableStmt:
		a.ddl("CREATE FOREIGN TABLE", DDL, "foreign table", x.CreateForeignTableStmt.BaseStmt.GetRelation(), n)
	case *pg_query.Node_AlterTableStmt:
		at := x.AlterTableStmt
		obj := objName(at.Objtype)
		a.ddl("ALTER "+strings.ToUpper(obj), DDL, obj, at.Relation, n)
		for _, c := range at.Cmds {
			if cmd := c.GetAlterTableCmd(); cmd != nil {
				switch cmd.Subtype {
				case pg_query.AlterTableType_AT_ChangeOwner,
					pg_query.AlterTableType_AT_EnableRowSecurity, pg_query.AlterTableType_AT_DisableRowSecurity,
					pg_query.AlterTableType_AT_ForceRowSecurity, pg_query.AlterTableType_AT_NoForceRowSecurity,
					pg_query.AlterTableType_AT_DisableTrig, pg_query.AlterTableType_AT_DisableTrigAll,
					pg_query.AlterTableType_AT_DisableTrigUser:
					st.Category = Admin
					a.note("changes ownership, row-level security or triggers of " + tableName(at.Relation))
				}
			}
		}
	case *pg_query.Node_DropStmt:
		d := x.DropStmt
		obj := objName(d.RemoveType)
		a.set("DROP "+strings.ToUpper(obj), DDL)
		st.ObjectType = obj
		switch d.RemoveType {
		case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW,
			pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_FOREIGN_TABLE,
			pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_INDEX:
			for _, o := range d.Objects {
				if l := o.GetList(); l != nil {
					w.written.add(funcName(l.Items))
				}
			}
		case pg_query.ObjectType_OBJECT_EXTENSION, pg_query.ObjectType_OBJECT_POLICY,
			pg_query.ObjectType_OBJECT_EVENT_TRIGGER, pg_query.ObjectType_OBJECT_FOREIGN_SERVER,
			pg_query.ObjectType_OBJECT_FDW, pg_query.ObjectType_OBJECT_PUBLICATION,
			pg_query.ObjectType_OBJECT_LANGUAGE:
			st.Category = Admin
		}
	case *pg_query.Node_TruncateStmt:
		a.set("TRUNCATE", DDL)
		st.ObjectType = "table"
		for _, r := range x.TruncateStmt.Relations {
			w.writeTable(r.GetRangeVar())
		}
	case *pg_query.Node_IndexStmt:
		a.ddl("CREATE INDEX", DDL, "index", x.IndexStmt.Relation, n)
	case *pg_query.Node_ViewStmt:
		a.ddl("CREATE VIEW", DDL, "view", x.ViewStmt.View, n)
	case *pg_query.Node_CreateFunctionStmt:
		kind, obj := "CREATE FUNCTION", "function"
		if x.CreateFunctionStmt.IsProcedure {
			kind, obj = "CREATE PROCEDURE", "procedure"
		}
		for _, o := range x.CreateFunctionStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "security" && d.Arg.GetBoolean().GetBoolval() {
				a.note("SECURITY DEFINER: the function runs with its owner's rights")
			}
		}
		a.ddl(kind, DDL, obj, nil, n)
	case *pg_query.Node_RuleStmt:
		a.ddl("CREATE RULE", DDL, "rule", x.RuleStmt.Relation, n)
	case *pg_query.Node_CreateTrigStmt:
		t := x.CreateTrigStmt
		a.note("trigger runs function " + funcName(t.Funcname))
		a.ddl("CREATE TRIGGER", DDL, "trigger", t.Relation, n)
	case *pg_query.Node_CreateEventTrigStmt:
		a.ddl("CREATE EVENT TRIGGER", Admin, "event trigger", nil, n)
	case *pg_query.Node_RenameStmt:
		r := x.RenameStmt
		obj := objName(r.RenameType)
		switch r.RenameType {
		case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT,
			pg_query.ObjectType_OBJECT_ATTRIBUTE:
			// renaming a part of a relation: name the relation's type (ALTER TABLE)
			obj = objName(r.RelationType)
		case pg_query.ObjectType_OBJECT_TRIGGER, pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY:
			obj = objName(r.RenameType)
		}
		cat := DDL
		if r.RenameType == pg_query.ObjectType_OBJECT_ROLE {
			cat = Admin
		}
		a.ddl("ALTER "+strings.ToUpper(obj), cat, obj, r.Relation, n)
	case *pg_query.Node_AlterObjectSchemaStmt:
		obj := objName(x.AlterObjectSchemaStmt.ObjectType)
		a.ddl("ALTER "+strings.ToUpper(obj), DDL, obj, x.AlterObjectSchemaStmt.Relation, n)
	case *pg_query.Node_AlterOwnerStmt:
		obj := objName(x.AlterOwnerStmt.ObjectType)
		a.note("changes the owner of a " + obj)
		a.ddl("ALTER "+strings.ToUpper(obj), Admin, obj, x.AlterOwnerStmt.Relation, n)
	case *pg_query.Node_GrantStmt:
		g := x.GrantStmt
		kind := "REVOKE"
		if g.IsGrant {
			kind = "GRANT"
		}
		a.set(kind, Admin)
		st.ObjectType = objName(g.Objtype)
		for _, o := range g.Objects {
			if rv := o.GetRangeVar(); rv != nil {
				w.writeTable(rv)
			}
		}
	case *pg_query.Node_GrantRoleStmt:
		kind := "REVOKE"
		if x.GrantRoleStmt.IsGrant {
			kind = "GRANT"
		}
		a.set(kind, Admin)
		st.ObjectType = "role"
	case *pg_query.Node_AlterDefaultPrivilegesStmt:
		a.set("ALTER DEFAULT PRIVILEGES", Admin)
	case *pg_query.Node_CreateRoleStmt:
		a.set("CREATE ROLE", Admin)
		st.ObjectType = "role"
		for _, o := range x.CreateRoleStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "superuser" && d.Arg.GetBoolean().GetBoolval() {
				a.note("creates a superuser")
			}
		}
	case *pg_query.Node_AlterRoleStmt:
		a.set("ALTER ROLE", Admin)
		st.ObjectType = "role"
	case *pg_query.Node_AlterRoleSetStmt:
		a.set("ALTER ROLE", Admin)
		st.ObjectType = "role"
		if s := x.AlterRoleSetStmt.Setstmt; s != nil {
			a.checkStrings(s)
			st.Setting = strings.ToLower(s.Name)
		}
	case *pg_query.Node_DropRoleStmt:
		a.set("DROP ROLE", Admin)
		st.ObjectType = "role"
	case *pg_query.Node_AlterSystemStmt:
		a.set("ALTER SYSTEM", Admin)
		if s := x.AlterSystemStmt.Setstmt; s != nil {
			a.checkStrings(s)
			st.Setting = strings.ToLower(s.Name)
		}
	case *pg_query.Node_VariableSetStmt:
		a.variableSet(x.VariableSetStmt)
	case *pg_query.Node_VariableShowStmt:
		a.set("SHOW", SessionCat)
		st.Setting = strings.ToLower(x.VariableShowStmt.Name)
	case *pg_query.Node_DiscardStmt:
		a.set("DISCARD", SessionCat)
		if x.DiscardStmt.Target == pg_query.DiscardMode_DISCARD_ALL {
			// DISCARD ALL runs SET SESSION AUTHORIZATION DEFAULT: back to the login role.
			st.ObjectType = "all"
			st.Setting = "session_authorization"
			st.Category = Admin
			a.note("DISCARD ALL resets the session's role to the login role")
		}
	case *pg_query.Node_TransactionStmt:
		a.set(transactionKind(x.TransactionStmt.Kind), Transaction)
	case *pg_query.Node_ConstraintsSetStmt:
		a.set("SET CONSTRAINTS", Transaction)
	case *pg_query.Node_LockStmt:
		a.set("LOCK TABLE", Write)
		for _, r := range x.LockStmt.Relations {
			w.writeTable(r.GetRangeVar())
		}
	case *pg_query.Node_VacuumStmt:
		v := x.VacuumStmt
		kind := "ANALYZE"
		if v.IsVacuumcmd {
			kind = "VACUUM"
		}
		a.set(kind, Admin)
		for _, r := range v.Rels {
			if vr := r.GetVacuumRelation(); vr != nil {
				if v.IsVacuumcmd {
					w.writeTable(vr.Relation)
				} else {
					w.read.add(tableName(vr.Relation))
				}
			}
		}
	case *pg_query.Node_ClusterStmt:
		a.ddl("CLUSTER", Admin, "table", x.ClusterStmt.Relation, n)
	case *pg_query.Node_ReindexStmt:
		a.ddl("REINDEX", Admin, "index", x.ReindexStmt.Relation, n)
	case *pg_query.Node_CheckPointStmt:
		a.set("CHECKPOINT", Admin)
	case *pg_query.Node_LoadStmt:
		a.set("LOAD", Admin)
		a.note("LOAD loads a shared library into the server")
	case *pg_query.Node_RefreshMatViewStmt:
		a.set("REFRESH MATERIALIZED VIEW", Write)
		w.writeTable(x.RefreshMatViewStmt.Relation)
	case *pg_query.Node_CallStmt:
		a.set("CALL", Unknown)
		a.note("a procedure can do anything its owner may do")
		w.funcCall(x.CallStmt.Funccall)
	case *pg_query.Node_DoStmt:
		a.set("DO", Unknown)
		a.note("a DO block runs procedural code the inspector cannot see into")
	case *pg_query.Node_ListenStmt:
		a.set("LISTEN", SessionCat)
	case *pg_query.Node_UnlistenStmt:
		a.set("UNLISTEN", SessionCat)
	case *pg_query.Node_NotifyStmt:
		a.set("NOTIFY", Write)
	case *pg_query.Node_CreateSchemaStmt:
		a.ddl("CREATE SCHEMA", DDL, "schema", nil, n)
	case *pg_query.Node_CreatedbStmt:
		a.ddl("CREATE DATABASE", DDL, "database", nil, n)
	case *pg_query.Node_DropdbStmt:
		a.ddl("DROP DATABASE", DDL, "database", nil, n)
	case *pg_query.Node_AlterDatabaseStmt:
		a.ddl("ALTER DATABASE", Admin, "database", nil, n)
	case *pg_query.Node_AlterDatabaseSetStmt:
		a.ddl("ALTER DATABASE", Admin, "database", nil, n)
		// ALTER DATABASE ... SET role / session_authorization changes the role of every
		// later login: Setting names it, so the policy sees a role change.
		if s := x.AlterDatabaseSetStmt.Setstmt; s != nil {
			a.checkStrings(s)
			st.Setting = strings.ToLower(s.Name)
		}
	case *pg_query.Node_CreateExtensionStmt:
		a.ddl("CREATE EXTENSION", Admin, "extension", nil, n)
	case *pg_query.Node_AlterExtensionStmt:
		a.ddl("ALTER EXTENSION", Admin, "extension", nil, n)
	case *pg_query.Node_CreateForeignServerStmt:
		a.ddl("CREATE SERVER", Admin, "server", nil, n)
	case *pg_query.Node_AlterForeignServerStmt:
		a.ddl("ALTER SERVER", Admin, "server", nil, n)
	case *pg_query.Node_CreateUserMappingStmt:
		a.ddl("CREATE USER MAPPING", Admin, "user mapping", nil, n)
	case *pg_query.Node_AlterUserMappingStmt:
		a.ddl("ALTER USER MAPPING", Admin, "user mapping", nil, n)
	case *pg_query.Node_DropUserMappingStmt:
		a.ddl("DROP USER MAPPING", Admin, "user mapping", nil, n)
	case *pg_query.Node_CreateFdwStmt:
		a.ddl("CREATE FOREIGN DATA WRAPPER", Admin, "foreign data wrapper", nil, n)
	case *pg_query.Node_CreatePolicyStmt:
		a.ddl("CREATE POLICY", Admin, "policy", x.CreatePolicyStmt.Table, n)
	case *pg_query.Node_AlterPolicyStmt:
		a.ddl("ALTER POLICY", Admin, "policy", x.AlterPolicyStmt.Table, n)
	case *pg_query.Node_CreatePlangStmt:
		a.ddl("CREATE LANGUAGE", Admin, "language", nil, n)
	case *pg_query.Node_CreatePublicationStmt:
		a.ddl("CREATE PUBLICATION", Admin, "publication", nil, n)
	case *pg_query.Node_CreateSubscriptionStmt:
		a.ddl("CREATE SUBSCRIPTION", Admin, "subscription", nil, n)
	case *pg_query.Node_AlterSubscriptionStmt:
		a.ddl("ALTER SUBSCRIPTION", Admin, "subscription", nil, n)
	case *pg_query.Node_DropSubscriptionStmt:
		a.ddl("DROP SUBSCRIPTION", Admin, "subscription", nil, n)
	case *pg_query.Node_ReassignOwnedStmt:
		a.ddl("REASSIGN OWNED", Admin, "role", nil, n)
	case *pg_query.Node_DropOwnedStmt:
		a.ddl("DROP OWNED", Admin, "role", nil, n)
	case *pg_query.Node_CreateTableSpaceStmt:
		a.ddl("CREATE TABLESPACE", Admin, "tablespace", nil, n)
	case *pg_query.Node_DropTableSpaceStmt:
		a.ddl("DROP TABLESPACE", Admin, "tablespace", nil, n)
	case *pg_query.Node_SecLabelStmt:
		a.ddl("SECURITY LABEL", Admin, objName(x.SecLabelStmt.Objtype), nil, n)
	case *pg_query.Node_CommentStmt:
		a.ddl("COMMENT", DDL, objName(x.CommentStmt.Objtype), nil, n)
	case *pg_query.Node_CreateSeqStmt:
		a.ddl("CREATE SEQUENCE", DDL, "sequence", x.CreateSeqStmt.Sequence, n)
	case *pg_query.Node_AlterSeqStmt:
		a.ddl("ALTER SEQUENCE", DDL, "sequence", x.AlterSeqStmt.Sequence, n)
	case *pg_query.Node_CompositeTypeStmt:
		// CREATE TYPE t AS (f1 int, f2 text): a type, not a table, though the parser
		// carries its name as a RangeVar.
		a.set("CREATE TYPE", DDL)
		st.ObjectType = "type"
		a.w.skip = x.CompositeTypeStmt.Typevar
		a.w.generic(n.ProtoReflect())
		a.w.skip = nil
	case *pg_query.Node_DefineStmt:
		obj := objName(x.DefineStmt.Kind)
		a.ddl("CREATE "+strings.ToUpper(obj), DDL, obj, nil, n)
	default:
		a.fallback(n)
	}
}

// fallback names a statement this file does not list from its node type
// ("CreateCastStmt" → "CREATE CAST"): CREATE/ALTER/DROP/DEFINE statements are DDL, anything
// else is Unknown so policies fail closed on it.
func (a *analyzer) fallback(n *pg_query.Node) {
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().Get(0)
	fd := m.WhichOneof(od)
	if fd == nil {
		a.set("UNKNOWN", Unknown)
		return
	}
	typeName := strings.TrimSuffix(string(fd.Message().Name()), "Stmt")
	var b strings.Builder
	for i, r := range typeName {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	kind := strings.ToUpper(b.String())
	cat := Unknown
	for _, p := range []string{"CREATE ", "ALTER ", "DROP ", "DEFINE "} {
		if strings.HasPrefix(kind, p) {
			cat = DDL
		}
	}
	if cat == Unknown {
		a.note("statement type " + typeName + " is not classified")
	}
	a.set(kind, cat)
	a.w.generic(m)
}

func (a *analyzer) copyStmt(c *pg_query.CopyStmt) {
	st, w := a.st, a.w
	a.set("COPY", Read)
	st.Program = c.IsProgram
	st.ServerFile = !c.IsProgram && c.Filename != ""
	for _, col := range c.Attlist {
		if s := col.GetString_(); s != nil {
			w.columns.add(s.Sval)
		}
	}
	if c.IsFrom {
		st.Category = Write
		w.writeTable(c.Relation)
	} else {
		st.Export = true
		if c.Relation != nil {
			w.readTable(c.Relation)
		}
		if s := c.Query.GetSelectStmt(); s != nil {
			st.HasLimit = hasLimit(s, &w.literal)
		}
		w.node(c.Query)
	}
	w.node(c.WhereClause)
	switch {
	case c.IsProgram:
		st.Category = Admin
		a.note("COPY PROGRAM runs a shell command on the database server")
	case st.ServerFile:
		st.Category = Admin
		a.note("COPY reads or writes a file on the database server")
	}
}

// adminSettings are configuration parameters whose change weakens security or auditing.
// row_security is not one: turning it off makes a query that a row security policy would
// filter fail instead (pg_dump sets it), it never shows more rows.
var adminSettings = toSet("role", "session_authorization", "session_replication_role",
	"default_transaction_read_only", "transaction_read_only",
	"lo_compat_privileges", "zero_damaged_pages", "ignore_system_indexes",
	"allow_system_table_mods", "allow_in_place_tablespaces", "local_preload_libraries",
	"session_preload_libraries", "dynamic_library_path")

// adminSetting reports whether changing the (lower-case) setting name weakens security or
// auditing.
func adminSetting(name string) bool {
	return adminSettings[name] || strings.HasPrefix(name, "log_") || strings.HasPrefix(name, "pgaudit.") || strings.HasPrefix(name, "track_")
}

func (a *analyzer) variableSet(v *pg_query.VariableSetStmt) {
	st := a.st
	name := strings.ToLower(v.Name)
	st.Setting = name
	a.checkStrings(v)
	reset := v.Kind == pg_query.VariableSetKind_VAR_RESET || v.Kind == pg_query.VariableSetKind_VAR_RESET_ALL ||
		v.Kind == pg_query.VariableSetKind_VAR_SET_DEFAULT
	prefix := "SET"
	if reset {
		prefix = "RESET"
	}
	switch {
	case name == "role":
		a.set(prefix+" ROLE", Admin)
	case name == "session_authorization":
		a.set(prefix+" SESSION AUTHORIZATION", Admin)
	case v.Kind == pg_query.VariableSetKind_VAR_SET_MULTI:
		a.set("SET "+strings.ToUpper(name), SessionCat)
	case adminSetting(name):
		a.set(prefix, Admin)
		a.note("changes " + name + ", a security- or audit-relevant setting")
	default:
		a.set(prefix, SessionCat)
	}
}

func transactionKind(k pg_query.TransactionStmtKind) string {
	switch k {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		return "BEGIN"
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		return "COMMIT"
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		return "ROLLBACK"
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return "SAVEPOINT"
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return "RELEASE SAVEPOINT"
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return "ROLLBACK TO SAVEPOINT"
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return "PREPARE TRANSACTION"
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return "COMMIT PREPARED"
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return "ROLLBACK PREPARED"
	}
	return "TRANSACTION"
}

// objNames spells object types the way SQL does where the enum name differs.
var objNames = map[pg_query.ObjectType]string{
	pg_query.ObjectType_OBJECT_MATVIEW:               "materialized view",
	pg_query.ObjectType_OBJECT_FDW:                   "foreign data wrapper",
	pg_query.ObjectType_OBJECT_FOREIGN_SERVER:        "server",
	pg_query.ObjectType_OBJECT_TSCONFIGURATION:       "text search configuration",
	pg_query.ObjectType_OBJECT_TSDICTIONARY:          "text search dictionary",
	pg_query.ObjectType_OBJECT_TSPARSER:              "text search parser",
	pg_query.ObjectType_OBJECT_TSTEMPLATE:            "text search template",
	pg_query.ObjectType_OBJECT_TABCONSTRAINT:         "constraint",
	pg_query.ObjectType_OBJECT_DOMCONSTRAINT:         "constraint",
	pg_query.ObjectType_OBJECT_OPCLASS:               "operator class",
	pg_query.ObjectType_OBJECT_OPFAMILY:              "operator family",
	pg_query.ObjectType_OBJECT_AMOP:                  "operator",
	pg_query.ObjectType_OBJECT_AMPROC:                "function",
	pg_query.ObjectType_OBJECT_STATISTIC_EXT:         "statistics",
	pg_query.ObjectType_OBJECT_USER_MAPPING:          "user mapping",
	pg_query.ObjectType_OBJECT_DEFACL:                "default privileges",
	pg_query.ObjectType_OBJECT_LARGEOBJECT:           "large object",
	pg_query.ObjectType_OBJECT_PUBLICATION_REL:       "publication",
	pg_query.ObjectType_OBJECT_ROUTINE:               "routine",
	pg_query.ObjectType_OBJECT_PARAMETER_ACL:         "parameter",
	pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE: "publication",
}

// objName is the lower-case SQL name of an object type: OBJECT_FOREIGN_TABLE → "foreign table".
func objName(t pg_query.ObjectType) string {
	if n, ok := objNames[t]; ok {
		return n
	}
	s := strings.TrimPrefix(t.String(), "OBJECT_")
	if s == "" || strings.Contains(s, "UNDEFINED") {
		return "object"
	}
	return strings.ToLower(strings.ReplaceAll(s, "_", " "))
}

// hasLimit reports whether a SELECT ends in a LIMIT or FETCH FIRST that bounds it
// (LIMIT ALL and LIMIT NULL do not).
// literal is set when the answer depended on a constant.
func hasLimit(s *pg_query.SelectStmt, literal *bool) bool {
	if s == nil || s.LimitCount == nil {
		return false
	}
	if c := s.LimitCount.GetAConst(); c != nil {
		*literal = true
		if c.Isnull {
			return false
		}
	}
	return true
}

// explainAnalyze reports whether EXPLAIN options ask to run the statement. Anything but a
// clear false counts as running it.
func explainAnalyze(opts []*pg_query.Node) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || (d.Defname != "analyze" && d.Defname != "analyse") {
			continue
		}
		if d.Arg == nil {
			return true
		}
		if v, ok := boolLiteral(d.Arg); ok && !v {
			continue
		}
		return true
	}
	return false
}

// boolLiteral reads a constant the way PostgreSQL reads a boolean option or a cast to bool.
func boolLiteral(n *pg_query.Node) (val, ok bool) {
	switch x := n.Node.(type) {
	case *pg_query.Node_Boolean:
		return x.Boolean.Boolval, true
	case *pg_query.Node_Integer:
		return x.Integer.Ival != 0, true
	case *pg_query.Node_String_:
		return boolWord(x.String_.Sval)
	case *pg_query.Node_AConst:
		switch v := x.AConst.Val.(type) {
		case *pg_query.A_Const_Boolval:
			return v.Boolval.Boolval, true
		case *pg_query.A_Const_Ival:
			return v.Ival.Ival != 0, true
		case *pg_query.A_Const_Sval:
			return boolWord(v.Sval.Sval)
		}
	}
	return false, false
}

func boolWord(s string) (val, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "t", "true", "y", "yes", "on", "1":
		return true, true
	case "f", "false", "n", "no", "off", "0":
		return false, true
	}
	return false, false
}

// settingsRow returns the setting name of SELECT ... FROM [pg_catalog.]pg_settings WHERE
// name = '<constant>' (one relation, that one condition), "" for any other SELECT.
func settingsRow(s *pg_query.SelectStmt, literal *bool) string {
	if s == nil || len(s.FromClause) != 1 || s.WhereClause == nil {
		return ""
	}
	rv := s.FromClause[0].GetRangeVar()
	if rv == nil || rv.Relname != "pg_settings" || (rv.Schemaname != "" && rv.Schemaname != "pg_catalog") {
		return ""
	}
	e := s.WhereClause.GetAExpr()
	if e == nil || e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || funcName(e.Name) != "=" {
		return ""
	}
	if !isColumn(e.Lexpr, "name") {
		return ""
	}
	*literal = true
	if c := e.Rexpr.GetAConst(); c != nil {
		if v, ok := c.Val.(*pg_query.A_Const_Sval); ok {
			return strings.ToLower(v.Sval.Sval)
		}
	}
	return ""
}

// isColumn reports whether n is a reference to the column called name (qualified or not).
func isColumn(n *pg_query.Node, name string) bool {
	cr := n.GetColumnRef()
	if cr == nil || len(cr.Fields) == 0 {
		return false
	}
	last := cr.Fields[len(cr.Fields)-1].GetString_()
	return last != nil && last.Sval == name
}

// checkStrings sets NonStandardStrings when v turns standard_conforming_strings off (or to
// a value the text does not show): PostgreSQL would then read backslashes in string
// literals as escapes, which Gatehouse's parser does not.
func (a *analyzer) checkStrings(v *pg_query.VariableSetStmt) {
	if !strings.EqualFold(v.Name, "standard_conforming_strings") {
		return
	}
	switch v.Kind {
	case pg_query.VariableSetKind_VAR_RESET, pg_query.VariableSetKind_VAR_RESET_ALL, pg_query.VariableSetKind_VAR_SET_DEFAULT:
		return // back to the server's default, on unless its configuration says otherwise
	case pg_query.VariableSetKind_VAR_SET_VALUE:
		a.w.literal = true
		if len(v.Args) == 1 {
			if on, ok := boolLiteral(v.Args[0]); ok && on {
				return
			}
		}
	}
	a.st.NonStandardStrings = true
}
