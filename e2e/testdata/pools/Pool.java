import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;

/**
 * A JDBC connection pool that stays open, on MariaDB Connector/J with
 * server-side prepared statements: it runs each line of stdin as a
 * prepared query on every one of its connections and prints one line of
 * results (or ERROR ...) per query. Arguments: host port user password.
 */
public class Pool {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://" + args[0] + ":" + args[1] + "/app?useServerPrepStmts=true";
        List<Connection> pool = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Connection c = DriverManager.getConnection(url, args[2], args[3]);
            try (PreparedStatement s = c.prepareStatement("SET @who := ?")) {
                s.setString(1, "java" + i);
                s.execute();
            }
            pool.add(c);
        }
        System.out.println("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            List<String> out = new ArrayList<>();
            for (Connection c : pool) {
                try (PreparedStatement s = c.prepareStatement(line.trim()); ResultSet r = s.executeQuery()) {
                    r.next();
                    out.add(r.getString(1));
                } catch (Exception e) {
                    out.add("ERROR " + e.toString().replace('\n', ' '));
                }
            }
            System.out.println(String.join(" | ", out));
        }
    }
}
