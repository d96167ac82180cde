package classify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/inspect"
)

// What a function call does is read from the target's own catalog rather than from a fixed
// list, so psql's \d, JDBC's DatabaseMetaData and GUI tools, which call whatever built-ins
// their authors chose, are reads wherever PostgreSQL itself says so:
//
//   - PostgreSQL refuses writes inside functions declared IMMUTABLE or STABLE, so
//     pg_proc.provolatile 'i' or 's' means the call only reads.
//   - VOLATILE built-ins are named one by one in volatileBuiltins: reads (random(),
//     clock_timestamp(), currval(), sizes, ...) and effects (sequences, advisory locks,
//     notifications, settings, backend signals, large objects, files, replication).
//     Any other VOLATILE built-in is unknown.
//   - A user's VOLATILE function is unknown: it may write. So is a SECURITY DEFINER one,
//     whatever it declares: it runs with its owner's rights.
//
// An unqualified name counts as the worst of every function of that name in the database,
// in any schema: the search path and the argument types decide which one runs, and the
// session may change the search path.

// volatileBuiltins are the VOLATILE functions of pg_catalog whose effect is known. The
// inspector's own lists of write and privileged functions stay authoritative for the names
// they hold (inspect.Statement.WithFunctionEffects); the effects here agree with them.
var volatileBuiltins = map[string]inspect.Category{
	// reads: values that change between calls, sizes, positions, status
	"random": inspect.Read, "setseed": inspect.Read, "clock_timestamp": inspect.Read,
	"timeofday": inspect.Read, "gen_random_uuid": inspect.Read, "currval": inspect.Read,
	"lastval": inspect.Read, "pg_sleep": inspect.Read, "pg_sleep_for": inspect.Read,
	"pg_sleep_until": inspect.Read, "current_query": inspect.Read,
	"pg_blocking_pids": inspect.Read, "pg_safe_snapshot_blocking_pids": inspect.Read,
	"pg_is_in_recovery": inspect.Read, "pg_jit_available": inspect.Read,
	"pg_database_size": inspect.Read, "pg_relation_size": inspect.Read,
	"pg_table_size": inspect.Read, "pg_indexes_size": inspect.Read,
	"pg_total_relation_size": inspect.Read, "pg_tablespace_size": inspect.Read,
	"pg_current_wal_lsn": inspect.Read, "pg_current_wal_insert_lsn": inspect.Read,
	"pg_current_wal_flush_lsn": inspect.Read, "pg_last_wal_receive_lsn": inspect.Read,
	"pg_last_wal_replay_lsn": inspect.Read, "pg_last_xact_replay_timestamp": inspect.Read,
	"pg_is_wal_replay_paused": inspect.Read, "pg_get_wal_replay_pause_state": inspect.Read,
	"pg_last_committed_xact": inspect.Read, "pg_xact_commit_timestamp": inspect.Read,
	"pg_xact_commit_timestamp_origin": inspect.Read, "pg_xact_status": inspect.Read,
	"txid_status": inspect.Read, "pg_lock_status": inspect.Read,
	"pg_notification_queue_usage": inspect.Read, "pg_partition_tree": inspect.Read,
	"pg_partition_ancestors": inspect.Read, "pg_stat_clear_snapshot": inspect.Read,
	"pg_stat_have_stats": inspect.Read, "pg_sequence_last_value": inspect.Read,
	"pg_collation_actual_version": inspect.Read, "pg_database_collation_actual_version": inspect.Read,
	"pg_prepared_xact": inspect.Read, "pg_get_backend_memory_contexts": inspect.Read,
	"pg_get_multixact_members": inspect.Read, "pg_control_checkpoint": inspect.Read,
	"pg_control_init": inspect.Read, "pg_control_recovery": inspect.Read,
	"pg_control_system": inspect.Read, "pg_get_wal_resource_managers": inspect.Read,
	"pg_stat_get_recovery_prefetch": inspect.Read, "pg_stat_get_xact_blocks_fetched": inspect.Read,
	"pg_stat_get_xact_blocks_hit": inspect.Read, "pg_stat_get_xact_function_calls": inspect.Read,
	"pg_stat_get_xact_function_self_time": inspect.Read, "pg_stat_get_xact_function_total_time": inspect.Read,
	"pg_stat_get_xact_numscans": inspect.Read, "pg_stat_get_xact_tuples_deleted": inspect.Read,
	"pg_stat_get_xact_tuples_fetched": inspect.Read, "pg_stat_get_xact_tuples_hot_updated": inspect.Read,
	"pg_stat_get_xact_tuples_inserted": inspect.Read, "pg_stat_get_xact_tuples_returned": inspect.Read,
	"pg_stat_get_xact_tuples_updated": inspect.Read,

	// effects other sessions see, without special rights
	"nextval": inspect.Write, "setval": inspect.Write, "pg_notify": inspect.Write,
	"pg_advisory_lock": inspect.Write, "pg_advisory_lock_shared": inspect.Write,
	"pg_advisory_unlock": inspect.Write, "pg_advisory_unlock_shared": inspect.Write,
	"pg_advisory_unlock_all": inspect.Write, "pg_advisory_xact_lock": inspect.Write,
	"pg_advisory_xact_lock_shared": inspect.Write, "pg_try_advisory_lock": inspect.Write,
	"pg_try_advisory_lock_shared": inspect.Write, "pg_try_advisory_xact_lock": inspect.Write,
	"pg_try_advisory_xact_lock_shared": inspect.Write, "brin_summarize_range": inspect.Write,
	"brin_summarize_new_values": inspect.Write, "brin_desummarize_range": inspect.Write,
	"gin_clean_pending_list": inspect.Write,

	// privileged capabilities: settings, other backends, server configuration, large
	// objects, files and programs, replication and backups
	"set_config": inspect.Admin, "pg_terminate_backend": inspect.Admin,
	"pg_cancel_backend": inspect.Admin, "pg_reload_conf": inspect.Admin,
	"pg_rotate_logfile": inspect.Admin, "pg_rotate_logfile_old": inspect.Admin,
	"pg_log_backend_memory_contexts": inspect.Admin, "pg_promote": inspect.Admin,
	"pg_switch_wal": inspect.Admin, "pg_create_restore_point": inspect.Admin,
	"pg_backup_start": inspect.Admin, "pg_backup_stop": inspect.Admin,
	"pg_wal_replay_pause": inspect.Admin, "pg_wal_replay_resume": inspect.Admin,
	"pg_import_system_collations": inspect.Admin, "pg_logical_emit_message": inspect.Admin,
	"pg_read_file": inspect.Admin, "pg_read_file_old": inspect.Admin,
	"pg_read_binary_file": inspect.Admin, "pg_stat_file": inspect.Admin,
	"pg_ls_dir": inspect.Admin, "pg_ls_logdir": inspect.Admin, "pg_ls_waldir": inspect.Admin,
	"pg_ls_tmpdir": inspect.Admin, "pg_ls_archive_statusdir": inspect.Admin,
	"pg_ls_logicalsnapdir": inspect.Admin, "pg_ls_logicalmapdir": inspect.Admin,
	"pg_ls_replslotdir": inspect.Admin, "pg_current_logfile": inspect.Admin,
	"pg_hba_file_rules": inspect.Admin, "pg_ident_file_mappings": inspect.Admin,
	"pg_show_all_file_settings": inspect.Admin, "pg_stat_reset": inspect.Admin,
	"pg_stat_reset_shared": inspect.Admin, "pg_stat_reset_single_table_counters": inspect.Admin,
	"pg_stat_reset_single_function_counters": inspect.Admin, "pg_stat_reset_slru": inspect.Admin,
	"pg_stat_reset_replication_slot": inspect.Admin, "pg_stat_reset_subscription_stats": inspect.Admin,
	"lo_import": inspect.Admin, "lo_export": inspect.Admin, "lo_creat": inspect.Admin,
	"lo_create": inspect.Admin, "lo_open": inspect.Admin, "lo_close": inspect.Admin,
	"lo_unlink": inspect.Admin, "lo_put": inspect.Admin, "lo_get": inspect.Admin,
	"lo_from_bytea": inspect.Admin, "lo_lseek": inspect.Admin, "lo_lseek64": inspect.Admin,
	"lo_tell": inspect.Admin, "lo_tell64": inspect.Admin, "lo_truncate": inspect.Admin,
	"lo_truncate64": inspect.Admin, "loread": inspect.Admin, "lowrite": inspect.Admin,
	"query_to_xml": inspect.Admin, "query_to_xmlschema": inspect.Admin,
	"query_to_xml_and_xmlschema": inspect.Admin, "cursor_to_xml": inspect.Admin,
	"cursor_to_xmlschema": inspect.Admin, "ts_stat": inspect.Admin,
}

