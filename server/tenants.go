package server

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

// quotasInput is the settable part of a tenant's quotas. Pointers tell
// "not given" from zero (no limit), so PATCH changes only what it names.
type quotasInput struct {
	MaxProjects              *int    `json:"max_projects"`
	MaxComputeMemory         *string `json:"max_compute_memory"`
	MaxConnectionsPerProject *int    `json:"max_connections_per_project"`
	MaxActiveMemory          *string `json:"max_active_memory"`
	MaxStorage               *string `json:"max_storage"`
	ComputeSecondsPerMonth   *int64  `json:"compute_seconds_per_month"`
}

// Bounds that catch unit mistakes: a million projects, a thousand years
// of compute-seconds a month.
const (
	maxProjectsQuota = 1_000_000
	maxSecondsQuota  = 1000 * 365 * 24 * 3600 / 12
)

func (in *quotasInput) apply(q *store.TenantQuotas) error {
	if in == nil {
		return nil
	}
	if v := in.MaxProjects; v != nil && (*v < 0 || *v > maxProjectsQuota) {
		return invalid("quotas.max_projects must be between 0 (no limit) and %d, got %d", maxProjectsQuota, *v)
	}
	if v := in.MaxConnectionsPerProject; v != nil && (*v < 0 || *v > maxProjectConnections) {
		return invalid("quotas.max_connections_per_project must be between 0 (no limit) and %d, got %d", maxProjectConnections, *v)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"max_compute_memory", in.MaxComputeMemory}, {"max_active_memory", in.MaxActiveMemory}, {"max_storage", in.MaxStorage}} {
		if f.v == nil || *f.v == "" {
			continue
		}
		if _, err := quantity.Units(*f.v); err != nil || len(*f.v) > 64 {
			return invalid("quotas.%s must be a quantity like 2Gi, got %q", f.name, *f.v)
		}
	}
	if v := in.ComputeSecondsPerMonth; v != nil && (*v < 0 || *v > maxSecondsQuota) {
		return invalid("quotas.compute_seconds_per_month must be between 0 (no limit) and %d, got %d", int64(maxSecondsQuota), *v)
	}
	setInt(&q.MaxProjects, in.MaxProjects)
	setInt(&q.MaxConnectionsPerProject, in.MaxConnectionsPerProject)
	setString(&q.MaxComputeMemory, in.MaxComputeMemory)
	setString(&q.MaxActiveMemory, in.MaxActiveMemory)
	setString(&q.MaxStorage, in.MaxStorage)
	if in.ComputeSecondsPerMonth != nil {
		q.ComputeSecondsPerMonth = *in.ComputeSecondsPerMonth
	}
	return nil
}

type tenantInput struct {
	Name   *string      `json:"name"`
	Quotas *quotasInput `json:"quotas"`
}

// adminOnly refuses what only an admin may do.
func adminOnly(r *http.Request, what string) error {
	if who(r).admin {
		return nil
	}
	return forbidden{"only an admin key may " + what}
}

