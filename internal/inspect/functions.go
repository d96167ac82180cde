package inspect

import "strings"

// Function calls are where a SELECT stops being a read: a function may write, read server
// files, signal other backends, change the session's role, or run SQL given as a string.
// The inspector cannot see inside functions, so it vouches only for the built-in functions
// below. Every other function (user-defined, extension, or any function qualified with a
// schema other than pg_catalog) makes a statement Unknown so policies can fail closed.
//
// The tables below are read-only after package initialisation.
//
// Known-dangerous functions (server file access, large objects, dblink, set_config, backend
// signalling, replication and backup control) make a statement Admin: they are capabilities
// PostgreSQL itself reserves for superusers or explicitly granted roles.

// safeFuncs are built-in functions that only compute or read: no writes, no files, no
// other sessions, no SQL from strings.
var safeFuncs = toSet(
	// aggregates and window functions
	"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
	"json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or",
	"stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr",
	"covar_pop", "covar_samp", "regr_slope", "regr_intercept", "regr_count", "regr_r2",
	"percentile_cont", "percentile_disc", "mode", "rank", "dense_rank", "percent_rank",
	"cume_dist", "row_number", "ntile", "lag", "lead", "first_value", "last_value",
	"nth_value", "grouping", "any_value", "range_agg", "range_intersect_agg", "xmlagg",
	// strings
	"lower", "upper", "length", "char_length", "character_length", "octet_length",
	"bit_length", "substring", "substr", "position", "strpos", "trim", "btrim", "ltrim",
	"rtrim", "lpad", "rpad", "replace", "translate", "concat", "concat_ws", "format", "left",
	"right", "reverse", "repeat", "split_part", "initcap", "starts_with", "overlay", "ascii",
	"chr", "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode", "quote_ident",
	"quote_literal", "quote_nullable", "unistr", "normalize", "is_normalized", "convert",
	"convert_from", "convert_to", "text", "like_escape", "similar_escape", "similar_to_escape",
	// numbers
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "power",
	"pow", "exp", "ln", "log", "log10", "mod", "div", "pi", "degrees", "radians", "random",
	"random_normal", "setseed", "width_bucket", "greatest", "least", "numeric", "gcd", "lcm",
	"factorial", "scale", "min_scale", "trim_scale", "sin", "cos", "tan", "asin", "acos",
	"atan", "atan2", "float8", "int4", "int8",
	// dates and times
	"now", "current_date", "current_time", "current_timestamp", "localtime",
	"localtimestamp", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
	"timeofday", "age", "extract", "date_part", "date_trunc", "date_bin", "make_date",
	"make_time", "make_timestamp", "make_timestamptz", "make_interval", "justify_days",
	"justify_hours", "justify_interval", "isfinite", "timezone", "overlaps", "pg_sleep",
	"pg_sleep_for", "pg_sleep_until",
	// json, arrays, ranges, misc
	"coalesce", "nullif", "row_to_json", "jsonb_set", "jsonb_insert", "jsonb_pretty",
	"jsonb_strip_nulls", "json_strip_nulls", "unnest", "generate_series",
	"generate_subscripts", "cardinality", "lower_inf", "upper_inf", "isempty", "range_merge",
	"gen_random_uuid", "uuid_generate_v4", "num_nonnulls", "num_nulls", "xmlparse",
	"xmlserialize", "xpath", "xpath_exists", "xmlexists",
	// session and catalog information drivers and GUI clients ask for
	"version", "current_setting", "current_database", "current_catalog", "current_schema",
	"current_schemas", "current_user", "current_role", "session_user", "user",
	"inet_client_addr", "inet_client_port", "inet_server_addr", "inet_server_port",
	"pg_backend_pid", "pg_is_in_recovery", "pg_postmaster_start_time", "pg_conf_load_time",
	"pg_encoding_to_char", "pg_char_to_encoding", "pg_client_encoding", "format_type",
	"obj_description", "col_description", "shobj_description", "pg_typeof",
	"pg_column_size", "pg_my_temp_schema", "pg_is_other_temp_schema",
	"pg_jit_available", "pg_listening_channels", "pg_notification_queue_usage",
	"pg_current_xact_id", "txid_current", "pg_current_snapshot", "txid_current_snapshot",
	"pg_backend_memory_contexts", "pg_blocking_pids", "pg_safe_snapshot_blocking_pids",
	"pg_tablespace_location", "pg_options_to_table", "pg_settings_get_flags",
	"pg_relation_filenode", "pg_relation_filepath", "pg_filenode_relation",
	"pg_describe_object", "pg_identify_object", "pg_identify_object_as_address",
	"pg_index_column_has_property", "pg_index_has_property", "pg_indexam_has_property",
	"pg_collation_is_visible", "pg_last_committed_xact", "pg_xact_commit_timestamp",
	"pg_input_is_valid", "pg_input_error_info", "array_to_json", "to_regclass",
	"to_regtype", "to_regproc", "to_regprocedure", "to_regnamespace", "to_regrole",
	"pg_partition_tree", "pg_partition_root", "pg_partition_ancestors",
	"pg_event_trigger_ddl_commands", "pg_trigger_depth", "row_security_active",
)

// safePrefixes extend safeFuncs to families of built-in functions that only compute or read
// the catalog.
var safePrefixes = []string{
	"pg_get_", "has_", "pg_stat_get_", "pg_size_", "to_", "json_", "jsonb_", "array_",
	"string_", "regexp_", "date_", "int4range", "int8range", "numrange", "tsrange",
	"tstzrange", "daterange", "pg_relation_size", "pg_total_relation_size", "pg_table_size",
	"pg_indexes_size", "pg_database_size", "pg_tablespace_size", "pg_wal_lsn_diff",
	"pg_current_wal_", "pg_last_wal_", "bit_count", "inet", "host", "netmask", "network",
}

