// Package postgres is the shared store backend: a PostgreSQL database that
// several serverlessd daemons can use at once, through jackc/pgx/v5's
// database/sql driver and the shared SQL of store/sqldb.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/serverlessd/serverlessd/store/sqldb"
)

// ownMigrations replace or add to the shared ones in store/sqldb/migrations
// by version. 0001 differs only by the collation of its key columns.
//
//go:embed migrations/*.sql
var ownMigrations embed.FS

// DefaultConnectTimeout bounds one connection attempt (dial, TLS and
// authentication) when the DSN sets no connect_timeout, so that an
// unreachable server gives an error rather than a hang.
const DefaultConnectTimeout = 5 * time.Second

// migrationLockKey is the pg_advisory_xact_lock key that serialises daemons
// migrating one database. Advisory locks are per database, so it only has to
// differ from keys that other applications sharing the database might use:
// it spells "slsdmigr".
const migrationLockKey = 0x736c73646d696772

// SQLSTATEs mapped to store sentinels.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// Dialect is PostgreSQL's flavour of the shared SQL.
var Dialect = sqldb.Dialect{
	Name:                  "postgres",
	NumberedParams:        true,
	IsUniqueViolation:     hasCode(uniqueViolation),
	IsForeignKeyViolation: hasCode(foreignKeyViolation),
	Migrations:            mustSub(ownMigrations, "migrations"),
	MigrationLock:         "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(migrationLockKey, 10) + ")",
}

// Store is the PostgreSQL store. It embeds the shared implementation;
// methods specific to PostgreSQL can be added here.
type Store struct {
	*sqldb.Store
	poolSize int
}

// Open connects to the database that dsn names (a postgres:// URL or
// "key=value" pairs, as libpq takes them), checks that it answers, migrates
// it and prepares the store. Any failure is one line that names the server
// but never the password; a connection failure ends in "(check store.dsn)".
//
// The DSN may carry pool_max_conns (as pgxpool spells it) to size the pool.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, poolSize, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector{Connector: stdlib.GetConnector(*cfg), cfg: cfg})
	configurePool(db, poolSize)
	s, err := open(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{Store: s, poolSize: poolSize}, nil
}

// open checks the connection, migrates and prepares.
func open(ctx context.Context, db *sql.DB, cfg *pgx.ConnConfig) (*sqldb.Store, error) {
	// The deadline also covers the DNS lookup, which ConnectTimeout does not.
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout+time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		return nil, fmt.Errorf("%w (check store.dsn)", asConnectError(err, cfg))
	}
	if err := sqldb.Migrate(ctx, db, Dialect); err != nil {
		return nil, fmt.Errorf("open postgres store at %s: %s", addrs(cfg), oneLine(err.Error()))
	}
	s, err := sqldb.New(ctx, db, Dialect)
	if err != nil {
		return nil, fmt.Errorf("open postgres store at %s: %s", addrs(cfg), oneLine(err.Error()))
	}
	return s, nil
}

// Ping checks that the server answers. database/sql does not retry a ping
// that fails on a pooled connection that died with a restarted server: it
// reports "driver: bad connection" though the server is fine. Each such
// connection is dropped, so trying once per pooled connection, plus a new
// one, answers about the server itself.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	for range s.poolSize + 1 {
		if err = s.DB().PingContext(ctx); !errors.Is(err, driver.ErrBadConn) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ping postgres store: %w", err)
	}
	return nil
}

// connector makes every failure to connect, at Open or later when the
// server was down, a one-line ConnectError rather than pgx's message, which
// lists each attempt (TLS, then plain text; each address) on its own line.
type connector struct {
	driver.Connector
	cfg *pgx.ConnConfig
}

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, asConnectError(err, c.cfg)
	}
	return conn, nil
}

// configurePool sizes database/sql's pool. Idle connections are kept up to
// the limit because a new one costs a TCP and SCRAM handshake (milliseconds)
// on the hot path. They are closed after a quiet spell, to give connection
// slots back to a server that several daemons share, and recycled now and
// then, so that a failover behind a DNS name or a proxy is picked up.
func configurePool(db *sql.DB, size int) {
	db.SetMaxOpenConns(size)
	db.SetMaxIdleConns(size)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)
}

// defaultPoolSize is pgxpool's default: enough for the control plane's
// concurrent requests, small enough that several daemons fit within the
// server's max_connections (100 by default).
func defaultPoolSize() int { return max(4, runtime.GOMAXPROCS(0)) }

// hasCode reports whether an error is a PostgreSQL error with the SQLSTATE.
func hasCode(code string) func(error) bool {
	return func(err error) bool {
		var e *pgconn.PgError
		return errors.As(err, &e) && e.Code == code
	}
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
