// Drives pgJDBC's DatabaseMetaData (the calls DBeaver makes to draw its navigator) through
// Gatehouse for test/e2e's production-tools test. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar Metadata.java
// The connection comes from the PG* environment variables; META_TABLE names a table with a
// primary key, a foreign key and an index, META_FUNCTION a function. Prints one
// "call=rows" line per call (rows it returned), then "masked=<email of the first row>" read
// through the same connection; an SQLException is printed as "call=ERROR <sqlstate> <message>".
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Metadata {
    interface Call {
        ResultSet run(DatabaseMetaData md) throws SQLException;
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null) throw new IllegalStateException("environment variable " + name + " is not set");
        return v;
    }

    static void count(DatabaseMetaData md, String name, Call c) {
        try (ResultSet rs = c.run(md)) {
            int n = 0;
            while (rs.next()) n++;
            System.out.println(name + "=" + n);
        } catch (SQLException e) {
            System.out.println(name + "=ERROR " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
        }
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String table = env("META_TABLE"), fk = env("META_FK_TABLE"), fn = env("META_FUNCTION");
        Properties props = new Properties();
        props.setProperty("user", env("PGUSER"));
        props.setProperty("password", env("PGPASSWORD"));
        props.setProperty("sslmode", env("PGSSLMODE"));
        String root = System.getenv("PGSSLROOTCERT");
        if (root != null) props.setProperty("sslrootcert", root);
        props.setProperty("ApplicationName", "gatehouse-e2e-jdbc-metadata");
        String url = "jdbc:postgresql://" + env("PGHOST") + ":" + env("PGPORT") + "/" + env("PGDATABASE");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = conn.getMetaData();
            count(md, "getTables", m -> m.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"}));
            count(md, "getColumns", m -> m.getColumns(null, "public", table, "%"));
            count(md, "getPrimaryKeys", m -> m.getPrimaryKeys(null, "public", table));
            count(md, "getImportedKeys", m -> m.getImportedKeys(null, "public", fk));
            count(md, "getIndexInfo", m -> m.getIndexInfo(null, "public", table, false, true));
            count(md, "getProcedures", m -> m.getProcedures(null, "public", "%"));
            count(md, "getFunctions", m -> m.getFunctions(null, "public", fn));
            count(md, "getTypeInfo", m -> m.getTypeInfo());
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT email FROM " + table + " ORDER BY id LIMIT 1")) {
                rs.next();
                System.out.println("masked=" + rs.getString(1));
            } catch (SQLException e) {
                System.out.println("masked=ERROR " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
            }
        }
    }
}
