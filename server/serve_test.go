package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/server"
)

// TestShutdownBeforeServe: a daemon told to stop while it is still starting
// calls Shutdown before, or while, Serve runs. Serve must then return and
// close its listener, not leave the API up. Run under -race, the concurrent
// case also checks that the two goroutines share nothing unguarded.
func TestShutdownBeforeServe(t *testing.T) {
	for _, order := range []string{"before", "concurrently"} {
		t.Run(order, func(t *testing.T) {
			for range 20 {
				shutdownAndServe(t, order == "before")
			}
		})
	}
}

func shutdownAndServe(t *testing.T, first bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	shut := func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	if first {
		shut()
	} else {
		go shut()
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still serves 10s after Shutdown")
	}
	if conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("the API still accepts connections on %s after Shutdown", ln.Addr())
	}
}
