package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func openDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mysqlErrNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// TestGoDriver runs github.com/go-sql-driver/mysql through the proxy.
func TestGoDriver(t *testing.T) {
	e := newEnv(t, nil)
	db := openDB(t, e.dsn("shop.u", "pw", "app", "multiStatements=true&allowAllFiles=true&maxAllowedPacket=0"))
	ctx := context.Background()
	mustExec(t, db, "DROP TABLE IF EXISTS gd_items, gd_blobs, gd_load")
	mustExec(t, db, "CREATE TABLE gd_items (id INT PRIMARY KEY, name VARCHAR(50))")

	t.Run("select", func(t *testing.T) {
		var v, user string
		if err := db.QueryRow("SELECT VERSION(), CURRENT_USER()").Scan(&v, &user); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(v, "MariaDB") || user != "u@%" {
			t.Fatalf("version %q user %q", v, user)
		}
	})
	t.Run("prepared", func(t *testing.T) {
		st, err := db.Prepare("INSERT INTO gd_items VALUES (?, ?)")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := range 20 {
			if _, err := st.Exec(i, fmt.Sprintf("item-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		var name string
		if err := db.QueryRow("SELECT name FROM gd_items WHERE id = ?", 7).Scan(&name); err != nil || name != "item-7" {
			t.Fatalf("got %q, %v", name, err)
		}
	})
	t.Run("multi-statements", func(t *testing.T) {
		mustExec(t, db, "UPDATE gd_items SET name='x' WHERE id=1; UPDATE gd_items SET name='y' WHERE id=2; DELETE FROM gd_items WHERE id=19")
		rows, err := db.Query("SELECT COUNT(*) FROM gd_items; SELECT name FROM gd_items WHERE id=2")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n int
		var s string
		rows.Next()
		rows.Scan(&n)
		if !rows.NextResultSet() || !rows.Next() {
			t.Fatalf("no second result set: %v", rows.Err())
		}
		rows.Scan(&s)
		if n != 19 || s != "y" {
			t.Fatalf("count %d name %q", n, s)
		}
	})
	t.Run("transactions", func(t *testing.T) {
		testTransactions(t, db)
	})
	t.Run("blob-16MiB", func(t *testing.T) {
		testBlob(t, db)
	})
	t.Run("load-data-local-infile", func(t *testing.T) {
		testLoadData(t, db)
	})
	t.Run("wrong-database", func(t *testing.T) {
		err := openDB(t, e.dsn("shop.u", "pw", "nosuchdb", "")).PingContext(ctx)
		if mysqlErrNumber(err) != 1049 || !strings.Contains(err.Error(), "nosuchdb") {
			t.Fatalf("want MariaDB's 1049 Unknown database, got %v", err)
		}
		if e.waker.wakes("p-shop") == 0 {
			t.Fatal("wake not called")
		}
	})
	t.Run("tcp-backend", func(t *testing.T) {
		var n int
		if err := openDB(t, e.dsn("tcpshop.u", "pw", "app", "")).QueryRow("SELECT COUNT(*) FROM gd_items").Scan(&n); err != nil || n != 19 {
			t.Fatalf("got %d, %v", n, err)
		}
	})
	t.Run("role-with-dot", func(t *testing.T) {
		var user string
		if err := openDB(t, e.dsn("shop.a.b", "dotted", "", "")).QueryRow("SELECT CURRENT_USER()").Scan(&user); err != nil || user != "a.b@%" {
			t.Fatalf("got %q, %v", user, err)
		}
	})
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func testTransactions(t *testing.T, db *sql.DB) {
	mustExec(t, db, "CREATE TABLE IF NOT EXISTS gd_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec("INSERT INTO gd_tx VALUES (1)")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	tx, _ = db.Begin()
	tx.Exec("INSERT INTO gd_tx VALUES (2)")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var n, id int
	db.QueryRow("SELECT COUNT(*), MAX(id) FROM gd_tx").Scan(&n, &id)
	if n != 1 || id != 2 {
		t.Fatalf("after rollback+commit: %d rows, max %d", n, id)
	}
}

// testBlob round-trips 16 MiB, which makes the client send a packet of
// more than 16 MiB (continuation frames) through the command parser.
func testBlob(t *testing.T, db *sql.DB) {
	mustExec(t, db, "CREATE TABLE gd_blobs (id INT PRIMARY KEY, b LONGBLOB)")
	blob := make([]byte, 16<<20)
	rand.Read(blob)
	mustExec(t, db, "INSERT INTO gd_blobs VALUES (1, ?)", blob)
	var got []byte
	if err := db.QueryRow("SELECT b FROM gd_blobs WHERE id = ?", 1).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatalf("blob differs: %d bytes back", len(got))
	}
	// The text protocol as well, and the connection still works afterwards.
	var n int
	if err := db.QueryRow("SELECT LENGTH(b) FROM gd_blobs WHERE id = 1").Scan(&n); err != nil || n != 16<<20 {
		t.Fatalf("length %d, %v", n, err)
	}
}

// testLoadData sends enough LOCAL INFILE packets for the sequence id to
// wrap around to 0, which must not be taken for a new command.
func testLoadData(t *testing.T, db *sql.DB) {
	mustExec(t, db, "CREATE TABLE gd_load (id INT PRIMARY KEY, s VARCHAR(100))")
	path := filepath.Join(t.TempDir(), "rows.csv")
	var b strings.Builder
	const rows = 100000
	for i := range rows {
		fmt.Fprintf(&b, "%d,KILL QUERY %d padding padding padding\n", i, 1_000_000_001+i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE gd_load FIELDS TERMINATED BY ','", path))
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM gd_load").Scan(&n); err != nil || n != rows {
		t.Fatalf("loaded %d rows, %v", n, err)
	}
}

// TestGoDriverTLS uses a custom tls.Config that verifies the proxy's
// self-signed certificate, and SNI routing.
func TestGoDriverTLS(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequireTLS = true; c.Domain = "db.test" })
	pem, err := os.ReadFile(filepath.Join(sharedData, selfSignedCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	mysql.RegisterTLSConfig("proxy-verify", &tls.Config{RootCAs: pool, ServerName: "localhost"})
	mysql.RegisterTLSConfig("proxy-sni", &tls.Config{InsecureSkipVerify: true, ServerName: "shop.db.test"})

	var user string
	if err := openDB(t, e.dsn("shop.u", "pw", "", "tls=proxy-verify")).QueryRow("SELECT CURRENT_USER()").Scan(&user); err != nil {
		t.Fatalf("verified TLS: %v", err)
	}
	for _, u := range []string{"u", "shop.u"} {
		if err := openDB(t, e.dsn(u, "pw", "", "tls=proxy-sni")).QueryRow("SELECT CURRENT_USER()").Scan(&user); err != nil || user != "u@%" {
			t.Fatalf("SNI routing as %q: %q %v", u, user, err)
		}
	}
	err = openDB(t, e.dsn("shop.u", "pw", "", "")).Ping()
	if mysqlErrNumber(err) != 3159 {
		t.Fatalf("plain login with RequireTLS: want 3159, got %v", err)
	}
	if e.srv.Count(CountTLSRequired) != 1 {
		t.Fatalf("tls_required = %d", e.srv.Count(CountTLSRequired))
	}
}

// TestCapabilitiesEndToEnd exercises advertised capabilities the other tests
// do not: CLIENT_FOUND_ROWS, and CLIENT_PS_MULTI_RESULTS (a prepared CALL
// returning two result sets).
func TestCapabilitiesEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	db := openDB(t, e.dsn("shop.u", "pw", "app", "clientFoundRows=true&multiStatements=true"))
	mustExec(t, db, "DROP TABLE IF EXISTS ce_t; DROP PROCEDURE IF EXISTS ce_p")
	mustExec(t, db, "CREATE TABLE ce_t (id INT PRIMARY KEY, v INT); INSERT INTO ce_t VALUES (1, 1)")
	res, err := db.Exec("UPDATE ce_t SET v = 1 WHERE id = 1")
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("CLIENT_FOUND_ROWS: %d rows, %v", n, err)
	}
	mustExec(t, db, "CREATE PROCEDURE ce_p() BEGIN SELECT 1; SELECT 2; END")
	st, err := db.Prepare("CALL ce_p()")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.Query()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int
	for {
		for rows.Next() {
			var v int
			rows.Scan(&v)
			got = append(got, v)
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("prepared CALL results %v, %v", got, rows.Err())
	}
}

// TestSlowWake: the handshake timeout covers the client's part only; a
// client waits on its login for as long as the compute takes to start.
func TestSlowWake(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	e.waker.delay = 600 * time.Millisecond
	start := time.Now()
	if err := openDB(t, e.dsn("shop.u", "pw", "", "")).Ping(); err != nil {
		t.Fatalf("login during a slow wake: %v", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("login took %s, shorter than the wake", d)
	}
}
