package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/serverlessd/serverlessd/compute"
)

const (
	// readyPoll is the pause between two login attempts while mariadbd
	// starts. A failed attempt costs microseconds (no socket yet, or nobody
	// listening), so polling this often adds ~1 ms on average to a start.
	readyPoll = 2 * time.Millisecond
	// attemptTimeout bounds one login once connected: mariadbd listens only
	// once its engines are up, so a greeting normally follows at once.
	attemptTimeout = 10 * time.Second
)

// waitReady polls until the admin account logs in over the socket, the
// process exits (an error with its log tail), or ctx ends.
func (d *Driver) waitReady(ctx context.Context, inst *instance, l layout) error {
	creds, err := l.admin()
	if err != nil {
		return err
	}
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		err := login(ctx, l.socket(), creds)
		if err == nil {
			return nil
		}
		if isAccessDenied(err) {
			return fmt.Errorf("mariadbd is up but the admin login fails: %w", err)
		}
		select {
		case <-inst.done:
			return fmt.Errorf("exited during start-up: %w", inst.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// login logs in with creds and quits: a real login proves more than a
// greeting, and closing without one makes mariadbd log "Aborted connection".
func login(ctx context.Context, socket string, creds compute.Credentials) error {
	var conn atomic.Value // net.Conn, read by the cancel callback
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(attemptTimeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = c.SetDeadline(deadline)
		conn.Store(c)
		return c, nil
	}
	// go-mysql's handshake does not watch ctx: a cancel expires the deadline.
	stop := context.AfterFunc(ctx, func() {
		if c, ok := conn.Load().(net.Conn); ok {
			_ = c.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	c, err := client.ConnectWithDialer(ctx, "unix", socket, creds.User, creds.Password, "", dial)
	if err != nil {
		return err
	}
	return c.Quit()
}

// isAccessDenied tells a wrong admin password (which no retry fixes) from a
// server that is not up yet.
func isAccessDenied(err error) bool {
	var myErr *mysql.MyError
	return errors.As(err, &myErr) && myErr.Code == mysql.ER_ACCESS_DENIED_ERROR
}