// writeFuncs change data or state visible to other sessions without needing special rights:
// sequences, notifications, and advisory locks (which block other sessions).
var writeFuncs = toSet("nextval", "setval", "pg_notify", "pg_advisory_lock", "pg_advisory_unlock",
	"pg_advisory_lock_shared", "pg_advisory_unlock_shared", "pg_try_advisory_lock",
	"pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
	"pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock_all")

// adminFuncs are capabilities PostgreSQL reserves for superusers or granted roles.
var adminFuncs = toSet("pg_read_file", "pg_read_binary_file", "pg_stat_file", "lo_import",
	"lo_export", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
	"pg_rotate_logfile", "set_config", "pg_promote", "pg_switch_wal", "pg_create_restore_point",
	"pg_log_backend_memory_contexts", "pg_stat_reset", "pg_stat_reset_shared",
	"pg_stat_reset_single_table_counters", "pg_stat_reset_single_function_counters",
	"pg_stat_reset_slru", "pg_stat_reset_replication_slot", "pg_stat_reset_subscription_stats",
	"pg_import_system_collations", "pg_logical_emit_message", "pg_wal_replay_pause",
	"pg_wal_replay_resume", "pg_log_standby_snapshot", "pg_sync_replication_slots", "loread",
	"lowrite")

// adminPrefixes extend adminFuncs to families of dangerous functions.
var adminPrefixes = []string{
	"pg_read_", "pg_ls_", "pg_file_", "pg_logdir_", "dblink", "lo_", "pg_replication_",
	"pg_create_", "pg_drop_replication_", "pg_copy_", "pg_logical_slot_", "pg_backup_",
	"pg_start_backup", "pg_stop_backup", "binary_upgrade_", "pg_wal_replay_",
}

// sqlFuncs run the SQL text given as their first argument. When that argument is a
// constant, the inspector inspects the SQL it holds; otherwise the call is Unknown.
var sqlFuncs = toSet("query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema")

// funcEffect is what one function call does to a statement.
type funcEffect struct {
	cat  Category
	note string
}

// classifyFunc says what calling name (lower case, possibly schema-qualified) does.
func classifyFunc(name string) funcEffect {
	base, qualified := strings.CutPrefix(name, "pg_catalog.")
	if !qualified && strings.Contains(name, ".") {
		return funcEffect{cat: Unknown, note: "function " + name + " is not a vouched-for built-in"}
	}
	switch {
	case adminFuncs[base] || hasPrefix(base, adminPrefixes):
		return funcEffect{cat: Admin, note: "function " + name + " is a privileged capability"}
	case writeFuncs[base]:
		return funcEffect{cat: Write, note: "function " + name + " changes state"}
	case safeFuncs[base] || hasPrefix(base, safePrefixes) || strings.HasSuffix(base, "_is_visible"):
		return funcEffect{cat: Read}
	}
	return funcEffect{cat: Unknown, note: "function " + name + " is not a vouched-for built-in"}
}

// VouchedRead reports whether the inspector's built-in list vouches for calling name (lower
// case, as in Statement.Functions) as a plain read: no write, no privileged capability, no
// effect outside the transaction it runs in (nextval, advisory locks and dblink are not).
func VouchedRead(name string) bool { return classifyFunc(name).cat == Read }

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func toSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// FunctionEffect says what calling a function does, as a target's own catalog knows it: ok is
// false for a name the catalog does not know (the built-in list then decides).
type FunctionEffect func(name string) (cat Category, ok bool)

// WithFunctionEffects returns st with its category re-decided by what fx says of the
// functions it calls, st itself when that changes nothing. The built-in lists of write and
// privileged functions stay authoritative (a catalog cannot make nextval or pg_read_file a
// read); for every other function the catalog's word replaces the built-in guess, both
// ways: a stable built-in the list does not name becomes a read, and a user's volatile
// function that happens to share a vouched-for name becomes unknown. The statement may be
// shared through the inspector's cache: it is never modified.
func (st *Statement) WithFunctionEffects(fx FunctionEffect) *Statement {
	if len(st.calls) == 0 || fx == nil {
		return st
	}
	cat := st.applyCalls(fx)
	if cat == st.Category {
		return st
	}
	cp := *st
	cp.Category = cat
	cp.Notes = nil
	for _, n := range st.Notes {
		if name, ok := strings.CutPrefix(n, "function "); ok {
			name, _, _ = strings.Cut(name, " is not a vouched-for built-in")
			if c, known := fx(name); known && c != Unknown {
				continue
			}
		}
		cp.Notes = append(cp.Notes, n)
	}
	if cat != Unknown && st.Category == Unknown {
		cp.Notes = append(cp.Notes, "the functions it calls are known from the target's catalog")
	}
	return &cp
}

// applyCalls is the category of st once the functions in calls count, each as fx says or,
// where fx does not know it, as the built-in list says.
func (st *Statement) applyCalls(fx FunctionEffect) Category {
	cat := st.callsBase
	for _, name := range st.calls {
		c, ok := fx(name)
		if !ok {
			c = classifyFunc(name).cat
		}
		if c == Unknown && (st.kindCat == DDL || st.kindCat == Admin) {
			continue
		}
		cat = worse(cat, c)
	}
	return cat
}
