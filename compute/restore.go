package compute

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/serverlessd/serverlessd/store"
)

// ErrCannotRestore means the compute's driver cannot swap its data.
var ErrCannotRestore = errors.New("this compute driver cannot restore data yet")

// DataReplacer is a driver that can swap a stopped compute's datadir for a
// prepared one (the local driver).
type DataReplacer interface {
	ReplaceData(ctx context.Context, c *store.Compute, src string) error
}

// DataCopier is a driver that can copy a stopped compute's datadir and
// provision a new compute from a prepared one (the local driver).
type DataCopier interface {
	CloneData(ctx context.Context, c *store.Compute) (string, error)
	ProvisionFrom(ctx context.Context, c *store.Compute, src string) error
}

// RestoreSteps are what a restore does with the compute stopped and locked.
type RestoreSteps struct {
	// Prepare keeps what it must of the current data and builds the new
	// datadir, returning its folder for the driver's ReplaceData.
	Prepare func(ctx context.Context, c *store.Compute) (src string, err error)
	// Replay, when set, runs once the compute runs on the new data, before
	// its roles are applied and before any client can reach it.
	Replay func(ctx context.Context, c *store.Compute, addr string, admin Credentials) error
	// InPlace means Prepare replaces the data itself, on the compute's
	// volume (a backup agent), and returns no folder: the driver need not
	// be a DataReplacer.
	InPlace bool
}

// Restore replaces a compute's data: it suspends the compute if it runs,
// then runs steps under the compute's lock (wakes wait for it), and starts
// the compute on the new data. It returns the restore's operation.
func (m *Manager) Restore(ctx context.Context, computeID string, steps RestoreSteps) (*store.Operation, error) {
	rep, ok := m.drv.(DataReplacer)
	if !ok && !steps.InPlace {
		return nil, fmt.Errorf("restore compute %s: %w (driver %s)", computeID, ErrCannotRestore, m.drv.Name())
	}
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return nil, fmt.Errorf("restore compute %s: %w", computeID, err)
	}
	if err := m.checkNode(c); err != nil {
		return nil, err
	}
	switch c.State {
	case store.StateDestroying:
		return nil, fmt.Errorf("restore compute %s: %w", c.ID, ErrDestroying)
	case store.StateActive, store.StateFailed:
		if c, _, err = m.suspendLocked(ctx, c, ReasonRestore); err != nil {
			return nil, fmt.Errorf("restore compute %s: %w", computeID, err)
		}
	}
	op, err := m.runOp(ctx, c, store.ActionRestore, ReasonAPI, func() error {
		src, err := steps.Prepare(ctx, c)
		if err != nil || steps.InPlace {
			return err
		}
		return rep.ReplaceData(ctx, c, src)
	})
	if err != nil {
		return op, fmt.Errorf("restore compute %s of project %s: %w", c.ID, c.ProjectID, err)
	}
	var first func(addr string) error
	if steps.Replay != nil {
		first = func(addr string) error {
			cred, err := m.drv.Admin(ctx, c)
			if err != nil {
				return err
			}
			return steps.Replay(ctx, c, addr, cred)
		}
	}
	if _, err := m.startInBudgetWith(ctx, c, ReasonRestore, first); err != nil {
		return op, err
	}
	return op, nil
}

// CreateFrom is Create for a compute whose data is not the template's but
// what steps.Prepare builds (a branch); steps.Replay runs at its first
// start, before its roles are applied.
func (m *Manager) CreateFrom(ctx context.Context, projectID string, spec store.ComputeSpec, steps RestoreSteps) (*store.Compute, *store.Operation, error) {
	cp, ok := m.drv.(DataCopier)
	if !ok && !steps.InPlace {
		return nil, nil, fmt.Errorf("create a compute from a copy: %w (driver %s)", ErrCannotRestore, m.drv.Name())
	}
	provision := func(ctx context.Context, c *store.Compute) error {
		if steps.InPlace {
			// The storage first: Prepare fills it.
			if err := m.drv.Provision(ctx, c); err != nil {
				return err
			}
			_, err := steps.Prepare(ctx, c)
			return err
		}
		src, err := steps.Prepare(ctx, c)
		if err != nil {
			return err
		}
		return cp.ProvisionFrom(ctx, c, src)
	}
	var first func(*store.Compute, string) error
	if steps.Replay != nil {
		first = func(c *store.Compute, addr string) error {
			cred, err := m.drv.Admin(ctx, c)
			if err != nil {
				return err
			}
			return steps.Replay(ctx, c, addr, cred)
		}
	}
	return m.create(ctx, projectID, spec, provision, first)
}

