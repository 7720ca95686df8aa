// Package pgtest runs throwaway PostgreSQL servers for tests, from the
// installed server binaries (Debian: the package postgresql). Nothing skips:
// when the binaries are missing, a test that asks for a server fails and
// says what to install.
//
//	dsn := pgtest.Start(t)     // a fresh database on the test binary's shared server
//
//	srv := pgtest.New(t)       // a server of the test's own, which it may kill
//	dsn := srv.CreateDatabase(t)
//	srv.Kill(t)                // as a crash: connections drop, no checkpoint
//	srv.Restart(t)             // same port and data, after crash recovery
//
// A server listens on 127.0.0.1 on a free port, asks for a password (SCRAM,
// as production servers do), runs with fsync off, and its databases collate
// by ICU's en-US rules where the binaries support it: a query that relies on
// the database's collation for byte order then fails in tests as it would on
// a typical production server. As root (CI), the server runs as the user
// postgres (or nobody), since PostgreSQL refuses to run as root.
//
// A server dies with its test binary, through a parent-death signal, even
// when the binary is killed by a timeout, and a janitor process then removes
// its directory (under os.TempDir). New's server goes when its test ends.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// superuser is the role initdb creates; the DSNs log in as it.
const superuser = "postgres"

// Server is one PostgreSQL server (a cluster: a data directory and a
// postmaster) and the directory that holds it.
type Server struct {
	bin      string // directory of initdb and postgres
	dir      string // owned by the server's user: data/, sock/, postgres.log
	port     int
	password string
	cred     *syscall.Credential // whom the server runs as; nil: as this process

	mu     sync.Mutex
	exited chan struct{} // closed when the running postmaster exits
	pid    int

	admin *sql.DB // to the postgres database, for CREATE/DROP DATABASE
	seq   atomic.Int64
}

// shared is the test binary's server, started by the first Start.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Start returns the DSN of a new, empty database on the test binary's shared
// server, which the first call starts. The database is dropped when the test
// ends. Tests must not kill the shared server: use New for that.
func Start(t testing.TB) string {
	t.Helper()
	return Shared(t).CreateDatabase(t)
}

// Shared returns the test binary's shared server, starting it on first use.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = start() })
	if shared.err != nil {
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.srv
}

// New starts a server for this test alone, stopped and removed when the test
// ends. It costs about two seconds (initdb); use it to kill and restart a
// server without disturbing other tests.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// Addr is the server's TCP address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// DSN is a URL that logs in to database on the server as its superuser.
func (s *Server) DSN(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, s.password),
		Host:     s.Addr(),
		Path:     "/" + database,
		RawQuery: "sslmode=disable", // the server has no TLS; skip pgx's attempt
	}
	return u.String()
}

// LogPath is the server's log file, for a failing test to show.
func (s *Server) LogPath() string { return s.path("postgres.log") }

// CreateDatabase creates an empty database, named after the test, and
// returns its DSN. It is dropped when the test ends, if the server runs.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := dbName(t.Name(), s.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// template0, not template1: nothing that someone added to template1
	// leaks in, and it can be copied while others are connected to it.
	if _, err := s.admin.ExecContext(ctx, `CREATE DATABASE "`+name+`" TEMPLATE template0`); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() { s.dropDatabase(t, name) })
	return s.DSN(name)
}

// dropDatabase drops a test's database, disconnecting whoever still uses it.
// It frees disk on the shared server, whose tests may be many.
func (s *Server) dropDatabase(t testing.TB, name string) {
	if !s.running() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
		t.Logf("pgtest: drop database %s: %v", name, err)
	}
}

// Kill stops the server as a crash would: every backend quits at once
// (PostgreSQL's immediate shutdown), clients see their connections drop, and
// the next start runs crash recovery. Killing a stopped server does nothing.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if err := s.halt(syscall.SIGQUIT, 10*time.Second); err != nil {
		t.Fatalf("pgtest: kill: %v", err)
	}
}

// Stop shuts the server down cleanly (PostgreSQL's fast shutdown: open
// transactions roll back, clients are disconnected, a checkpoint is written).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.halt(syscall.SIGINT, 30*time.Second); err != nil {
		t.Fatalf("pgtest: stop: %v", err)
	}
}

// Restart starts the server again on the same port with the same data, and
// returns once it accepts logins. It kills the server first if it runs.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.halt(syscall.SIGQUIT, 10*time.Second); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
	if err := s.run(); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

// dbName makes a database name from a test name: lower case, [a-z0-9_], short
// enough for PostgreSQL's 63-byte identifiers, unique by seq.
func dbName(test string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t_%s_%d", name, seq)
}

// path names a file in the server's directory.
func (s *Server) path(name string) string { return filepath.Join(s.dir, name) }

// adminDB opens the pool used for CREATE and DROP DATABASE. database/sql
// reconnects by itself after Kill and Restart.
func (s *Server) adminDB() (*sql.DB, error) {
	db, err := sql.Open("pgx", s.DSN("postgres"))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	return db, nil
}
