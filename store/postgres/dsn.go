package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectError is a failure to reach or log in to the server. Its message is
// one line that names the server and the cause, never the password, so that
// `serve` can print it as it is.
type ConnectError struct {
	Addr     string // host:port, or the unix socket; several are comma-separated
	User     string
	Database string
	Reason   string // the cause, short: "connection refused"
	Err      error  // the driver's error
}

func (e *ConnectError) Error() string {
	who := "user " + strconv.Quote(e.User)
	if e.Database != "" {
		who += ", database " + strconv.Quote(e.Database)
	}
	return fmt.Sprintf("connect to postgres at %s (%s): %s", e.Addr, who, e.Reason)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// asConnectError describes a failure to connect with cfg, unless it is
// described already.
func asConnectError(err error, cfg *pgx.ConnConfig) error {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return err
	}
	return &ConnectError{Addr: addrs(cfg), User: cfg.User, Database: cfg.Database,
		Reason: reason(err, cfg.ConnectTimeout), Err: err}
}

// parseDSN parses the DSN and applies serverlessd's defaults: a connect
// timeout, an application_name that shows in pg_stat_activity, and the pool
// size, which it takes out of the DSN so that it is not sent to the server as
// a setting.
func parseDSN(dsn string) (*pgx.ConnConfig, int, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, 0, errors.New("open postgres store: store.dsn is empty: " +
			"set it to a URL like postgres://user:password@host:5432/serverlessd")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, 0, fmt.Errorf("open postgres store: invalid store.dsn: %s", parseReason(err))
	}
	size := defaultPoolSize()
	if v, ok := cfg.RuntimeParams["pool_max_conns"]; ok {
		delete(cfg.RuntimeParams, "pool_max_conns")
		if size, err = strconv.Atoi(v); err != nil || size < 1 {
			return nil, 0, fmt.Errorf("open postgres store: invalid store.dsn: "+
				"pool_max_conns=%q: want a positive integer", v)
		}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "serverlessd"
	}
	return cfg, size, nil
}

// parseReason is pgx's parse error without the DSN, which it quotes with the
// password redacted only on a best-effort basis, and without a url.Error's
// copy of the raw URL: "invalid port: invalid port \":x\" after host".
func parseReason(err error) string {
	msg := err.Error()
	inner := errors.Unwrap(err)
	if inner != nil {
		msg = strings.TrimSuffix(msg, " ("+inner.Error()+")")
	}
	if i := strings.LastIndex(msg, "`: "); strings.HasPrefix(msg, "cannot parse `") && i >= 0 {
		msg = msg[i+len("`: "):]
	}
	var urlErr *url.Error
	if errors.As(inner, &urlErr) {
		inner = urlErr.Err
	}
	if inner != nil {
		msg += ": " + inner.Error()
	}
	return redact(oneLine(msg))
}

// reason says in a few words why a connection failed. pgx's own message
// lists every attempt (TLS then plain text, each address of a name) on
// several lines; the first cause is what a user needs.
func reason(err error, timeout time.Duration) string {
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var errno syscall.Errno
	switch {
	case errors.As(err, &pgErr):
		return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return fmt.Sprintf("no answer within %s", timeout)
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &errno):
		return errno.Error()
	}
	return redact(oneLine(err.Error()))
}

// addrs names the servers the config tries, deduplicated: pgx lists a host
// once per TLS mode.
func addrs(cfg *pgx.ConnConfig) string {
	var out []string
	seen := map[string]bool{}
	add := func(host string, port uint16) {
		a := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if strings.HasPrefix(host, "/") { // a unix socket directory
			a = filepath.Join(host, ".s.PGSQL."+strconv.Itoa(int(port)))
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	add(cfg.Host, cfg.Port)
	for _, fb := range cfg.Fallbacks {
		add(fb.Host, fb.Port)
	}
	return strings.Join(out, ", ")
}

// oneLine joins a multi-line driver message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// Password spellings that redact masks: URL user info (up to the last '@'
// before the path, as a password may hold a raw '@') and key=value or query
// parameters.
var (
	urlPassword = regexp.MustCompile(`(://[^:/@\s"]*:)[^/\s"]*@`)
	kvPassword  = regexp.MustCompile(`(?i)((ssl)?password\s*=\s*)('[^']*'|[^\s"&]*)`)
)

// redact masks anything in a message that looks like a password. It is the
// last line of defence: the messages built here do not quote the DSN.
func redact(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}xxxxx@")
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}
