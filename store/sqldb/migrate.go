package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sharedMigrations are written in SQL that SQLite and PostgreSQL both accept.
//
//go:embed migrations/*.sql
var sharedMigrations embed.FS

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string // the file name, e.g. "0001_init.sql"
	SQL     string
}

// migrationName is NNNN_words.sql; the number is the version.
var migrationName = regexp.MustCompile(`^([0-9]+)_[a-z0-9_]+\.sql$`)

// Migrations returns the dialect's migrations in version order: the shared
// ones, with d.Migrations replacing or adding versions.
func Migrations(d Dialect) ([]Migration, error) {
	shared, err := fs.Sub(sharedMigrations, "migrations")
	if err != nil {
		return nil, err
	}
	byVersion, err := readMigrations(shared)
	if err != nil {
		return nil, fmt.Errorf("shared migrations: %w", err)
	}
	if d.Migrations != nil {
		own, err := readMigrations(d.Migrations)
		if err != nil {
			return nil, fmt.Errorf("%s migrations: %w", d.Name, err)
		}
		for v, m := range own {
			byVersion[v] = m
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// readMigrations reads the *.sql files at the root of fsys, by version.
func readMigrations(fsys fs.FS) (map[int]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	out := map[int]Migration{}
	for _, name := range names {
		m := migrationName.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("%s: want a name like 0001_init.sql", name)
		}
		v, _ := strconv.Atoi(m[1])
		if prev, dup := out[v]; dup {
			return nil, fmt.Errorf("%s and %s have the same version %d", prev.Name, name, v)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out[v] = Migration{Version: v, Name: name, SQL: string(b)}
	}
	return out, nil
}

// Migrate brings the schema to the latest version. Applying it again is a
// no-op. It refuses a database whose schema is newer than this binary knows,
// since older code could break its invariants.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	return MigrateTo(ctx, db, d, -1)
}

// MigrateTo applies the migrations up to and including version target (all
// of them when target is negative). Tests use it to build an older schema and
// upgrade it.
func MigrateTo(ctx context.Context, db *sql.DB, d Dialect, target int) error {
	all, err := Migrations(d)
	if err != nil {
		return err
	}
	if err := ensureMigrationsTable(ctx, db, d); err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, db)
	if err != nil {
		return err
	}
	if err := checkNotNewer(applied, all); err != nil {
		return err
	}
	for _, m := range all {
		if target >= 0 && m.Version > target {
			break
		}
		if applied[m.Version] {
			continue
		}
		if err := apply(ctx, db, d, m); err != nil {
			return err
		}
	}
	return nil
}

// ensureMigrationsTable creates schema_migrations under the migration lock,
// because concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL.
func ensureMigrationsTable(ctx context.Context, db *sql.DB, d Dialect) error {
	return inTx(ctx, db, d, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT NOT NULL PRIMARY KEY,
			name       TEXT   NOT NULL,
			applied_at BIGINT NOT NULL
		)`)
		if err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		return nil
	})
}

// appliedVersions reads what is applied without taking a write lock, so the
// common case (nothing to do) never waits on another writer.
func appliedVersions(ctx context.Context, db *sql.DB) (map[int]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		out[v] = true
	}
	return out, rows.Err()
}

func checkNotNewer(applied map[int]bool, all []Migration) error {
	known := map[int]bool{}
	for _, m := range all {
		known[m.Version] = true
	}
	for v := range applied {
		if !known[v] {
			return fmt.Errorf("store schema has migration %d, which this binary does not know: "+
				"it was written by a newer serverlessd", v)
		}
	}
	return nil
}

// apply runs one migration and records it in the same transaction, so a
// failure leaves neither. It re-checks under the lock because another
// process may have applied it since appliedVersions.
func apply(ctx context.Context, db *sql.DB, d Dialect, m Migration) error {
	if strings.HasPrefix(m.SQL, foreignKeysOff) {
		return applyWithoutForeignKeys(ctx, db, d, m)
	}
	return applyOn(ctx, db, d, m, nil)
}

// applyOn runs m in a transaction of txs, and check before it commits.
func applyOn(ctx context.Context, txs beginner, d Dialect, m Migration, check func(*sql.Tx) error) error {
	err := inTx(ctx, txs, d, func(tx *sql.Tx) error {
		var n int
		err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`),
			m.Version).Scan(&n)
		if err != nil || n > 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
			m.Version, m.Name, time.Now().UnixMicro())
		if err != nil || check == nil {
			return err
		}
		return check(tx)
	})
	if err != nil {
		return fmt.Errorf("apply migration %s: %w", m.Name, err)
	}
	return nil
}

// foreignKeysOff, as the first line of a SQLite migration, runs it with
// foreign keys off: what SQLite's table rebuilds need, since dropping the
// old table would otherwise cascade to its children. PRAGMA foreign_keys
// does nothing inside a transaction, so it is set on the connection around
// it, and PRAGMA foreign_key_check must find nothing before the commit.
const foreignKeysOff = "-- foreign_keys: off"

// applyWithoutForeignKeys applies a SQLite migration marked foreignKeysOff.
func applyWithoutForeignKeys(ctx context.Context, db *sql.DB, d Dialect, m Migration) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("apply migration %s: %w", m.Name, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return fmt.Errorf("apply migration %s: turn foreign keys off: %w", m.Name, err)
	}
	defer func() {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); rerr != nil {
			// A pooled connection without foreign keys would skip the
			// cascades: drop it rather than return it to the pool.
			conn.Raw(func(any) error { return driver.ErrBadConn })
			err = errors.Join(err, fmt.Errorf("turn foreign keys back on: %w", rerr))
		}
	}()
	return applyOn(ctx, conn, d, m, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
		if err != nil {
			return fmt.Errorf("foreign_key_check: %w", err)
		}
		defer rows.Close()
		if rows.Next() {
			return fmt.Errorf("the migration leaves rows whose foreign keys point nowhere")
		}
		return rows.Err()
	})
}

// beginner starts transactions: a *sql.DB or one *sql.Conn.
type beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// inTx runs fn in a transaction that first takes the dialect's migration lock.
func inTx(ctx context.Context, db beginner, d Dialect, fn func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	if d.MigrationLock != "" {
		if _, err := tx.ExecContext(ctx, d.MigrationLock); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// ignoreDone drops the error Rollback gives after a failed Commit.
func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
