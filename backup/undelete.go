package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Tombstone is what a deleted project leaves in the backup target, so that
// it can be brought back within the retention: the project, its roles
// (with their password hashes, as the store keeps them) and its compute.
// Its compute's snapshots and binary logs stay where they were.
type Tombstone struct {
	Project   store.Project `json:"project"`
	Roles     []TombRole    `json:"roles"`
	Compute   store.Compute `json:"compute"`
	DeletedAt time.Time     `json:"deleted_at"`
}

// TombRole is a deleted project's role.
type TombRole struct {
	Name         string `json:"name"`
	PasswordHash string `json:"password_hash"`
}

func tombstoneKey(projectID string) string { return "deleted/" + projectID + ".json" }

// Retire keeps a project about to be deleted for undelete: its stopped
// compute's binary logs and a snapshot, then its tombstone. The caller
// destroys the compute afterwards; the service forgets it.
func (s *Service) Retire(ctx context.Context, p *store.Project, roles []store.Role, c *store.Compute) error {
	if _, err := s.Backup(ctx, c); err != nil {
		return fmt.Errorf("keep the data of project %s before deleting it: %w", p.ID, err)
	}
	ts := Tombstone{Project: *p, Compute: *c, DeletedAt: time.Now().UTC()}
	for _, r := range roles {
		ts.Roles = append(ts.Roles, TombRole{Name: r.Name, PasswordHash: r.PasswordHash})
	}
	b, err := json.Marshal(ts)
	if err != nil {
		return err
	}
	if err := s.Target.Put(ctx, tombstoneKey(p.ID), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("keep project %s for undelete: %w", p.ID, err)
	}
	s.forget(c.ID)
	return nil
}

// forget drops what the service knows of a compute about to be destroyed:
// a job queued for it ends without touching its files.
func (s *Service) forget(computeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.computes[computeID]; ok {
		st.gone = true
		delete(s.computes, computeID)
	}
}

// LoadTombstone reads a deleted project's tombstone; store.ErrNotFound
// when there is none, or it is older than the retention.
func (s *Service) LoadTombstone(ctx context.Context, projectID string) (*Tombstone, error) {
	r, err := s.Target.Get(ctx, tombstoneKey(projectID))
	if err != nil {
		return nil, fmt.Errorf("deleted project %s: %w", projectID, store.ErrNotFound)
	}
	defer r.Close()
	var ts Tombstone
	if err := json.NewDecoder(r).Decode(&ts); err != nil {
		return nil, fmt.Errorf("deleted project %s: %v: %w", projectID, err, ErrCorrupt)
	}
	if time.Since(ts.DeletedAt) > s.Retention {
		return nil, fmt.Errorf("deleted project %s: it was deleted %s, before the retention of %s: %w",
			projectID, ts.DeletedAt.Format(time.RFC3339), s.Retention, store.ErrNotFound)
	}
	return &ts, nil
}

// DropTombstone removes a tombstone once its project is back.
func (s *Service) DropTombstone(ctx context.Context, projectID string) error {
	return s.Target.Delete(ctx, tombstoneKey(projectID))
}
