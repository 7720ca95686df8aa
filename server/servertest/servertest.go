// Package servertest serves the real API for tests: a SQLite store, the
// local mariadbd driver and a compute manager, over a real socket.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// Options shape the API under test.
type Options struct {
	Tokens []string
	Limits server.Limits
	// Driver, when set, wraps the local driver (to change what it says of
	// itself).
	Driver func(*local.Driver) compute.Driver
}

// New serves the API until the test ends, then suspends every compute it
// started. It returns the server and the folder of the computes.
func New(t testing.TB, o Options) (*httptest.Server, string) {
	t.Helper()
	dir := localtest.Dir(t)
	st, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	computes := filepath.Join(dir, "computes")
	drv, err := local.New(local.Options{Dir: computes, StopTimeout: 30 * time.Second, Logger: log})
	if err != nil {
		t.Fatalf("local driver (is mariadb-server installed?): %v", err)
	}
	var d compute.Driver = drv
	if o.Driver != nil {
		d = o.Driver(drv)
	}
	mgr := compute.New(compute.Options{Store: st, Driver: d, Node: "test", Logger: log})
	srv := httptest.NewServer(server.New(server.Options{Store: st, Manager: mgr, Tokens: o.Tokens,
		Limits: o.Limits, ProxyAddr: "127.0.0.1:3306", Logger: log}).Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = mgr.SuspendAll(context.Background(), compute.ReasonShutdown)
	})
	return srv, computes
}
