// Package sqldb implements store.Store over database/sql. The SQLite and
// PostgreSQL backends share it and differ only by a Dialect, so the two cannot
// drift apart in behaviour: the SQL, the error mapping and the time and JSON
// encodings live here once.
//
// Encodings, identical on every backend:
//   - times are BIGINT unix microseconds in UTC; NULL is the zero time.Time;
//   - ProjectConfig and ComputeSpec are JSON in TEXT columns;
//   - queries are written with '?' placeholders and rebound once, in New, for
//     dialects with numbered parameters.
package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// DefaultLimit is the page size when a Page or a limit is zero or negative.
const DefaultLimit = 100

// Dialect is what differs between SQL backends. Keep it small: anything that
// can be written in portable SQL belongs in the shared queries instead.
type Dialect struct {
	// Name names the backend in errors ("sqlite", "postgres").
	Name string
	// NumberedParams selects $1, $2... placeholders (PostgreSQL) instead of ?.
	NumberedParams bool
	// IsUniqueViolation reports whether err is a unique or primary-key
	// constraint violation. It maps to store.ErrAlreadyExists.
	IsUniqueViolation func(error) bool
	// IsForeignKeyViolation reports whether err is a foreign-key violation:
	// the parent project does not exist. It maps to store.ErrNotFound.
	IsForeignKeyViolation func(error) bool
	// Migrations holds the dialect's own migration files, at the root of the
	// FS, named like the shared ones (0002_name.sql). A file replaces the
	// shared migration of the same version; a version only the dialect has is
	// applied only there. Nil means the shared migrations alone.
	Migrations fs.FS
	// MigrationLock, when set, runs first in every migration transaction so
	// that daemons sharing one database migrate one at a time (PostgreSQL:
	// "SELECT pg_advisory_xact_lock(...)"). SQLite needs none: its
	// transactions begin IMMEDIATE and so already hold the write lock.
	MigrationLock string
}

// rebind rewrites '?' placeholders for dialects with numbered parameters.
// The shared SQL never has '?' inside a string literal.
func (d Dialect) rebind(query string) string {
	if !d.NumberedParams {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r != '?' {
			b.WriteRune(r)
			continue
		}
		n++
		b.WriteString("$" + strconv.Itoa(n))
	}
	return b.String()
}

// Store is a store.Store over a *sql.DB.
type Store struct {
	db *sql.DB
	d  Dialect
	q  *queries
}

var _ store.Store = (*Store)(nil)

// New returns a Store over db, which must already be migrated (see Migrate),
// and prepares its statements. The Store owns db: Close closes it.
func New(ctx context.Context, db *sql.DB, d Dialect) (*Store, error) {
	q, err := prepare(ctx, db, d)
	if err != nil {
		return nil, fmt.Errorf("%s store: %w", d.Name, err)
	}
	return &Store{db: db, d: d, q: q}, nil
}

// DB returns the underlying database, for backend-specific extras and tests.
func (s *Store) DB() *sql.DB { return s.db }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s store: %w", s.d.Name, err)
	}
	return nil
}

// Close closes the prepared statements and the database.
func (s *Store) Close() error { return errors.Join(s.q.close(), s.db.Close()) }

// mapErr turns a driver's constraint violation into a store sentinel, wrapped
// with what failed. Other errors are wrapped as they are.
func (s *Store) mapErr(err error, format string, args ...any) error {
	return s.mapErrParent(err, "project", format, args...)
}

// mapErrParent is mapErr where a foreign-key violation means that the
// parent named parent does not exist.
func (s *Store) mapErrParent(err error, parent, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case s.d.IsUniqueViolation != nil && s.d.IsUniqueViolation(err):
		return fmt.Errorf("%s: %w", what, store.ErrAlreadyExists)
	case s.isForeignKey(err):
		return fmt.Errorf("%s: %s: %w", what, parent, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *Store) isForeignKey(err error) bool {
	return s.d.IsForeignKeyViolation != nil && s.d.IsForeignKeyViolation(err)
}

// mustAffect turns "no row matched" into ErrNotFound.
func mustAffect(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// pageLimit applies the default page size.
func pageLimit(n int) int {
	if n <= 0 {
		return DefaultLimit
	}
	return n
}

// normTime is the form every time takes in the store: UTC, microseconds.
// Callers' structs are normalised too, so that what Create or Update leaves
// in them equals what a later Get returns.
func normTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// orNow returns t normalised, or now when t is zero.
func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return normTime(t)
}

// micros encodes a time as a query argument: unix microseconds, or NULL for
// the zero time.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// timeCol scans a BIGINT microseconds column, NULL giving the zero time.
type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*c.t = time.Time{}
	case int64:
		*c.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("time column: unexpected %T", v)
	}
	return nil
}

// jsonCol scans a TEXT column holding a JSON document into v.
type jsonCol struct{ v any }

func (c jsonCol) Scan(src any) error {
	switch src := src.(type) {
	case string:
		return json.Unmarshal([]byte(src), c.v)
	case []byte:
		return json.Unmarshal(src, c.v)
	default:
		return fmt.Errorf("json column: unexpected %T", src)
	}
}

// jsonText encodes v for a TEXT column.
func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// Compile-time checks that the column adapters are sql.Scanners.
var (
	_ sql.Scanner = timeCol{}
	_ sql.Scanner = jsonCol{}
)