// CopyData copies a compute's datadir as it is now: a running compute is
// suspended first (its client sessions stay, and their next command wakes
// it), and wakes wait for the copy. It returns the copy's folder, for a
// DataCopier's ProvisionFrom.
func (m *Manager) CopyData(ctx context.Context, computeID string) (string, error) {
	cp, ok := m.drv.(DataCopier)
	if !ok {
		return "", fmt.Errorf("copy compute %s: %w (driver %s)", computeID, ErrCannotRestore, m.drv.Name())
	}
	var dir string
	err := m.WhileStopped(ctx, computeID, func(c *store.Compute) (err error) {
		dir, err = cp.CloneData(ctx, c)
		return err
	})
	return dir, err
}

// WhileStopped runs fn on a compute that does not run meanwhile: a running
// one is suspended first (its client sessions stay, and their next command
// wakes it), and wakes wait for fn.
func (m *Manager) WhileStopped(ctx context.Context, computeID string, fn func(c *store.Compute) error) error {
	unlock := m.lock(computeID)
	defer unlock()
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return fmt.Errorf("copy compute %s: %w", computeID, err)
	}
	if err := m.checkNode(c); err != nil {
		return err
	}
	switch c.State {
	case store.StateDestroying:
		return fmt.Errorf("copy compute %s: %w", c.ID, ErrDestroying)
	case store.StateActive, store.StateFailed:
		if c, _, err = m.suspendLocked(ctx, c, ReasonBranch); err != nil {
			return fmt.Errorf("copy compute %s: %w", computeID, err)
		}
	}
	return fn(c)
}

// RotateBinlog closes an active compute's binary log and opens the next
// one, unless nothing was written since since. It returns the files on
// the compute, oldest first (the newest, still written, last), and the
// position now.
func (m *Manager) RotateBinlog(ctx context.Context, computeID string, since BinlogPos) (names []string, at BinlogPos, err error) {
	err = m.withAdmin(ctx, computeID, func(c *store.Compute, conn *client.Conn) error {
		if at, err = binlogPos(conn); err != nil || at == since {
			return err
		}
		if _, err := conn.Execute("FLUSH BINARY LOGS"); err != nil {
			return fmt.Errorf("rotate the binary log of compute %s: %w", c.ID, err)
		}
		if at, err = binlogPos(conn); err != nil {
			return err
		}
		r, err := conn.Execute("SHOW BINARY LOGS")
		if err != nil {
			return fmt.Errorf("list the binary logs of compute %s: %w", c.ID, err)
		}
		for i := range r.RowNumber() {
			name, _ := r.GetString(i, 0)
			names = append(names, name)
		}
		return nil
	})
	return names, at, err
}

func binlogPos(conn *client.Conn) (BinlogPos, error) {
	r, err := conn.Execute("SHOW MASTER STATUS")
	if err != nil {
		return BinlogPos{}, fmt.Errorf("read the binary log position: %w", err)
	}
	if r.RowNumber() == 0 {
		return BinlogPos{}, errors.New("read the binary log position: the binary log is off")
	}
	file, _ := r.GetString(0, 0)
	pos, _ := r.GetUint(0, 1)
	return BinlogPos{File: file, Pos: pos}, nil
}

// PurgeBinlogs deletes an active compute's binary logs older than name,
// which the caller has shipped.
func (m *Manager) PurgeBinlogs(ctx context.Context, computeID, name string) error {
	if strings.ContainsAny(name, `'\`) {
		return fmt.Errorf("purge binary logs of compute %s: invalid file name %q", computeID, name)
	}
	return m.withAdmin(ctx, computeID, func(c *store.Compute, conn *client.Conn) error {
		if _, err := conn.Execute("PURGE BINARY LOGS TO '" + name + "'"); err != nil {
			return fmt.Errorf("purge binary logs of compute %s: %w", c.ID, err)
		}
		return nil
	})
}

// AdminAccess returns an active compute's address and the daemon's
// credentials on it, for tools that log in themselves (mariadb-backup).
func (m *Manager) AdminAccess(ctx context.Context, computeID string) (string, Credentials, error) {
	c, err := m.st.GetCompute(ctx, computeID)
	if err != nil {
		return "", Credentials{}, err
	}
	if c.State != store.StateActive {
		return "", Credentials{}, fmt.Errorf("compute %s is %s, not active", c.ID, c.State)
	}
	cred, err := m.drv.Admin(ctx, c)
	return c.Address, cred, err
}

// BinlogPos is a position in a compute's binary log.
type BinlogPos struct {
	File string
	Pos  uint64
}
