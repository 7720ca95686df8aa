package compute

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

// A compute over its storage limit is made read-only for tenants: MariaDB's
// read_only refuses every write of an account without READ_ONLY ADMIN
// (which no tenant holds), whatever the path (statements, prepared
// statements, routines). It is made read-only at lockAt of its limit, so
// that MariaDB still has room for its own logs, and writable again below
// unlockAt, so that a compute at the edge does not flap.
const (
	lockAt   = 0.95
	unlockAt = 0.90
)

// ErrStorageFull means the compute is read-only because it reached its
// storage limit.
var ErrStorageFull = errors.New("storage limit reached")

// storageState is a compute's storage lock, kept with its Activity so
// that the proxy reads it without a lookup.
type storageState struct {
	full atomic.Bool
}

// StorageFull reports whether the compute is read-only for its storage.
func (a *Activity) StorageFull() bool { return a.storage.full.Load() }

// CheckStorage measures an active compute's storage against its limit
// (spec.storage; none when empty) and makes it read-only or writable
// again. It returns the bytes used.
func (m *Manager) CheckStorage(ctx context.Context, computeID string) (int64, error) {
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil || c.State != store.StateActive || !m.isWarm(c) {
		return 0, err
	}
	limit, err := storageLimit(c)
	if err != nil || limit == 0 {
		return 0, err
	}
	used, err := m.drv.StorageBytes(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("measure storage of compute %s: %w", c.ID, err)
	}
	a := m.Activity(c.ID)
	switch full := a.StorageFull(); {
	case !full && float64(used) >= lockAt*float64(limit):
		return used, m.setReadOnly(ctx, c, true, used, limit)
	case full && float64(used) < unlockAt*float64(limit):
		return used, m.setReadOnly(ctx, c, false, used, limit)
	}
	return used, nil
}

// clearStorage forgets a stopped compute's read-only state: read_only is
// not kept across a restart, and the first check after the next start
// sets it again if the compute is still over its limit.
func (m *Manager) clearStorage(computeID string) {
	if m.Activity(computeID).storage.full.Swap(false) {
		m.met.StorageFull(false)
	}
}

// checkStorageSoon runs the first storage check of a compute that just
// started, off the wake's path.
func (m *Manager) checkStorageSoon(computeID string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := m.CheckStorage(ctx, computeID); err != nil {
			m.log.Warn("storage check after start failed", "compute", computeID, "err", err)
		}
	}()
}

// storageLimit is the compute's storage size in bytes, 0 for none.
func storageLimit(c *store.Compute) (int64, error) {
	if c.Spec.Storage == "" {
		return 0, nil
	}
	n, err := quantity.Units(c.Spec.Storage)
	if err != nil {
		return 0, fmt.Errorf("compute %s: storage %q: %w", c.ID, c.Spec.Storage, err)
	}
	return n, nil
}

// setReadOnly switches MariaDB's read_only as the daemon's account and
// records it where the proxy and the log see it.
func (m *Manager) setReadOnly(ctx context.Context, c *store.Compute, on bool, used, limit int64) error {
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := mariadb.SetReadOnly(conn, on); err != nil {
		return fmt.Errorf("compute %s: %w", c.ID, err)
	}
	m.Activity(c.ID).storage.full.Store(on)
	log := m.log.With("compute", c.ID, "project", c.ProjectID, "used_bytes", used, "limit_bytes", limit)
	if on {
		log.Warn("compute reached its storage limit: read-only until space is freed (DROP or TRUNCATE) or the limit raised")
	} else {
		log.Info("compute is below its storage limit again: writable")
	}
	m.met.StorageFull(on)
	return nil
}

// FreeSpace runs a client's DROP or TRUNCATE statement on a compute that is
// read-only for its storage, where MariaDB would refuse it: the daemon's
// account runs it, rebuilt from its parsed names, for a role that holds
// DROP on each schema it names. thread is the client's backend thread,
// whose current schema names unqualified tables. It returns
// mariadb.ErrNotFreeing for any other statement, which the caller then
// forwards as usual. After a success the storage is checked again, so the
// compute is writable at once if enough was freed.
func (m *Manager) FreeSpace(ctx context.Context, computeID, user string, thread uint32, query string) error {
	f, err := mariadb.ParseFreeing(query)
	if err != nil {
		return err
	}
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return err
	}
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := authorizeFreeing(conn, f, user, thread); err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := conn.Execute(f.SQL()); err != nil {
		return err
	}
	m.log.Info("space freed while read-only", "compute", c.ID, "project", c.ProjectID, "user", user,
		"statement", f.SQL(), "duration", time.Since(t0))
	_, err = m.CheckStorage(ctx, computeID)
	return err
}

// authorizeFreeing resolves f's unqualified names with the client's
// current schema and checks that user may drop from every schema named.
func authorizeFreeing(conn *client.Conn, f *mariadb.Freeing, user string, thread uint32) error {
	res, err := conn.Execute("SELECT IFNULL(DB, '') FROM information_schema.PROCESSLIST WHERE ID = ?", thread)
	if err != nil {
		return err
	}
	db := ""
	if res.RowNumber() > 0 {
		db, _ = res.GetString(0, 0)
	}
	res.Close()
	if err := f.Resolve(db); err != nil {
		return err
	}
	for _, schema := range f.Schemas() {
		res, err := conn.Execute(mariadb.CanDrop, user, schema, user)
		if err != nil {
			return err
		}
		ok := res.RowNumber() > 0
		res.Close()
		if !ok {
			return fmt.Errorf("DROP command denied to user '%s' for schema '%s'", user, schema)
		}
	}
	return nil
}
