package server

import (
	"context"
	"errors"
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
