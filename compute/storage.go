package compute

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// How AllowFreeing lifts read_only for a DROP: for liftFor, at most once
// per liftEvery, and not past liftCeiling of the limit.
const (
	liftFor     = 500 * time.Millisecond
	liftEvery   = 2 * time.Second
	liftCeiling = 1.10
)

// storageState is a compute's storage lock, kept with its Activity so
// that the proxy reads it without a lookup.
type storageState struct {
	full     atomic.Bool
	checking atomic.Bool // a scheduler's check is under way
	// mu orders checks and lifts; lifted means read_only is off for a
	// DROP while the compute is still full.
	mu       sync.Mutex
	lifted   bool
	liftedAt time.Time
}

// StorageFull reports whether the compute is read-only for its storage.
func (a *Activity) StorageFull() bool { return a.storage.full.Load() }

// CheckStorage measures an active compute's storage against its limit
// (spec.storage; none when empty) and makes it read-only or writable
// again. It returns the bytes used.
func (m *Manager) CheckStorage(ctx context.Context, computeID string) (int64, error) {
	if m.drv.BoundsStorage() {
		return 0, nil
	}
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil || c.State != store.StateActive || !m.isWarm(c) {
		return 0, err
	}
	limit, err := storageLimit(c)
	if err != nil || limit == 0 {
		return 0, err
	}
	a := m.Activity(c.ID)
	used, err := a.measure(func() (int64, error) { return m.drv.StorageBytes(ctx, c) })
	if err != nil {
		return 0, fmt.Errorf("measure storage of compute %s: %w", c.ID, err)
	}
	a.storage.mu.Lock()
	defer a.storage.mu.Unlock()
	switch full := a.StorageFull(); {
	case !full && float64(used) >= lockAt*float64(limit):
		return used, m.setReadOnly(ctx, c, true, used, limit)
	case full && float64(used) < unlockAt*float64(limit):
		return used, m.setReadOnly(ctx, c, false, used, limit)
	case full && a.storage.lifted:
		m.log.Info("the DROP did not free enough: read-only again", "compute", c.ID, "project", c.ProjectID,
			"used_bytes", used, "limit_bytes", limit)
		return used, m.relock(ctx, c)
	}
	return used, nil
}

// relock turns read_only back on after a lift that freed too little.
func (m *Manager) relock(ctx context.Context, c *store.Compute) error {
	if err := m.switchReadOnly(ctx, c, true); err != nil {
		return err
	}
	m.Activity(c.ID).storage.lifted = false
	return nil
}

// switchReadOnly sets MariaDB's read_only on the compute as the daemon's
// account.
func (m *Manager) switchReadOnly(ctx context.Context, c *store.Compute, on bool) error {
	conn, err := m.adminConn(ctx, c, c.Address)
	if err != nil {
		return err
	}
	defer quit(conn)
	if err := mariadb.SetReadOnly(conn, on); err != nil {
		return fmt.Errorf("compute %s: %w", c.ID, err)
	}
	return nil
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
	if err := m.switchReadOnly(ctx, c, on); err != nil {
		return err
	}
	st := &m.Activity(c.ID).storage
	st.full.Store(on)
	st.lifted = false
	log := m.log.With("compute", c.ID, "project", c.ProjectID, "used_bytes", used, "limit_bytes", limit)
	if on {
		log.Warn("compute reached its storage limit: read-only until space is freed (DROP or TRUNCATE) or the limit raised")
	} else {
		log.Info("compute is below its storage limit again: writable")
	}
	m.met.StorageFull(on)
	return nil
}

// AllowFreeing lets one DROP or TRUNCATE through a compute that is
// read-only for its storage: MariaDB's read_only refuses them to tenants
// too, and they are the only way to free space (InnoDB files do not shrink
// on DELETE). It lifts read_only for a moment; the caller then forwards
// the client's statement, which MariaDB runs with the client's own
// privileges (and its temporary tables), and the storage is measured
// again shortly after: the compute is read-only again unless enough was
// freed. Lifts are spaced by liftEvery, and none is made past liftCeiling
// of the limit, so a tenant cannot write its way past the limit through
// them. It is a no-op on a compute that is not read-only.
func (m *Manager) AllowFreeing(ctx context.Context, computeID string) error {
	a := m.Activity(computeID)
	if !a.StorageFull() {
		return nil
	}
	a.storage.mu.Lock()
	defer a.storage.mu.Unlock()
	if time.Since(a.storage.liftedAt) < liftEvery {
		return nil
	}
	err := m.withAdmin(ctx, computeID, func(c *store.Compute, conn *client.Conn) error {
		limit, err := storageLimit(c)
		if err != nil || limit == 0 {
			return err
		}
		used, err := m.drv.StorageBytes(ctx, c)
		if err != nil {
			return err
		}
		if float64(used) >= liftCeiling*float64(limit) {
			m.log.Warn("a DROP was refused: the compute is too far over its storage limit; raise the limit",
				"compute", c.ID, "project", c.ProjectID, "used_bytes", used, "limit_bytes", limit)
			return nil
		}
		if err := mariadb.SetReadOnly(conn, false); err != nil {
			return err
		}
		a.storage.liftedAt, a.storage.lifted = time.Now(), true
		return nil
	})
	if err == nil && a.storage.lifted {
		time.AfterFunc(liftFor, func() { m.recheckStorage(computeID) })
	}
	return err
}

// recheckStorage is the measure that follows a lift.
func (m *Manager) recheckStorage(computeID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.CheckStorage(ctx, computeID); err != nil {
		m.log.Warn("storage check after a DROP failed", "compute", computeID, "err", err)
	}
}
