package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialBackendFullBacklog: a unix socket whose listen backlog is full
// refuses a connect at once (EAGAIN); dialBackend waits for room instead,
// as a TCP client would, and fails only at its deadline.
func TestDialBackendFullBacklog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := 0; ; i++ { // fill the backlog
		c, err := net.Dial("unix", path)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("dial %d: %v", i, err)
			}
			break
		}
		defer c.Close()
		if i > 100 {
			t.Fatal("the backlog never filled")
		}
	}
	ctx := context.Background()
	if _, err := dialBackend(ctx, "unix", path, time.Now().Add(100*time.Millisecond)); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("with nobody accepting: %v, want EAGAIN at the deadline", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c, err := dialBackend(ctx, "unix", path, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("once accepting: %v", err)
	}
	c.Close()
}
