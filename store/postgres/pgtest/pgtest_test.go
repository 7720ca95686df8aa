package pgtest

import (
	"database/sql"
	"os"
	"strings"
	"testing"
)

// open connects to dsn and closes the connection when the test ends.
func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestStart checks that each call gives a separate, empty database on one
// server, and that the server does not run as root.
func TestStart(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two Starts gave the same database %s", a)
	}
	dba, dbb := open(t, a), open(t, b)
	if _, err := dba.ExecContext(t.Context(), `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatalf("create a table: %v", err)
	}
	var n int
	err := dbb.QueryRowContext(t.Context(),
		`SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'only_in_a'`).Scan(&n)
	if err != nil || n != 0 {
		t.Errorf("the second database sees %d tables of the first (%v)", n, err)
	}
	if os.Geteuid() == 0 && Shared(t).cred == nil {
		t.Error("running as root, but the server has no other user")
	}
}

// TestBadPasswordRefused checks that the server asks for the password over
// TCP, as production servers do: tests of login errors depend on it.
func TestBadPasswordRefused(t *testing.T) {
	dsn := Start(t)
	srv := Shared(t)
	bad := strings.Replace(dsn, srv.password, "wrong", 1)
	if err := open(t, bad).PingContext(t.Context()); err == nil ||
		!strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("Ping with a wrong password = %v, want a password failure", err)
	}
}

// TestKillRestart kills a server and restarts it: committed data survives the
// crash recovery, and the same DSN works again.
func TestKillRestart(t *testing.T) {
	srv := New(t)
	db := open(t, srv.CreateDatabase(t))
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("Ping of a killed server succeeded")
	}
	srv.Kill(t) // killing it again is harmless
	srv.Restart(t)
	var x int
	if err := db.QueryRowContext(ctx, `SELECT x FROM kept`).Scan(&x); err != nil || x != 42 {
		t.Fatalf("after restart: x = %d, %v; want 42", x, err)
	}
}

func TestDBName(t *testing.T) {
	tests := []struct {
		test string
		want string
	}{
		{"TestX", "t_testx_7"},
		{"TestConformance/Pagination/after_the_3rd", "t_testconformance_pagination_after_the_3rd_7"},
		{"Test-É\"; DROP", "t_test_____drop_7"},
	}
	for _, tc := range tests {
		if got := dbName(tc.test, 7); got != tc.want {
			t.Errorf("dbName(%q) = %q, want %q", tc.test, got, tc.want)
		}
	}
}

// TestNoBinaries checks the failure that a machine without PostgreSQL gets.
func TestNoBinaries(t *testing.T) {
	_, err := firstBinDir([]string{t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "install the Debian package postgresql") {
		t.Errorf("firstBinDir(empty dir) = %v, want advice to install postgresql", err)
	}
}
