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

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// Options shape the API under test.
type Options struct {
	Tokens []string
	Limits server.Limits
	// Driver, when set, wraps the local driver (to change what it says of
	// itself).
	Driver func(*local.Driver) compute.Driver
	// Backups turns the binary log on and serves backups to a folder.
	Backups bool
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
	drv, err := local.New(local.Options{Dir: computes, StopTimeout: 30 * time.Second, Binlog: o.Backups, Logger: log})
	if err != nil {
		t.Fatalf("local driver (is mariadb-server installed?): %v", err)
	}
	var d compute.Driver = drv
	if o.Driver != nil {
		d = o.Driver(drv)
	}
	mopts := compute.Options{Store: st, Driver: d, Node: "test", Logger: log}
	var backups server.Backups
	var svc *backup.Service
	if o.Backups {
		svc = &backup.Service{Target: backup.Dir{Root: filepath.Join(dir, "backups")}, Store: st, Log: log,
			DataDir: func(c *store.Compute) (string, bool) { return drv.DataDir(c), true }, Staging: drv.Staging}
		mopts.AfterSuspend, mopts.AfterProvision, backups = svc.AfterSuspend, svc.AfterProvision, svc
	}
	mgr := compute.New(mopts)
	if svc != nil {
		svc.Computes = mgr
		svc.Start()
		t.Cleanup(svc.Stop)
	}
	srv := httptest.NewServer(server.New(server.Options{Store: st, Manager: mgr, Tokens: o.Tokens,
		Limits: o.Limits, ProxyAddr: "127.0.0.1:3306", Logger: log, Backups: backups}).Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = mgr.SuspendAll(context.Background(), compute.ReasonShutdown)
	})
	return srv, computes
}
