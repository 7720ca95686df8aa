package bench

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Bare is a plain mariadbd on a copy of a compute's folder, started without
// serverlessd: the floor a cold login cannot beat. It runs the compute's own
// generated my.cnf (paths rewritten to the copy), so it has the same
// settings, the same datadir and the same buffer pool dump to load.
type Bare struct {
	Root   string // the copy's folder
	socket string
	cnf    string
	cmd    *exec.Cmd
	exited chan error // receives the exit of cmd
}

// CopyCompute copies the stopped compute folder src (holding data/, my.cnf,
// run/, tmp/, files/) to dst and rewrites the paths in its my.cnf. The
// compute must be suspended: a copy of a live datadir is not consistent.
func CopyCompute(src, dst string) (*Bare, error) {
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	cnfPath := filepath.Join(dst, "my.cnf")
	cnf, err := os.ReadFile(cnfPath)
	if err != nil {
		return nil, err
	}
	cnf = bytes.ReplaceAll(cnf, []byte(`"`+src+`/`), []byte(`"`+dst+`/`))
	// init-file only sets the admin password at a compute's first start.
	var keep [][]byte
	for _, line := range bytes.Split(cnf, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("init-file=")) {
			keep = append(keep, line)
		}
	}
	cnf = bytes.Join(keep, []byte("\n"))
	if err := os.WriteFile(cnfPath, cnf, 0o600); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(dst, "run", "mariadbd.pid"))
	return &Bare{Root: dst, socket: filepath.Join(dst, "run", "mysqld.sock"), cnf: cnfPath}, nil
}

// Socket is the copy's unix socket.
func (b *Bare) Socket() string { return b.socket }

// StartToReady starts mariadbd and returns the time from exec until user
// logs in over the socket and SELECT 1 answers, polling every millisecond
// (the driver polls every 2 ms, so this floor is, if anything, optimistic).
func (b *Bare) StartToReady(ctx context.Context, user, pass string) (time.Duration, error) {
	args := []string{"--defaults-file=" + b.cnf}
	if u, err := userName(); err == nil {
		args = append(args, "--user="+u)
	}
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd = "unix", b.socket, user, pass
	cfg.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(b.Root, "bare.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	b.cmd = exec.Command("mariadbd", args...)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	b.exited = make(chan error, 1)
	t0 := time.Now()
	if err := b.cmd.Start(); err != nil {
		return 0, fmt.Errorf("start mariadbd: %w", err)
	}
	go func(cmd *exec.Cmd, exited chan<- error) { exited <- cmd.Wait() }(b.cmd, b.exited)
	for {
		if err := Select1(ctx, conn); err == nil {
			return time.Since(t0), nil
		}
		select {
		case err := <-b.exited:
			b.cmd = nil
			return 0, fmt.Errorf("mariadbd exited during start-up: %v (see %s/bare.log)", err, b.Root)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// Stop shuts mariadbd down cleanly (SIGTERM) and waits for it.
func (b *Bare) Stop() error {
	if b.cmd == nil || b.cmd.Process == nil {
		return nil
	}
	defer func() { b.cmd = nil }()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return nil
	case <-time.After(60 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
		return errors.New("mariadbd did not stop within 60s; killed")
	}
}

func userName() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

// Select1 opens one connection with conn, runs SELECT 1 and closes it: a
// whole login, as a client without a pool pays it.
func Select1(ctx context.Context, conn driver.Connector) error {
	c, err := conn.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rows, err := c.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
	if err != nil {
		return err
	}
	dest := make([]driver.Value, 1)
	err = rows.Next(dest)
	rows.Close()
	return err
}

// Connector returns a go-sql-driver connector for a DSN.
func Connector(dsn string) (driver.Connector, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return mysql.NewConnector(cfg)
}
