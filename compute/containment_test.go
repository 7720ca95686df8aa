package compute_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// mysqlCode returns the MariaDB error number of err, or 0.
func mysqlCode(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// TestTenantCannotReachTheHost runs, as a project's owner role, what an
// attacker tried: writing files of the host through the general log,
// resizing the compute, and writing the grant tables to give itself more.
func TestTenantCannotReachTheHost(t *testing.T) {
	e := newEnv(t, "")
	_, c, pw := e.project(t, "shop")
	db := rootDB(t, c.Address, pw)
	target := filepath.Join(e.dir, "written-by-tenant")
	refused := []string{
		"SET GLOBAL general_log_file='" + target + "'",
		"SET GLOBAL general_log=ON",
		"SET GLOBAL slow_query_log_file='" + target + "'",
		"SET GLOBAL innodb_buffer_pool_size=2147483648",
		"SET GLOBAL max_connections=100000",
		"SET GLOBAL read_only=OFF",
		"SELECT 'x' INTO OUTFILE '" + target + "'",
		"UPDATE mysql.global_priv SET Priv=Priv",
		"INSERT INTO mysql.proc SELECT * FROM mysql.proc LIMIT 0",
		"DROP TABLE mysql.db",
		"SHUTDOWN",
		"FLUSH PRIVILEGES",
	}
	for _, q := range refused {
		if _, err := db.Exec(q); err == nil {
			t.Errorf("%s: accepted, want refused", q)
		} else if code := mysqlCode(err); code != 1227 && code != 1142 && code != 1044 && code != 1045 {
			t.Errorf("%s: %v, want a privilege error", q, err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("the tenant wrote %s: %v", target, err)
	}
	var loaded sql.NullString
	if err := db.QueryRow("SELECT LOAD_FILE('/etc/passwd')").Scan(&loaded); err != nil || loaded.Valid {
		t.Fatalf("LOAD_FILE: %v, %v", loaded, err)
	}
	// A session cannot raise its own memory caps past the compute's.
	var heap int64
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("SET SESSION max_heap_table_size=2147483648"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT @@max_heap_table_size").Scan(&heap); err != nil || heap >= 1<<30 {
		t.Fatalf("max_heap_table_size raised to %d (%v)", heap, err)
	}
	checkNotRoot(t, backendPID(t, e.drv, c.ID))
}

// TestTenantCannotTouchAccounts: a tenant cannot make, change or take
// over accounts (CREATE USER covers RENAME USER of the daemon's account,
// which would put every privilege in its hands), cannot reach MariaDB's own
// sys routines, and cannot put a table outside its datadir.
func TestTenantCannotTouchAccounts(t *testing.T) {
	e := newEnv(t, "")
	_, c, pw := e.project(t, "shop")
	db := rootDB(t, c.Address, pw)
	outside := filepath.Join(e.dir, "outside")
	if err := os.Mkdir(outside, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE USER bob@'%' IDENTIFIED BY 'bob-pw'",
		"RENAME USER serverlessd_admin@localhost TO root2@'%'",
		"ALTER USER serverlessd_admin@localhost IDENTIFIED BY 'x'",
		"DROP USER `mariadb.sys`@localhost",
		"CREATE ROLE r",
		"GRANT INSERT ON `%`.* TO PUBLIC",
		"GRANT SELECT ON app.* TO root@'%'",
		"ALTER PROCEDURE sys.execute_prepared_stmt SQL SECURITY DEFINER",
		"CREATE TABLE sys.big (i INT)",
		"INSTALL SONAME 'simple_password_check'",
		"CREATE DEFINER=serverlessd_admin@localhost PROCEDURE p() SELECT 1",
	} {
		if _, err := db.Exec(q); err == nil {
			t.Errorf("%s: accepted, want refused", q)
		}
	}
	if _, err := db.Exec("CREATE TABLE dd (i INT) DATA DIRECTORY = '" + outside + "'"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("a table was put outside the datadir: %v", entries)
	}
	// A role changes its own password, as applications rotating secrets do.
	if _, err := db.Exec("SET PASSWORD = PASSWORD('rotated')"); err != nil {
		t.Fatalf("SET PASSWORD for itself: %v", err)
	}
}

// TestApplicationPrivileges: what an application and its migrations do
// works with the tenant set.
func TestApplicationPrivileges(t *testing.T) {
	e := newEnv(t, "")
	_, c, pw := e.project(t, "shop")
	db := rootDB(t, c.Address, pw)
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS shop2",
		"CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(10), KEY (v))",
		"ALTER TABLE t ADD COLUMN w INT",
		"CREATE INDEX tw ON t (w)",
		"CREATE TABLE child (id INT PRIMARY KEY, t_id INT, FOREIGN KEY (t_id) REFERENCES t (id))",
		"CREATE VIEW v AS SELECT id, v FROM t",
		"CREATE PROCEDURE p() INSERT INTO t (v) VALUES ('p')",
		"CALL p()",
		"CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 42",
		"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.w = 1",
		"CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DO DELETE FROM t WHERE id < 0",
		"CREATE TEMPORARY TABLE tmp (i INT)",
		"INSERT INTO t (v) VALUES ('a'), ('b')",
		"UPDATE t SET v = 'c' WHERE v = 'a'",
		"DELETE FROM t WHERE v = 'b'",
		"CREATE TABLE shop2.x (i INT)",
		"TRUNCATE TABLE shop2.x",
		"DROP TABLE shop2.x",
		"SHOW PROCESSLIST",
		"SHOW ENGINE INNODB STATUS",
		"DROP DATABASE shop2",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"LOCK TABLES t WRITE", "INSERT INTO t (v) VALUES ('l')", "UNLOCK TABLES"} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	killOwnQuery(t, db)
}

// killOwnQuery runs a long query on one connection and kills it from
// another, as Ctrl-C in the mariadb client does.
func killOwnQuery(t *testing.T, db *sql.DB) {
	t.Helper()
	thread, ended := sleepingQuery(t, db)
	if _, err := db.Exec(fmt.Sprintf("KILL QUERY %d", thread)); err != nil {
		t.Fatalf("KILL QUERY of the role's own query: %v", err)
	}
	ended()
}

// sleepingQuery starts SELECT SLEEP(30) on a connection of db and returns
// its thread id, and a function that waits for the query to end (failing
// after 10 s).
func sleepingQuery(t *testing.T, db *sql.DB) (uint32, func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var thread uint32
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&thread); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.ExecContext(ctx, "SELECT SLEEP(30)")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	return thread, func() {
		t.Helper()
		defer conn.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the killed query did not end")
		}
	}
}

