package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// createBranch makes a new project, in the source's tenant, whose data is
// the source's at a time: now (a copy of its datadir, with reflinks where
// the filesystem has them), or a past time (from its backups). Its roles
// are the source's, with new passwords returned once.
func (s *Server) createBranch(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
		At   string `json:"at"`
	}
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	at, err := branchTime(in.At)
	if err == nil {
		err = validateName("project", in.Name)
	}
	if err == nil && who(r).projectID != "" {
		err = forbidden{"a project-scoped API key cannot create projects; use a tenant key"}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	src, srcC, err := s.branchSource(r, at)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.newBranchProject(r, src, in.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.fillBranch(r, src, srcC, p, at)
	if err != nil {
		s.dropProject(r.Context(), p)
		s.fail(w, r, err)
		return
	}
	s.log.Info("branch created", "project", p.ID, "name", p.Name, "from", src.ID, "at", in.At)
	writeJSON(w, http.StatusCreated, out)
}

// branchTime reads at: "now" or empty is the zero time.
func branchTime(at string) (time.Time, error) {
	if at == "" || at == "now" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return t, invalid("at must be now or an RFC 3339 time such as 2026-12-01T10:00:00Z; got %q", clip(at))
	}
	if t.After(time.Now()) {
		return t, invalid("at (%s) is in the future", t.Format(time.RFC3339))
	}
	return t.UTC(), nil
}

// branchSource returns project {id} and its compute; a branch at a past
// time needs backups.
func (s *Server) branchSource(r *http.Request, at time.Time) (*store.Project, *store.Compute, error) {
	src, err := s.project(r)
	if err != nil {
		return nil, nil, err
	}
	if !at.IsZero() && s.backups == nil {
		return nil, nil, errBackupsOff
	}
	c, err := s.st.GetComputeByProject(r.Context(), src.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, compute.ErrNoCompute
	}
	return src, c, err
}

// newBranchProject records the branch's project with the source's config,
// within its tenant's quotas.
func (s *Server) newBranchProject(r *http.Request, src *store.Project, name string) (*store.Project, error) {
	t, err := s.st.GetTenant(r.Context(), src.TenantID)
	if err != nil {
		return nil, err
	}
	if err := s.checkProjectCount(r, t); err != nil {
		return nil, err
	}
	now := store.Now()
	p := &store.Project{ID: store.NewID("prj"), Name: name, TenantID: src.TenantID, Config: src.Config, CreatedAt: now, UpdatedAt: now}
	if err := s.st.CreateProject(r.Context(), p); err != nil {
		return nil, err
	}
	return p, nil
}

// fillBranch copies the source's roles with new passwords and creates the
// branch's compute from the source's data.
func (s *Server) fillBranch(r *http.Request, src *store.Project, srcC *store.Compute, p *store.Project, at time.Time) (map[string]any, error) {
	roles, err := s.st.ListRoles(r.Context(), src.ID)
	if err != nil {
		return nil, err
	}
	creds := make([]credentials, 0, len(roles))
	for _, role := range roles {
		_, pw, err := s.mgr.CreateRole(r.Context(), p.ID, role.Name)
		if err != nil {
			return nil, err
		}
		creds = append(creds, s.credentials(p, role.Name, pw))
	}
	steps := compute.RestoreSteps{Prepare: func(ctx context.Context, _ *store.Compute) (string, error) {
		return s.mgr.CopyData(ctx, srcC.ID)
	}}
	if !at.IsZero() {
		steps = s.backups.BranchSteps(srcC, at)
	} else if s.backups != nil {
		if agent, ok := s.backups.CopySteps(srcC); ok {
			steps = agent
		}
	}
	c, op, err := s.mgr.CreateFrom(r.Context(), p.ID, srcC.Spec, steps)
	if err != nil {
		return nil, err
	}
	from := map[string]any{"project_id": src.ID, "at": "now"}
	if !at.IsZero() {
		from["at"] = at
	}
	return map[string]any{"project": p, "roles": creds, "compute": c, "operation": op, "branch_of": from}, nil
}

// dropProject removes what a failed branch or undelete left.
func (s *Server) dropProject(ctx context.Context, p *store.Project) {
	ctx = context.WithoutCancel(ctx)
	if c, err := s.st.GetComputeByProject(ctx, p.ID); err == nil {
		if _, err := s.mgr.Destroy(ctx, c.ID, compute.ReasonAPI); err != nil {
			s.log.Warn("could not remove the compute of a failed branch", "project", p.ID, "compute", c.ID, "err", err)
		}
	}
	if err := s.st.DeleteProject(ctx, p.ID); err != nil {
		s.log.Warn("could not remove a failed branch", "project", p.ID, "err", err)
	}
}
