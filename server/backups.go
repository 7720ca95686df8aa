package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// Backups is the backup service as the API uses it.
type Backups interface {
	Catalog(ctx context.Context, c *store.Compute) (backup.Catalog, error)
	RestoreTo(ctx context.Context, c *store.Compute, to time.Time) (*store.Operation, error)
	BranchSteps(from *store.Compute, at time.Time) compute.RestoreSteps
	CopySteps(from *store.Compute) (compute.RestoreSteps, bool)
	Retire(ctx context.Context, p *store.Project, roles []store.Role, c *store.Compute) error
	LoadTombstone(ctx context.Context, projectID string) (*backup.Tombstone, error)
	DropTombstone(ctx context.Context, projectID string) error
}

// errBackupsOff answers backup requests on a daemon without backups.
var errBackupsOff = errors.New("backups are off on this daemon: set backup.enabled to true and restart it")

// backupCompute returns project {id}'s compute, for a backup request.
func (s *Server) backupCompute(r *http.Request) (*store.Project, *store.Compute, error) {
	p, err := s.project(r)
	if err != nil {
		return nil, nil, err
	}
	if s.backups == nil {
		return p, nil, errBackupsOff
	}
	c, err := s.st.GetComputeByProject(r.Context(), p.ID)
	if errors.Is(err, store.ErrNotFound) {
		return p, nil, compute.ErrNoCompute
	}
	return p, c, err
}

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	p, c, err := s.backupCompute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cat, err := s.backups.Catalog(r.Context(), c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cat.Snapshots == nil {
		cat.Snapshots = []backup.SnapshotRef{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"project_id": p.ID, "compute_id": c.ID, "backups": cat})
}

func (s *Server) restoreProject(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To string `json:"to"`
	}
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	var to time.Time // zero: latest
	if req.To != "latest" {
		var err error
		if to, err = time.Parse(time.RFC3339Nano, req.To); err != nil {
			s.fail(w, r, invalid("to must be an RFC 3339 time such as 2026-12-01T10:00:00Z, or latest; got %q", clip(req.To)))
			return
		}
	}
	if to.After(time.Now()) {
		s.fail(w, r, invalid("to (%s) is in the future", to.Format(time.RFC3339)))
		return
	}
	_, c, err := s.backupCompute(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.backups.RestoreTo(r.Context(), c, to.UTC())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err = s.st.GetCompute(r.Context(), c.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compute": c, "operation": op})
}

// retire keeps a project's data for undelete before it is deleted: its
// compute is suspended, and its binary logs and a snapshot are stored.
// A project whose data cannot be kept is not deleted.
func (s *Server) retire(r *http.Request, p *store.Project, c *store.Compute) error {
	if s.backups == nil {
		return nil
	}
	c, _, err := s.mgr.Suspend(r.Context(), c.ID, compute.ReasonAPI)
	if err != nil {
		return err
	}
	roles, err := s.st.ListRoles(r.Context(), p.ID)
	if err != nil {
		return err
	}
	if err := s.backups.Retire(r.Context(), p, roles, c); err != nil {
		return fmt.Errorf("%w; the project is not deleted: retry once the backup target is reachable", err)
	}
	return nil
}

// undeleteProject brings back a project deleted within the backup
// retention: the same id, name, tenant, config and role passwords, and
// its data as it was when it was deleted.
func (s *Server) undeleteProject(w http.ResponseWriter, r *http.Request) {
	if s.backups == nil {
		s.fail(w, r, errBackupsOff)
		return
	}
	ts, err := s.backups.LoadTombstone(r.Context(), r.PathValue("id"))
	if err == nil && !s.mayUndelete(r, ts) {
		err = fmt.Errorf("deleted project %s: %w", r.PathValue("id"), store.ErrNotFound)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := ts.Project
	if err := s.st.CreateProject(r.Context(), &p); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			err = fmt.Errorf("project name %q is taken again in its tenant: %w; rename or delete that project first", p.Name, err)
		}
		s.fail(w, r, err)
		return
	}
	c, op, err := s.restoreDeleted(r, ts)
	if err != nil {
		s.dropProject(r.Context(), &p)
		s.fail(w, r, err)
		return
	}
	if err := s.backups.DropTombstone(r.Context(), p.ID); err != nil {
		s.log.Warn("undeleted project keeps its tombstone", "project", p.ID, "err", err)
	}
	s.log.Info("project undeleted", "project", p.ID, "name", p.Name, "deleted_at", ts.DeletedAt)
	writeJSON(w, http.StatusOK, map[string]any{"project": p, "compute": c, "operation": op})
}

// mayUndelete applies the API key's scope to a deleted project: an admin,
// or a key of its tenant that is not scoped to one project.
func (s *Server) mayUndelete(r *http.Request, ts *backup.Tombstone) bool {
	p := who(r)
	return p.admin || (p.projectID == "" && p.tenantID == ts.Project.TenantID)
}

// restoreDeleted puts back a deleted project's roles and its compute, with
// the data its backups hold at their latest.
func (s *Server) restoreDeleted(r *http.Request, ts *backup.Tombstone) (*store.Compute, *store.Operation, error) {
	now := store.Now()
	for _, role := range ts.Roles {
		err := s.st.CreateRole(r.Context(), &store.Role{ProjectID: ts.Project.ID, Name: role.Name,
			PasswordHash: role.PasswordHash, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			return nil, nil, err
		}
	}
	return s.mgr.CreateFrom(r.Context(), ts.Project.ID, ts.Compute.Spec, s.backups.BranchSteps(&ts.Compute, time.Time{}))
}
