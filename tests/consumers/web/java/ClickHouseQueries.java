import com.clickhouse.client.api.Client;
import com.clickhouse.client.api.metadata.TableSchema;
import com.clickhouse.client.api.query.GenericRecord;
import com.clickhouse.client.api.query.Records;
import com.clickhouse.data.ClickHouseColumn;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

/**
 * ClickHouse's official Java clients, as an analyst's program would use them: it connects and runs each statement
 * read from standard input (statements are separated by a line holding only ";").
 *
 * Arguments: ENDPOINT USER PASSWORD DATABASE. An endpoint "jdbc:clickhouse:..." goes through the JDBC driver
 * (clickhouse-jdbc, as DBeaver and other JDBC tools use it), any other ("http://host:port/") through client-v2.
 * For each statement it prints "result", the column names, each row, and "end", tab-separated, values as the
 * client's getString gives them (a tab, newline or backslash in a value escaped as \t, \n, \\; NULL as \N); or
 * "error", a tab and the server's message on one line.
 */
public final class ClickHouseQueries {
    private ClickHouseQueries() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: ClickHouseQueries ENDPOINT USER PASSWORD DATABASE < statements");
            System.exit(2);
        }
        List<String> statements = read();
        StringBuilder out = new StringBuilder();
        if (args[0].startsWith("jdbc:")) {
            jdbc(args, statements, out);
        } else {
            client(args, statements, out);
        }
        System.out.print(out);
        System.out.flush();
    }

    private static void client(String[] args, List<String> statements, StringBuilder out) throws Exception {
        try (Client client = new Client.Builder().addEndpoint(args[0]).setUsername(args[1]).setPassword(args[2])
                .setDefaultDatabase(args[3]).build()) {
            for (String statement : statements) {
                try (Records records = client.queryRecords(statement).get(120, TimeUnit.SECONDS)) {
                    TableSchema schema = records.getSchema();
                    List<String> names = new ArrayList<>();
                    for (ClickHouseColumn column : schema.getColumns()) {
                        names.add(column.getColumnName());
                    }
                    List<List<String>> rows = new ArrayList<>();
                    for (GenericRecord record : records) {
                        List<String> values = new ArrayList<>();
                        for (int i = 1; i <= names.size(); i++) {
                            values.add(record.getString(i));
                        }
                        rows.add(values);
                    }
                    answer(names, rows, out);
                } catch (Exception exc) {
                    error(exc, out);
                }
            }
        }
    }

    private static void jdbc(String[] args, List<String> statements, StringBuilder out) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", args[2]);
        String url = args[0].endsWith("/") ? args[0] + args[3] : args[0] + "/" + args[3];
        Connection opened;
        try {
            opened = DriverManager.getConnection(url, properties);
        } catch (Exception exc) {  // refused on connecting: each statement's answer is that refusal
            for (int i = 0; i < statements.size(); i++) {
                error(exc, out);
            }
            return;
        }
        try (Connection connection = opened) {
            for (String statement : statements) {
                try (Statement jdbc = connection.createStatement(); ResultSet result = jdbc.executeQuery(statement)) {
                    ResultSetMetaData meta = result.getMetaData();
                    List<String> names = new ArrayList<>();
                    for (int i = 1; i <= meta.getColumnCount(); i++) {
                        names.add(meta.getColumnLabel(i));
                    }
                    List<List<String>> rows = new ArrayList<>();
                    while (result.next()) {
                        List<String> values = new ArrayList<>();
                        for (int i = 1; i <= names.size(); i++) {
                            values.add(result.getString(i));
                        }
                        rows.add(values);
                    }
                    answer(names, rows, out);
                } catch (Exception exc) {
                    error(exc, out);
                }
            }
        }
    }

    private static void answer(List<String> names, List<List<String>> rows, StringBuilder out) {
        out.append("result\n").append(line(names));
        for (List<String> row : rows) {
            out.append(line(row));
        }
        out.append("end\n");
    }

    private static void error(Exception exc, StringBuilder out) {
        Throwable cause = exc;
        while (cause.getCause() != null) {
            cause = cause.getCause();
        }
        out.append("error\t").append(escape(String.valueOf(cause.getMessage()))).append('\n');
    }

    private static String line(List<String> values) {
        List<String> escaped = new ArrayList<>();
        for (String value : values) {
            escaped.add(escape(value));
        }
        return String.join("\t", escaped) + "\n";
    }

    private static List<String> read() throws Exception {
        List<String> statements = new ArrayList<>();
        StringBuilder current = new StringBuilder();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.equals(";")) {
                statements.add(current.toString());
                current.setLength(0);
            } else {
                current.append(line).append('\n');
            }
        }
        if (!current.toString().isBlank()) {
            statements.add(current.toString());
        }
        return statements;
    }

    private static String escape(String value) {
        if (value == null) {
            return "\\N";
        }
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n");
    }
}
