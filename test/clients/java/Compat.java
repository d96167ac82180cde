// Drives pgJDBC (Debian libpostgresql-jdbc-java, the driver DBeaver uses) through Gatehouse
// for the compatibility tests in test/compat. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar Compat.java
// The connection comes from the PG* environment variables; COMPAT_TABLE names the table this
// client may write. Default driver settings on purpose: prepareThreshold 5 (server-side
// prepared statements from the fifth execution), binary transfer on. Prints key=value lines
// that the Go test checks; any unexpected exception exits non-zero.
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class Compat {
    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
        System.out.flush();
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null) throw new IllegalStateException("environment variable " + name + " is not set");
        return v;
    }

    public static void main(String[] args) throws Exception {
        String table = env("COMPAT_TABLE");
        props = new Properties();
        props.setProperty("user", env("PGUSER"));
        props.setProperty("password", env("PGPASSWORD"));
        props.setProperty("sslmode", env("PGSSLMODE"));
        String root = System.getenv("PGSSLROOTCERT");
        if (root != null) props.setProperty("sslrootcert", root);
        props.setProperty("ApplicationName", "gatehouse-compat-jdbc");
        url = "jdbc:postgresql://" + env("PGHOST") + ":" + env("PGPORT") + "/" + env("PGDATABASE");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            run(conn, table);
        }
    }

    static String url;
    static Properties props;

    // waitRunning waits (up to 15 s) until the upstream runs the marked statement, watching
    // from a second connection, so the cancel cannot arrive before the statement does.
    static void waitRunning(String marker) throws Exception {
        try (Connection w = DriverManager.getConnection(url, props);
             PreparedStatement ps = w.prepareStatement("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || ? || '%' AND pid <> pg_backend_pid()")) {
            long deadline = System.nanoTime() + 15_000_000_000L;
            while (System.nanoTime() < deadline) {
                ps.setString(1, marker);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getInt(1) > 0) return;
                }
                Thread.sleep(50);
            }
        }
    }

    static void run(Connection conn, String table) throws Exception {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1+1, 'héllo'")) {
            rs.next();
            out("simple", rs.getInt(1) + " " + rs.getString(2));
        }
        try (Statement st = conn.createStatement()) {
            // Multi-statement string: pgJDBC splits it and pipelines the parts in one Sync.
            boolean isResult = st.execute("SELECT 'a'; SELECT 'b'");
            StringBuilder sb = new StringBuilder();
            while (isResult) {
                try (ResultSet rs = st.getResultSet()) {
                    rs.next();
                    if (sb.length() > 0) sb.append(',');
                    sb.append(rs.getString(1));
                }
                isResult = st.getMoreResults();
            }
            out("multi", sb);
        }
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT g FROM generate_series(1, 20000) AS g")) {
            long n = 0, s = 0;
            while (rs.next()) { n++; s += rs.getLong(1); }
            out("rows", n + " " + s);
        }

        // Catalog browsing as DBeaver does it on connect: DatabaseMetaData runs pgJDBC's own
        // catalog queries (prepared, with parameters) through the proxy.
        try (ResultSet rs = conn.getMetaData().getTables(null, "public", table, new String[] {"TABLE"})) {
            out("metadata_table", rs.next() ? rs.getString("TABLE_NAME") : "missing");
        }
        try (ResultSet rs = conn.getMetaData().getColumns(null, "public", table, null)) {
            StringBuilder cols = new StringBuilder();
            while (rs.next()) {
                if (cols.length() > 0) cols.append(',');
                cols.append(rs.getString("COLUMN_NAME")).append(':').append(rs.getString("TYPE_NAME"));
            }
            out("metadata_columns", cols);
        }
        out("server_version", conn.getMetaData().getDatabaseMajorVersion() >= 12);

        // The same prepared statement 8 times: from the 5th run pgJDBC switches to a named
        // server-side statement with binary results.
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int + 1, ?::text || '!', ?::int8 * 2, ?::float8, ?::timestamptz")) {
            String last = "";
            boolean serverPrepared = false;
            int good = 0;
            for (int i = 0; i < 8; i++) {
                ps.setInt(1, 41);
                ps.setString(2, "hi");
                ps.setLong(3, 21L);
                ps.setDouble(4, 1.5);
                ps.setTimestamp(5, java.sql.Timestamp.valueOf("2024-02-29 12:34:56"));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    last = rs.getInt(1) + " " + rs.getString(2);
                    if (last.equals("42 hi!") && rs.getLong(3) == 42L && rs.getDouble(4) == 1.5
                            && rs.getTimestamp(5).equals(java.sql.Timestamp.valueOf("2024-02-29 12:34:56"))) good++;
                }
                serverPrepared = ps.unwrap(PGStatement.class).isUseServerPrepare();
            }
            out("prepared", last);
            out("prepared_all_runs", good);
            out("server_prepared", serverPrepared);
        }
        // Streaming through a server-prepared statement with a fetch size (portal suspended
        // and resumed with Execute row limits) inside a transaction.
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement("SELECT g FROM generate_series(1, ?) AS g")) {
            ps.setFetchSize(1000);
            long n = 0, s = 0;
            for (int run = 0; run < 6; run++) {
                ps.setInt(1, 20000);
                n = 0; s = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) { n++; s += rs.getLong(1); }
                }
            }
            out("fetch_size_rows", n + " " + s);
        }
        conn.commit();

        // Transaction rolled back, then a committed row; a savepoint rolled back in between.
        try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
            ins.setInt(1, 11);
            ins.setString(2, "gone");
            ins.executeUpdate();
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM " + table + " WHERE id = 11")) {
                rs.next();
                out("tx_inside", rs.getInt(1));
            }
            conn.rollback();
            ins.setInt(1, 10);
            ins.setString(2, "kept");
            ins.executeUpdate();
            Savepoint sp = conn.setSavepoint();
            ins.setInt(1, 12);
            ins.setString(2, "savepoint-gone");
            ins.executeUpdate();
            conn.rollback(sp);
            conn.commit();
        }
        // Batch insert (pipelined executions), rolled back.
        try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
            for (int i = 100; i < 110; i++) {
                ins.setInt(1, i);
                ins.setString(2, "batch");
                ins.addBatch();
            }
            int[] counts = ins.executeBatch();
            out("batch", counts.length);
            conn.rollback();
        }
        conn.setAutoCommit(true);

        // COPY in and out through CopyManager.
        CopyManager cm = conn.unwrap(PGConnection.class).getCopyAPI();
        long copied = cm.copyIn("COPY " + table + " FROM STDIN WITH (FORMAT csv)", new StringReader("1,c1\n2,c2\n3,c3\n"));
        out("copy_in", copied);
        StringWriter w = new StringWriter();
        cm.copyOut("COPY (SELECT id, name FROM " + table + " WHERE id < 10 ORDER BY id) TO STDOUT WITH (FORMAT csv)", w);
        for (String line : w.toString().split("\n")) out("copy_out", line);

        // Errors, then recovery on the same connection.
        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT 1/0");
            out("error", "none");
        } catch (SQLException e) {
            out("error", e.getSQLState());
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM no_such_table WHERE x = ?")) {
            ps.setInt(1, 1);
            ps.executeQuery();
            out("error_parse", "none");
        } catch (SQLException e) {
            out("error_parse", e.getSQLState());
        }
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 'ok'")) {
            rs.next();
            out("recovered", rs.getString(1));
        }

        // The deny path (only when Gatehouse enforces the compat policy): 42501, also for a
        // prepared statement run past prepareThreshold; the connection stays usable.
        if ("1".equals(System.getenv("COMPAT_DENY"))) {
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM compat_forbidden");
                out("deny", "none");
            } catch (SQLException e) {
                out("deny", e.getSQLState());
            }
            String states = "";
            try (PreparedStatement ps = conn.prepareStatement("SELECT id FROM compat_forbidden WHERE id = ?")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 1);
                    try {
                        ps.executeQuery().close();
                        states = "none";
                    } catch (SQLException e) {
                        if (!states.isEmpty() && !states.equals(e.getSQLState())) states = "mixed";
                        else states = e.getSQLState();
                    }
                }
            }
            out("deny_prepared", states);
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 'ok'")) {
                rs.next();
                out("after_deny", rs.getString(1));
            }
        }

        // Statement.cancel() from another thread: a CancelRequest with the BackendKeyData.
        try (Statement st = conn.createStatement()) {
            Thread canceller = new Thread(() -> {
                try {
                    waitRunning("jdbc-cancel");
                    st.cancel();
                } catch (Exception e) {
                    out("cancel_thread_error", e);
                }
            });
            canceller.start();
            long start = System.nanoTime();
            try {
                st.executeQuery("SELECT pg_sleep(30), 'jdbc-cancel'");
                out("cancel", "none");
            } catch (SQLException e) {
                out("cancel", e.getSQLState());
            }
            canceller.join();
            out("cancel_fast", (System.nanoTime() - start) < 10_000_000_000L);
        }
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 'ok'")) {
            rs.next();
            out("after_cancel", rs.getString(1));
        }
    }
}