// checkNotRoot fails unless every uid of pid (real, effective, saved,
// filesystem) is non-zero.
func checkNotRoot(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		for _, field := range []string{"Uid:", "Gid:"} {
			if rest, ok := strings.CutPrefix(line, field); ok {
				for _, id := range strings.Fields(rest) {
					if id == "0" {
						t.Fatalf("mariadbd (pid %d) runs with id 0: %s", pid, line)
					}
				}
			}
		}
	}
}

// TestMemoryHogStaysInsideItsCompute: a tenant that builds MEMORY tables
// toward 2 GiB in a 256Mi compute fails inside that compute (MariaDB's
// per-table cap, then its cgroup), while another compute's point-select
// loop goes on without a single error.
func TestMemoryHogStaysInsideItsCompute(t *testing.T) {
	e := newEnv(t, "")
	_, hog, hogPW := e.projectMem(t, "hog", "256Mi")
	_, calm, calmPW := e.projectMem(t, "calm", "256Mi")
	calmDB := rootDB(t, calm.Address, calmPW)
	if _, err := calmDB.Exec("CREATE TABLE t (id INT PRIMARY KEY, v INT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := calmDB.Exec("INSERT INTO t VALUES (1, 42)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	selects, selectErrs := make(chan int, 1), make(chan error, 100)
	go func() {
		n := 0
		defer func() { selects <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var v int
			if err := calmDB.QueryRow("SELECT v FROM t WHERE id = 1").Scan(&v); err != nil || v != 42 {
				selectErrs <- fmt.Errorf("point select: %d, %v", v, err)
			}
			n++
		}
	}()

	held, err := fillMemoryTables(t, rootDB(t, hog.Address, hogPW), 2<<30)
	close(stop)
	n := <-selects
	t.Logf("the hog held %d MiB in MEMORY tables before: %v; the other compute ran %d point selects meanwhile", held>>20, err, n)
	if err == nil {
		t.Fatalf("2 GiB of MEMORY tables fit in a 256Mi compute")
	}
	if held > 256<<20 {
		t.Fatalf("the hog held %d MiB, over its 256 MiB", held>>20)
	}
	close(selectErrs)
	for err := range selectErrs {
		t.Errorf("the other compute failed: %v", err)
	}
	if n == 0 {
		t.Fatal("the other compute served no point select")
	}
}

// fillMemoryTables creates MEMORY tables and fills each until MariaDB
// says it is full, until want bytes are held or a statement fails for
// another reason (the connection lost when mariadbd is killed). It
// returns the bytes held and that failure.
func fillMemoryTables(t *testing.T, db *sql.DB, want int64) (int64, error) {
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("SET SESSION max_heap_table_size = 2147483648"); err != nil {
		t.Fatal(err)
	}
	const row = 8000
	var held int64
	for i := 0; held < want; i++ {
		name := "m" + strconv.Itoa(i)
		if _, err := db.Exec("CREATE TABLE " + name + " (v VARCHAR(8000)) CHARSET latin1 ENGINE=MEMORY"); err != nil {
			return held, err
		}
		for held < want {
			res, err := db.Exec("INSERT INTO " + name + " SELECT REPEAT('x', 8000) FROM seq_1_to_512")
			if mysqlCode(err) == 1114 { // the table is full: the session's cap
				break
			}
			if err != nil {
				return held, err
			}
			n, _ := res.RowsAffected()
			held += n * row
		}
	}
	return held, nil
}

// TestStorageLimit: a compute that reaches its storage limit becomes
// read-only for its tenant with a clear error, keeps its committed rows,
// and is writable again once a DROP frees the space.
func TestStorageLimit(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p := e.projectWith(t, "full", storeSpec("128Mi", "100Mi"))
	db := rootDB(t, p.c.Address, p.pw)
	base, err := e.mgr.CheckStorage(ctx, p.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TABLE keep (id INT PRIMARY KEY)", "INSERT INTO keep VALUES (1), (2), (3)",
		"CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	var writeErr error
	for i := 0; i < 200 && writeErr == nil; i++ {
		_, writeErr = db.Exec("INSERT INTO big (v) VALUES (REPEAT('x', 1048576))")
		if _, err := e.mgr.CheckStorage(ctx, p.c.ID); err != nil {
			t.Fatal(err)
		}
	}
	used, _ := e.mgr.CheckStorage(ctx, p.c.ID)
	t.Logf("a fresh compute's folder holds %d MiB; writes stopped at %d MiB with: %v", base>>20, used>>20, writeErr)
	if mysqlCode(writeErr) != 1290 || !e.mgr.Activity(p.c.ID).StorageFull() {
		t.Fatalf("writing past 100Mi: %v, want read-only (1290)", writeErr)
	}
	if n := countTable(t, db, "keep"); n != 3 {
		t.Fatalf("%d committed rows after the limit, want 3", n)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("DROP TABLE big"); mysqlCode(err) != 1290 {
		t.Fatalf("a tenant's DROP while read-only: %v (MariaDB refuses it; the proxy asks AllowFreeing first)", err)
	}
	// A DROP that frees too little: read-only again after the lift.
	if err := e.mgr.AllowFreeing(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DROP TABLE keep"); err != nil {
		t.Fatalf("DROP after AllowFreeing: %v", err)
	}
	time.Sleep(time.Second)
	if _, err := db.Exec("CREATE TABLE again (i INT)"); mysqlCode(err) != 1290 {
		t.Fatalf("write after a DROP that freed little: %v, want read-only again", err)
	}
	// Lifts are spaced: a second one at once does nothing.
	if err := e.mgr.AllowFreeing(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DROP TABLE big"); mysqlCode(err) != 1290 {
		t.Fatalf("DROP right after a lift: %v, want 1290", err)
	}
	time.Sleep(2 * time.Second)
	if err := e.mgr.AllowFreeing(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DROP TABLE big"); err != nil {
		t.Fatalf("DROP of the big table: %v", err)
	}
	if _, err := e.mgr.CheckStorage(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	if e.mgr.Activity(p.c.ID).StorageFull() {
		t.Fatal("still read-only after the DROP")
	}
	if _, err := db.Exec("CREATE TABLE again (i INT)"); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}

// TestKillThreadOfAnotherRole: a role may not kill another role's query in
// MariaDB (that takes CONNECTION ADMIN, withheld); the daemon does it for
// the proxy, and never kills its own account's threads.
func TestKillThreadOfAnotherRole(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, pw := e.project(t, "shop")
	root := rootDB(t, c.Address, pw)
	_, appPW, err := e.mgr.CreateRole(ctx, p.ID, "app")
	if err != nil {
		t.Fatal(err)
	}
	thread, ended := sleepingQuery(t, open(t, c.Address, "app", appPW))
	if _, err := root.Exec(fmt.Sprintf("KILL QUERY %d", thread)); mysqlCode(err) != 1095 {
		t.Fatalf("root killing app's query in SQL: %v, want 1095 (not owner)", err)
	}
	if err := e.mgr.KillThread(ctx, c.ID, thread, true); err != nil {
		t.Fatal(err)
	}
	ended()
	// A session of the daemon's own account is never killed this way.
	cred, err := e.drv.Admin(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := open(t, c.Address, cred.User, cred.Password).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var adminThread uint32
	if err := admin.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&adminThread); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.KillThread(ctx, c.ID, adminThread, false); err == nil {
		t.Fatal("KillThread killed a session of the daemon's account")
	}
	if err := admin.PingContext(ctx); err != nil {
		t.Fatalf("the daemon's session is gone: %v", err)
	}
}

// TestKillStatementOnlyWhileStill: the daemon kills a statement by its
// query id only while still() holds once the id is read (a pooled
// connection that moved on to another client keeps its statement), and
// a thread that runs nothing or is gone is no error.
func TestKillStatementOnlyWhileStill(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p, c, pw := e.project(t, "shop")
	rootDB(t, c.Address, pw) // creates the schema app
	_, appPW, err := e.mgr.CreateRole(ctx, p.ID, "app")
	if err != nil {
		t.Fatal(err)
	}
	db := open(t, c.Address, "app", appPW)
	thread, ended := sleepingQuery(t, db)
	if err := e.mgr.KillStatement(ctx, c.ID, thread, func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	var state string
	if err := db.QueryRowContext(ctx, "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?", thread).Scan(&state); err != nil || state != "Query" {
		t.Fatalf("thread %d after a KILL that no longer applied: %q, %v; want its statement running", thread, state, err)
	}
	if err := e.mgr.KillStatement(ctx, c.ID, thread, func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	ended()
	if err := e.mgr.KillStatement(ctx, c.ID, 1<<31, func() bool { return true }); err != nil {
		t.Fatalf("a thread that is gone: %v", err)
	}
}

// TestReadOnlyEndsBlockingSessions: a tenant session that holds LOCK
// TABLES ... WRITE keeps MariaDB's read_only from taking hold; the daemon
// waits 5 s at most, ends the tenant's sessions, and the compute is
// read-only.
func TestReadOnlyEndsBlockingSessions(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	p := e.projectWith(t, "locker", storeSpec("128Mi", "100Mi"))
	db := rootDB(t, p.c.Address, p.pw)
	if _, err := db.Exec("CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)"); err != nil {
		t.Fatal(err)
	}
	locker, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	if _, err := locker.ExecContext(ctx, "LOCK TABLES big WRITE"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 60; i++ {
		if _, err := locker.ExecContext(ctx, "INSERT INTO big (v) VALUES (REPEAT('x', 1048576))"); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	if _, err := e.mgr.CheckStorage(ctx, p.c.ID); err != nil {
		t.Fatalf("CheckStorage with a tenant holding LOCK TABLES: %v", err)
	}
	t.Logf("read-only after %s", time.Since(t0).Round(time.Millisecond))
	if !e.mgr.Activity(p.c.ID).StorageFull() {
		t.Fatal("not read-only")
	}
	if err := locker.PingContext(ctx); err == nil {
		t.Fatal("the session holding the lock is still open")
	}
	if _, err := db.Exec("INSERT INTO big (v) VALUES ('x')"); mysqlCode(err) != 1290 {
		t.Fatalf("write after: %v, want 1290", err)
	}
}