// tenant loads the {id} path value, an id or a name, as the principal may
// see it: a scoped key sees its own tenant only, and another is not found.
func (s *Server) tenant(r *http.Request) (*store.Tenant, error) {
	key := r.PathValue("id")
	t, err := s.st.GetTenant(r.Context(), key)
	if err != nil {
		return nil, err
	}
	if !who(r).seesTenant(t.ID) {
		return nil, notFound("tenant %q", key)
	}
	return t, nil
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	if err := adminOnly(r, "create tenants"); err != nil {
		s.fail(w, r, err)
		return
	}
	var in tenantInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Name == nil {
		s.fail(w, r, invalid("name is required"))
		return
	}
	if err := validateName("tenant", *in.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	t := &store.Tenant{Name: *in.Name, Quotas: s.quotas}
	if err := in.Quotas.apply(&t.Quotas); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.CreateTenant(r.Context(), t); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("tenant created", "tenant", t.ID, "name", t.Name)
	writeJSON(w, http.StatusCreated, map[string]any{"tenant": t})
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	page, err := pageOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var list []store.Tenant
	if p := who(r); p.admin {
		list, err = s.st.ListTenants(r.Context(), page)
	} else if t, terr := s.st.GetTenant(r.Context(), p.tenantID); terr != nil {
		err = terr
	} else if t.ID > page.After {
		list = []store.Tenant{*t}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, "tenants", list)
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.tenant(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": t})
}

func (s *Server) patchTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.tenant(r)
	if err == nil {
		err = adminOnly(r, "change a tenant or its quotas")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in tenantInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Name != nil {
		if err := s.renameTenant(t, *in.Name); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err := in.Quotas.apply(&t.Quotas); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.UpdateTenant(r.Context(), t); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": t})
}

func (s *Server) renameTenant(t *store.Tenant, name string) error {
	if t.ID == store.DefaultTenantID && name != store.DefaultTenantName {
		return fmt.Errorf("the default tenant keeps its name: %w", store.ErrConflict)
	}
	if err := validateName("tenant", name); err != nil {
		return err
	}
	t.Name = name
	return nil
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.tenant(r)
	if err == nil {
		err = adminOnly(r, "delete tenants")
	}
	if err == nil && t.ID == store.DefaultTenantID {
		err = fmt.Errorf("the default tenant cannot be deleted: %w", store.ErrConflict)
	}
	if err == nil {
		err = s.st.DeleteTenant(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("tenant deleted", "tenant", t.ID, "name", t.Name)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": true, "tenant": t})
}

// createTenantOf is the tenant a new project goes to: the one an admin
// names (default: the default tenant), or a tenant key's own. A project key
// creates no projects.
func (s *Server) createTenantOf(r *http.Request, name string) (*store.Tenant, error) {
	p := who(r)
	switch {
	case p.projectID != "":
		return nil, forbidden{"a project-scoped API key cannot create projects; use a tenant key"}
	case p.admin && name == "":
		return s.st.GetTenant(r.Context(), store.DefaultTenantID)
	case p.admin:
		return s.st.GetTenant(r.Context(), name)
	}
	t, err := s.st.GetTenant(r.Context(), p.tenantID)
	if err != nil {
		return nil, err
	}
	if name != "" && name != t.ID && name != t.Name {
		return nil, notFound("tenant %q", name)
	}
	return t, nil
}

// quotaError is a 403 naming the quota that refused the request.
type quotaError struct{ msg string }

func (e quotaError) Error() string { return e.msg }

// checkProjectCount refuses a project over the tenant's max_projects.
func (s *Server) checkProjectCount(r *http.Request, t *store.Tenant) error {
	max := t.Quotas.MaxProjects
	if max == 0 {
		return nil
	}
	n, err := s.st.CountProjects(r.Context(), t.ID)
	if err != nil {
		return err
	}
	if n >= max {
		return quotaError{fmt.Sprintf("tenant %s has %d projects, its quota max_projects is %d: delete one, or ask an admin to raise the quota (PATCH /api/v1/tenants/%s)", t.Name, n, max, t.Name)}
	}
	return nil
}

// checkProjectQuotas refuses a project config over its tenant's quotas:
// max_connections over max_connections_per_project (a project without its
// own limit is bounded by the quota at login, in proxy.StoreDirectory),
// storage_size over max_storage.
func checkProjectQuotas(t *store.Tenant, p *store.Project) error {
	if max := t.Quotas.MaxConnectionsPerProject; max > 0 && p.Config.MaxConnections > max {
		return quotaError{fmt.Sprintf("max_connections %d is over the tenant's quota max_connections_per_project %d: ask a lower one, or ask an admin to raise the quota", p.Config.MaxConnections, max)}
	}
	if p.Config.StorageSize == "" {
		return nil
	}
	return applyStorageQuota(t, &store.ComputeSpec{Storage: p.Config.StorageSize}, "")
}

// applyComputeQuotas refuses a compute over its tenant's
// max_compute_memory or max_storage, and gives one that asks no storage
// at most max_storage.
func (s *Server) applyComputeQuotas(r *http.Request, p *store.Project, spec *store.ComputeSpec) error {
	t, err := s.st.GetTenant(r.Context(), p.TenantID)
	if err != nil {
		return err
	}
	var def store.ComputeSpec
	if s.mgr != nil {
		def = s.mgr.DefaultSpec()
	}
	if err := checkMemoryQuota(t, spec.Resources.Memory, def.Resources.Memory); err != nil {
		return err
	}
	return applyStorageQuota(t, spec, def.Storage)
}

// applyStorageQuota refuses spec's storage (or def, when it asks none)
// over the tenant's max_storage; a spec that asks none, where def is over
// the quota or unset, gets the quota.
func applyStorageQuota(t *store.Tenant, spec *store.ComputeSpec, def string) error {
	max := t.Quotas.MaxStorage
	if max == "" {
		return nil
	}
	limit, err := quantity.Units(max)
	if err != nil {
		return fmt.Errorf("tenant %s: max_storage %q: %w", t.Name, max, err)
	}
	asked := cmp.Or(spec.Storage, def)
	if n, err := quantity.Units(asked); asked != "" && err == nil && n <= limit {
		return nil
	}
	if spec.Storage == "" {
		spec.Storage = max
		return nil
	}
	return quotaError{fmt.Sprintf("storage %s is over the tenant's quota max_storage %s: ask less, or ask an admin to raise the quota", asked, max)}
}

// checkMemoryQuota refuses a compute whose memory (or def, when it asks
// none) is over its tenant's max_compute_memory.
func checkMemoryQuota(t *store.Tenant, mem, def string) error {
	mem = cmp.Or(mem, def)
	if t.Quotas.MaxComputeMemory == "" || mem == "" {
		return nil
	}
	got, err1 := quantity.Units(mem)
	limit, err2 := quantity.Units(t.Quotas.MaxComputeMemory)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("compare memory %q with the quota %q: %w", mem, t.Quotas.MaxComputeMemory, errors.Join(err1, err2))
	}
	if got > limit {
		return quotaError{fmt.Sprintf("memory %s is over the tenant's quota max_compute_memory %s: ask a smaller compute, or ask an admin to raise the quota", mem, t.Quotas.MaxComputeMemory)}
	}
	return nil
}

type apiKeyInput struct {
	Name      string `json:"name"`
	Scope     string `json:"scope"`
	Project   string `json:"project"`
	ReadOnly  bool   `json:"read_only"`
	ExpiresAt string `json:"expires_at"`
}

// maxKeyNameLen bounds an API key's name.
const maxKeyNameLen = 100

// check validates the input and, for a project key, finds its project in
// tenant t.
func (in *apiKeyInput) check(s *Server, r *http.Request, t *store.Tenant) (*store.APIKey, error) {
	if in.Name == "" || len(in.Name) > maxKeyNameLen {
		return nil, invalid("name is required, at most %d characters", maxKeyNameLen)
	}
	k := &store.APIKey{TenantID: t.ID, Name: in.Name, Scope: in.Scope, ReadOnly: in.ReadOnly}
	p := who(r)
	switch in.Scope {
	case store.ScopeAdmin:
		if !p.admin {
			return nil, forbidden{"only an admin key may create admin keys"}
		}
	case store.ScopeTenant:
	case store.ScopeProject:
		if in.Project == "" {
			return nil, invalid("a project-scoped key needs project (an id or a name of the tenant's projects)")
		}
		pr, err := s.st.GetTenantProject(r.Context(), t.ID, in.Project)
		if err != nil {
			return nil, err
		}
		k.ProjectID = pr.ID
	default:
		return nil, invalid("scope must be admin, tenant or project, got %q", in.Scope)
	}
	if in.Scope != store.ScopeProject && in.Project != "" {
		return nil, invalid("project is only for scope project")
	}
	if in.ExpiresAt != "" {
		exp, err := time.Parse(time.RFC3339, in.ExpiresAt)
		if err != nil {
			return nil, invalid("expires_at must be an RFC 3339 time like 2026-01-02T15:04:05Z, got %q", in.ExpiresAt)
		}
		if !exp.After(time.Now()) {
			return nil, invalid("expires_at %s is in the past", in.ExpiresAt)
		}
		k.ExpiresAt = exp.UTC().Truncate(time.Microsecond)
	}
	return k, nil
}

// keyManager loads the {id} tenant for key management: an admin's, or a
// tenant key's own (a project key manages none).
func (s *Server) keyManager(r *http.Request) (*store.Tenant, error) {
	t, err := s.tenant(r)
	if err != nil {
		return nil, err
	}
	if who(r).projectID != "" {
		return nil, forbidden{"a project-scoped API key cannot manage API keys; use a tenant key"}
	}
	return t, nil
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) {
	t, err := s.keyManager(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in apiKeyInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	k, err := in.check(s, r, t)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	key, hash := newAPIKey()
	k.Hash = hash
	if err := s.st.CreateAPIKey(r.Context(), k); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("API key created", "tenant", t.ID, "key", k.ID, "scope", k.Scope, "read_only", k.ReadOnly)
	// The key is in this reply only: the store keeps its hash.
	writeJSON(w, http.StatusCreated, map[string]any{"api_key": k, "key": key})
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request) {
	t, err := s.keyManager(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keys, err := s.st.ListAPIKeys(r.Context(), t.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, "api_keys", keys)
}

func (s *Server) deleteAPIKey(w http.ResponseWriter, r *http.Request) {
	t, err := s.keyManager(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("kid")
	if err := s.st.DeleteAPIKey(r.Context(), t.ID, id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("API key revoked", "tenant", t.ID, "key", id)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": true, "id": id})
}
