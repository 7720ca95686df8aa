package mariadb

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
)

// loginTimeout bounds one login once connected: mariadbd listens only once
// its engines are up (and its init file has run), so a greeting normally
// follows at once.
const loginTimeout = 10 * time.Second

// Login logs in to the mariadbd at addr ("unix" socket path or "tcp"
// host:port) as user and quits. Drivers poll it while a compute starts: a
// real login proves more than a greeting, and closing without one makes
// mariadbd log "Aborted connection".
func Login(ctx context.Context, network, addr, user, password string) error {
	var conn atomic.Value // net.Conn, read by the cancel callback
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(loginTimeout)
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
	c, err := client.ConnectWithDialer(ctx, network, addr, user, password, "", dial)
	if err != nil {
		return err
	}
	return c.Quit()
}

// IsAccessDenied tells a wrong password (which no retry fixes) from a
// server that is not up yet.
func IsAccessDenied(err error) bool {
	var myErr *mysql.MyError
	return errors.As(err, &myErr) && myErr.Code == mysql.ER_ACCESS_DENIED_ERROR
}