// funcRank orders effects, worst last, as the inspector does.
var funcRank = map[inspect.Category]int{inspect.Read: 1, inspect.Write: 2, inspect.DDL: 3, inspect.Admin: 4, inspect.Unknown: 5}

// functionEffects maps a function name, as a statement spells it ("lower_inc",
// "pg_catalog.lower_inc", "app.f"), to the worst effect among the functions it can name.
type functionEffects map[string]inspect.Category

func (f functionEffects) add(key string, c inspect.Category) {
	if old, ok := f[key]; !ok || funcRank[c] > funcRank[old] {
		f[key] = c
	}
}

// effectOf is what calling one pg_proc entry does.
func effectOf(schema, name, volatility string, secdef bool) inspect.Category {
	if schema == "pg_catalog" {
		if c, ok := volatileBuiltins[name]; ok {
			return c
		}
	}
	switch {
	case secdef:
		return inspect.Unknown
	case volatility == "i" || volatility == "s":
		return inspect.Read
	}
	return inspect.Unknown
}

// scanFunctions reads every function of the database conn is connected to.
func scanFunctions(ctx context.Context, conn *pgx.Conn) (functionEffects, error) {
	rows, err := conn.Query(ctx, `
SELECT n.nspname, p.proname, p.provolatile::text, p.prosecdef
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace`)
	if err != nil {
		return nil, fmt.Errorf("read function catalog: %w", err)
	}
	defer rows.Close()
	fx := make(functionEffects, 6000)
	var schema, name, vol string
	var secdef bool
	for rows.Next() {
		if err := rows.Scan(&schema, &name, &vol, &secdef); err != nil {
			return nil, fmt.Errorf("read function catalog: %w", err)
		}
		c := effectOf(schema, name, vol, secdef)
		fx.add(schema+"."+name, c)
		fx.add(name, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read function catalog: %w", err)
	}
	return fx, nil
}

// FunctionEffect says what calling the function name (as a statement spells it) does in the
// scanned database; ok is false when the snapshot knows no function of that name.
func (s *Snapshot) FunctionEffect(name string) (c inspect.Category, ok bool) {
	if s == nil || s.functions == nil {
		return "", false
	}
	c, ok = s.functions[name]
	return c, ok
}

// FunctionEffects implements gate.Catalog: what calling a function does in target, from its
// current snapshot; nil when the target cannot be scanned (the inspector's built-in list
// then decides alone).
func (c *Catalog) FunctionEffects(ctx context.Context, target string) inspect.FunctionEffect {
	snap, _ := c.Snapshot(ctx, target)
	if snap == nil || snap.functions == nil {
		return nil
	}
	return snap.FunctionEffect
}
