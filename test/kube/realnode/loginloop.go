//go:build linux && realnode

package realnode

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
)

// loginLoop logs in again and again, a new connection and a SELECT 1
// each time, and counts the failures: what an application that connects
// per request sees of a daemon replica's death or a rolling update.
type loginLoop struct {
	conn     driver.Connector
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	mu       sync.Mutex
	ok       int
	fails    []loginFail
	times    []time.Duration // of the logins that succeeded
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

// startLoginLoop starts logging in, every 20 ms, until finish or the end
// of the test.
func startLoginLoop(t *testing.T, cfg *mysql.Config) *loginLoop {
	t.Helper()
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &loginLoop{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { l.finish() })
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
	return l
}

// finish stops the loop and returns its counts. It may be called again
// (a test's cleanup stops a loop its failure left running).
func (l *loginLoop) finish() (ok int, fails []loginFail, maxLogin time.Duration) {
	l.stopOnce.Do(func() { close(l.stop) })
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

// survivor is a login loop straight to one replica, at its Pod IP rather
// than through the Service: what another replica's death costs the
// clients of this one. It must cost them nothing.
type survivor struct {
	pod  string
	loop *loginLoop
}

// startSurvivor starts a survivor loop on a replica of pods other than
// victim.
func startSurvivor(t *testing.T, cfg *mysql.Config, pods []corev1.Pod, victim string) *survivor {
	t.Helper()
	for _, p := range pods {
		if p.Name == victim || p.Status.PodIP == "" {
			continue
		}
		c := cfg.Clone()
		c.Addr = net.JoinHostPort(p.Status.PodIP, "3306")
		loop := startLoginLoop(t, c)
		return &survivor{pod: p.Name, loop: loop}
	}
	t.Fatalf("no replica besides %s to log in to", victim)
	return nil
}

// finish stops the loop, fails the test for each failed login, and
// describes the loop.
func (s *survivor) finish(t *testing.T, killAt time.Time) string {
	t.Helper()
	ok, fails, maxLogin := s.loop.finish()
	for _, f := range describeFails(fails, killAt) {
		t.Errorf("a login straight to the surviving replica %s failed: %s", s.pod, f)
	}
	return fmt.Sprintf("straight to the other replica %s: %d logins, %d failed, slowest %s", s.pod, ok+len(fails), len(fails), ms(maxLogin))
}
