package compute

import (
	"context"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Unreachable is the proxy's report that the backend at res.Address did
// not accept a connection. With a driver that can check its backends, the
// compute is checked once, under its lock: a backend restarting in place
// is waited for, and a lost one is marked failed and started again, so the
// login that met the dead address goes on instead of failing. It returns
// where to connect now. Other drivers report their backends' exits
// themselves: the cause is returned as it is.
func (m *Manager) Unreachable(ctx context.Context, res WakeResult, cause error) (WakeResult, error) {
	chk, ok := m.drv.(BackendChecker)
	if !ok {
		return WakeResult{}, cause
	}
	t0 := time.Now()
	unlock := m.lock(res.ComputeID)
	c, err := m.st.GetCompute(ctx, res.ComputeID)
	if err != nil {
		unlock()
		return WakeResult{}, fmt.Errorf("compute %s unreachable (%w), and reading it failed: %w", res.ComputeID, cause, err)
	}
	if c.State == store.StateActive && c.Address == res.Address {
		// Nobody handled it yet: this caller checks for everyone.
		if err := chk.CheckBackend(ctx, c, res.Address); err == nil {
			unlock()
			m.log.Info("compute answered again at its address", "compute", c.ID, "project", c.ProjectID,
				"address", res.Address, "duration_ms", time.Since(t0).Milliseconds())
			return res, nil
		} else {
			m.log.Warn("compute unreachable and lost; starting it again", "compute", c.ID, "project", c.ProjectID,
				"address", res.Address, "cause", cause, "err", err)
			m.markFailed(ctx, c, fmt.Errorf("backend unreachable at %s: %w", res.Address, err))
		}
	}
	unlock()
	// The address came from memory: another daemon may have moved the
	// compute since.
	m.dropWarmIf(res)
	return m.Wake(ctx, res.ProjectID)
}
