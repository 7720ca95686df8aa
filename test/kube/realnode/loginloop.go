//go:build linux && realnode

package realnode

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// loginLoop logs in again and again, a new connection and a SELECT 1
// each time, and counts the failures: what an application that connects
// per request sees of a daemon replica's death or a rolling update.
type loginLoop struct {
	conn  driver.Connector
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	ok    int
	fails []loginFail
	times []time.Duration // of the logins that succeeded
}

type loginFail struct {
	at  time.Time
	err error
}

// mysqlConfig is a client of the proxy at addr for user@project.
func mysqlConfig(addr, project, user, password string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = project+"."+user, password, "tcp", addr
	cfg.Timeout = 5 * time.Second
	cfg.ReadTimeout, cfg.WriteTimeout = 30*time.Second, 30*time.Second
	return cfg
}

// startLoginLoop starts logging in, every 20 ms, until finish.
func startLoginLoop(cfg *mysql.Config) (*loginLoop, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	l := &loginLoop{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			t0 := time.Now()
			err := loginOnce(l.conn)
			l.mu.Lock()
			if err != nil {
				l.fails = append(l.fails, loginFail{at: t0, err: err})
			} else {
				l.ok++
				l.times = append(l.times, time.Since(t0))
			}
			l.mu.Unlock()
		}
	}()
	return l, nil
}

// finish stops the loop and returns its counts.
func (l *loginLoop) finish() (ok int, fails []loginFail, maxLogin time.Duration) {
	close(l.stop)
	<-l.done
	if len(l.times) > 0 {
		maxLogin = slices.Max(l.times)
	}
	return l.ok, l.fails, maxLogin
}

// loginOnce opens a connection, runs SELECT 1 and closes it. It uses the
// driver directly: database/sql would retry a connection that fails with
// driver.ErrBadConn and hide the failure.
func loginOnce(conn driver.Connector) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := conn.Connect(ctx)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	defer c.Close()
	rows, err := c.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
	if err != nil {
		return fmt.Errorf("SELECT 1: %w", err)
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return fmt.Errorf("SELECT 1 row: %w", err)
	}
	return nil
}

// describeFails lists failures with their time from an event (the kill).
func describeFails(fails []loginFail, from time.Time) []string {
	var out []string
	for _, f := range fails {
		out = append(out, fmt.Sprintf("%+.3fs: %v", f.at.Sub(from).Seconds(), f.err))
	}
	return out
}
