package local

import (
	"context"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/compute/mariadb"
)

const (
	// readyPoll is the pause between two login attempts while mariadbd
	// starts. A failed attempt costs microseconds (no socket yet, or nobody
	// listening), so polling this often adds ~1 ms on average to a start.
	readyPoll = 2 * time.Millisecond
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
		err := mariadb.Login(ctx, "unix", l.socket(), creds.User, creds.Password)
		if err == nil {
			return nil
		}
		if mariadb.IsAccessDenied(err) {
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
