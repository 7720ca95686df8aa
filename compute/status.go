package compute

import (
	"context"
	"errors"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Status is what the daemon sees of a compute right now, for the people
// who watch it: its state and its live activity.
type Status struct {
	ID    string             `json:"id"`
	State store.ComputeState `json:"state"`
	Error string             `json:"error,omitempty"`
	// LastActive is the last client traffic seen by this daemon or
	// reported by another.
	LastActive time.Time `json:"last_active,omitzero"`
	// IdleSuspendAt is when the idle scheduler suspends the compute unless
	// a command comes first; absent when it is not active, never suspends
	// when idle, or a session pins it.
	IdleSuspendAt time.Time `json:"idle_suspend_at,omitzero"`
	// Connections are the client connections open through this daemon.
	Connections int64 `json:"connections"`
	// StorageBytes is the storage last measured; absent before the first
	// measurement since the daemon started.
	StorageBytes int64 `json:"storage_bytes,omitempty"`
}

// fewProjects is how many projects Statuses looks up one by one; for more,
// one listing of every compute costs less.
const fewProjects = 50

// Statuses returns the status of each project's compute, by project id; a
// project without a compute has none.
func (m *Manager) Statuses(ctx context.Context, projects []store.Project) (map[string]Status, error) {
	out := make(map[string]Status, len(projects))
	if len(projects) <= fewProjects {
		for i := range projects {
			c, err := m.st.GetComputeByProject(ctx, projects[i].ID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[c.ProjectID] = m.status(c, &projects[i])
		}
		return out, nil
	}
	byID := make(map[string]*store.Project, len(projects))
	for i := range projects {
		byID[projects[i].ID] = &projects[i]
	}
	all, err := allPages(func(p store.Page) ([]store.Compute, error) { return m.st.ListComputes(ctx, p) })
	if err != nil {
		return nil, err
	}
	for i := range all {
		if p, ok := byID[all[i].ProjectID]; ok {
			out[p.ID] = m.status(&all[i], p)
		}
	}
	return out, nil
}

func (m *Manager) status(c *store.Compute, p *store.Project) Status {
	st := Status{ID: c.ID, State: c.State, Error: c.Error, LastActive: c.LastActive}
	a, ok := m.liveActivity(c.ID)
	if ok {
		if la := a.LastActive().UTC(); la.After(st.LastActive) {
			st.LastActive = la
		}
		st.Connections, st.StorageBytes = a.Conns(), a.StorageBytes()
	}
	if suspendsWhenIdle(c, p, a, ok) && !st.LastActive.IsZero() {
		st.IdleSuspendAt = st.LastActive.Add(time.Duration(p.Config.IdleTimeout) * time.Second)
	}
	return st
}

// suspendsWhenIdle reports whether the idle scheduler would suspend c once
// its idle timeout passes without a command: not while a session pins it,
// nor, for a project that keeps it up for open connections, while any is.
func suspendsWhenIdle(c *store.Compute, p *store.Project, a *Activity, live bool) bool {
	if c.State != store.StateActive || p.Config.IdleTimeout <= 0 {
		return false
	}
	if !live {
		return true
	}
	return a.Pinned() == 0 && (p.Config.SuspendsWithOpenConnections() || a.Conns() == 0)
}

// liveActivity returns a compute's live counters if this daemon has any,
// without making them.
func (m *Manager) liveActivity(computeID string) (*Activity, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.activity[computeID]
	return a, ok
}
