// Package sqlite is the embedded store backend: one SQLite file, through the
// pure-Go modernc.org/sqlite driver, with the shared SQL of store/sqldb.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/serverlessd/serverlessd/store/sqldb"
)

// ownMigrations are SQLite-only migrations, which replace or add to the
// shared ones in store/sqldb/migrations by version. There are none yet; the
// directory holds a README so that it can be embedded.
//
//go:embed migrations
var ownMigrations embed.FS

// busyTimeout is how long a connection waits for SQLite's write lock.
const busyTimeout = 5 * time.Second

// Dialect is SQLite's flavour of the shared SQL.
var Dialect = sqldb.Dialect{
	Name:                  "sqlite",
	IsUniqueViolation:     hasCode(sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY),
	IsForeignKeyViolation: hasCode(sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY),
	Migrations:            mustSub(ownMigrations, "migrations"),
	// No MigrationLock: every transaction begins IMMEDIATE (see dsn), which
	// takes SQLite's single write lock.
}

// Store is the SQLite store. It embeds the shared implementation; methods
// specific to SQLite can be added here.
type Store struct {
	*sqldb.Store
	path string
}

// Open opens (creating if needed) the store at path and migrates it. The file
// is created with mode 0600, and its directory 0700, because it holds
// password hashes.
func Open(path string) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite store: bad path %q", path)
	}
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// Keep idle connections: a new one re-runs the pragmas. SQLite has one
	// writer at a time anyway; a bounded pool makes the others queue in
	// database/sql, which hands over at once, rather than in SQLite's busy
	// handler, which polls with sleeps.
	n := max(4, runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	s, err := sqldb.New(context.Background(), db, Dialect)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return &Store{Store: s, path: path}, nil
}

// migrate runs the migrations, retrying while SQLite reports the database
// busy without waiting. That happens when several connections turn a new,
// empty file into a WAL database at once: SQLite does not call the busy
// handler then (seen with 8 concurrent Opens of one new file). Each migration
// re-checks under the write lock, so a retry is safe.
func migrate(db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := sqldb.Migrate(context.Background(), db, Dialect)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
	}
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// dsn sets the pragmas through _pragma parameters so that every pooled
// connection gets them, not only the first:
//   - busy_timeout makes a writer wait for the lock rather than fail;
//   - foreign_keys is off by default in SQLite, and the cascades need it;
//   - WAL lets readers run beside the writer;
//   - synchronous=NORMAL is durable across application crashes in WAL mode
//     and skips an fsync per commit (a power loss may drop the last commits).
//
// _txlock=immediate makes BEGIN take the write lock at once: a deferred
// transaction that reads and then writes fails with SQLITE_BUSY, without
// waiting, if another connection committed in between.
func dsn(path string) string {
	q := url.Values{}
	busy := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())
	for _, p := range []string{busy, "foreign_keys(1)", "journal_mode(WAL)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

// createPrivate creates the file (and its directory) owner-only if it does
// not exist. SQLite gives the -wal and -shm files the database's mode.
func createPrivate(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// isBusy reports whether err is SQLITE_BUSY or one of its extended codes.
func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// hasCode reports whether an error is a SQLite error with one of the
// extended result codes.
func hasCode(codes ...int) func(error) bool {
	return func(err error) bool {
		var e *sqlite.Error
		if !errors.As(err, &e) {
			return false
		}
		for _, c := range codes {
			if e.Code() == c {
				return true
			}
		}
		return false
	}
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
