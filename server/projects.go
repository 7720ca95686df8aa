package server

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

// projectName is a DNS label of 1-40 characters.
var projectName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// maxIdleTimeout bounds idle_timeout (30 days) to catch unit mistakes.
const maxIdleTimeout = 30 * 24 * 3600

// validateName checks a project's or a tenant's (kind) name.
func validateName(kind, name string) error {
	if len(name) > 40 {
		return invalid("name must be at most 40 characters (1-40 from a-z, 0-9 and '-'), got %d", len(name))
	}
	if !projectName.MatchString(name) {
		return invalid("invalid %s name %q: use 1-40 characters from a-z, 0-9 and '-', starting and ending with a letter or digit", kind, name)
	}
	return nil
}

// projectConfigInput is the settable part of a project's config. Pointers
// tell "not given" from zero, so PATCH changes only what it names.
type projectConfigInput struct {
	IdleTimeout                *int    `json:"idle_timeout"`
	SuspendWithOpenConnections *bool   `json:"suspend_with_open_connections"`
	StorageSize                *string `json:"storage_size"`
	PageServerURL              *string `json:"page_server_url"`
	SafekeeperURL              *string `json:"safekeeper_url"`
	MaxConnections             *int    `json:"max_connections"`
	PinnedIdleTimeout          *int    `json:"pinned_idle_timeout"`
	PoolMode                   *string `json:"pool_mode"`
	PoolSize                   *int    `json:"pool_size"`
	PoolWaitTimeout            *int    `json:"pool_wait_timeout"`
}

// apply checks every given field, then sets them on c: a refused input
// changes nothing.
func (in *projectConfigInput) apply(c *store.ProjectConfig, storage quantity.Range) error {
	if in == nil {
		return nil
	}
	if err := in.check(storage); err != nil {
		return err
	}
	setInt(&c.IdleTimeout, in.IdleTimeout)
	if in.SuspendWithOpenConnections != nil {
		c.SuspendWithOpenConnections = in.SuspendWithOpenConnections
	}
	setString(&c.StorageSize, in.StorageSize)
	setString(&c.PageServerURL, in.PageServerURL)
	setString(&c.SafekeeperURL, in.SafekeeperURL)
	setInt(&c.MaxConnections, in.MaxConnections)
	if in.PinnedIdleTimeout != nil {
		v := *in.PinnedIdleTimeout
		c.PinnedIdleTimeout = &v
	}
	setString(&c.PoolMode, in.PoolMode)
	setInt(&c.PoolSize, in.PoolSize)
	setInt(&c.PoolWaitTimeout, in.PoolWaitTimeout)
	return nil
}

func (in *projectConfigInput) check(storage quantity.Range) error {
	if v := in.IdleTimeout; v != nil && (*v < 0 || *v > maxIdleTimeout) {
		return invalid("idle_timeout must be between 0 (never suspend) and %d seconds, got %d", maxIdleTimeout, *v)
	}
	if v := in.PinnedIdleTimeout; v != nil && (*v < 0 || *v > maxIdleTimeout) {
		return invalid("pinned_idle_timeout must be between 0 (never) and %d seconds, got %d", maxIdleTimeout, *v)
	}
	if v := in.PoolMode; v != nil && *v != store.PoolSession && *v != store.PoolTransaction {
		return invalid("pool_mode must be %q or %q, got %q", store.PoolSession, store.PoolTransaction, clip(*v))
	}
	if v := in.PoolSize; v != nil && (*v < 0 || *v > maxPoolSize) {
		return invalid("pool_size must be between 0 (half of what the compute takes) and %d, got %d", maxPoolSize, *v)
	}
	if v := in.PoolWaitTimeout; v != nil && (*v < 0 || *v > maxPoolWait) {
		return invalid("pool_wait_timeout must be between 0 (30 seconds) and %d seconds, got %d", maxPoolWait, *v)
	}
	if v := in.MaxConnections; v != nil && (*v < 0 || *v > maxProjectConnections) {
		return invalid("max_connections must be between 0 (the daemon's default) and %d, got %d", maxProjectConnections, *v)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"page_server_url", in.PageServerURL}, {"safekeeper_url", in.SafekeeperURL}} {
		if f.v != nil {
			if err := checkLen(f.name, *f.v, maxURLLen); err != nil {
				return err
			}
		}
	}
	if in.StorageSize != nil {
		return checkQuantity("storage_size", *in.StorageSize, storage)
	}
	return nil
}

func setInt(dst *int, src *int) {
	if src != nil {
		*dst = *src
	}
}

func setString(dst *string, src *string) {
	if src != nil {
		*dst = *src
	}
}

type createProjectInput struct {
	Name string `json:"name"`
	// Tenant (an id or a name) is for admin keys; a tenant key creates in
	// its own tenant. Empty: the key's tenant, or the default one.
	Tenant string              `json:"tenant"`
	Config *projectConfigInput `json:"config"`
}

// credentials is returned once, when a password is generated.
type credentials struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	// MySQLUser is the user name to log in with through the proxy.
	MySQLUser string `json:"mysql_user"`
	// ConnectionString is a ready-to-run mariadb client command line.
	ConnectionString string `json:"connection_string"`
	// Host and Port are the MySQL listener's, for other clients' strings.
	Host string `json:"host"`
	Port int    `json:"port"`
}

func (s *Server) credentials(p *store.Project, role, password string) credentials {
	host, port := splitHostPort(s.proxyAddr)
	user := loginHandle(p) + "." + role
	portN, _ := strconv.Atoi(port)
	return credentials{
		Name: role, Password: password, MySQLUser: user,
		ConnectionString: "mariadb -h " + host + " -P " + port + " -u " + user + " -p",
		Host:             host, Port: portN,
	}
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	var in createProjectInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := validateName("project", in.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	tenant, err := s.createTenantOf(r, in.Tenant)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.checkProjectCount(r, tenant); err != nil {
		s.fail(w, r, err)
		return
	}
	now := store.Now()
	p := &store.Project{ID: store.NewID("prj"), Name: in.Name, TenantID: tenant.ID, CreatedAt: now, UpdatedAt: now}
	p.Config.IdleTimeout = store.DefaultIdleTimeout
	if err := in.Config.apply(&p.Config, s.limits.storage); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkProjectQuotas(tenant, p); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.st.CreateProject(r.Context(), p); err != nil {
		s.fail(w, r, err)
		return
	}
	_, pw, err := s.mgr.CreateRole(r.Context(), p.ID, compute.OwnerRole)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("project created", "project", p.ID, "name", p.Name, "tenant", p.TenantID)
	writeJSON(w, http.StatusCreated, map[string]any{"project": p, "role": s.credentials(p, compute.OwnerRole, pw)})
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	page, err := pageOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if page.NameContains, err = nameFilterOf(r); err != nil {
		s.fail(w, r, err)
		return
	}
	include, err := includeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ps, err := s.listVisible(r, page)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !include {
		writeList(w, "projects", ps)
		return
	}
	withComputes, err := s.withComputes(r, ps)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, "projects", withComputes)
}

// projectStatus is a project with its compute's status, as the projects
// list gives it with ?include=compute.
type projectStatus struct {
	store.Project
	// Compute is nil for a project without a compute.
	Compute *compute.Status `json:"compute"`
}

// withComputes adds each project's compute status.
func (s *Server) withComputes(r *http.Request, ps []store.Project) ([]projectStatus, error) {
	sts, err := s.mgr.Statuses(r.Context(), ps)
	if err != nil {
		return nil, err
	}
	out := make([]projectStatus, len(ps))
	for i, p := range ps {
		out[i].Project = p
		if st, ok := sts[p.ID]; ok {
			out[i].Compute = &st
		}
	}
	return out, nil
}

// listVisible lists the projects the principal sees, filtered in the
// store's query: an admin's (all, or one tenant's with ?tenant=), a tenant
// key's tenant's, a project key's one project.
func (s *Server) listVisible(r *http.Request, page store.Page) ([]store.Project, error) {
	p := who(r)
	switch {
	case p.projectID != "":
		pr, err := s.projectFor(r, p.projectID)
		if err != nil || pr.ID <= page.After || !strings.Contains(pr.Name, page.NameContains) {
			return []store.Project{}, nil
		}
		return []store.Project{*pr}, nil
	case !p.admin:
		return s.st.ListProjects(r.Context(), p.tenantID, page)
	}
	tenantID := ""
	if v := r.URL.Query().Get("tenant"); v != "" {
		t, err := s.st.GetTenant(r.Context(), v)
		if err != nil {
			return nil, err
		}
		tenantID = t.ID
	}
	return s.st.ListProjects(r.Context(), tenantID, page)
}

// loginHandle is how a MySQL login names the project: by name in the
// default tenant (names are unique there, and this keeps <project>.<user>
// working), by id elsewhere (names repeat across tenants).
func loginHandle(p *store.Project) string {
	if p.TenantID == store.DefaultTenantID || p.TenantID == "" {
		return p.Name
	}
	return p.ID
}

// nameFilter is what ?name_contains= may hold: a name's alphabet, so the
// store's LIKE pattern never holds a wildcard from the caller.
var nameFilter = regexp.MustCompile(`^[a-z0-9-]{0,40}$`)

// nameFilterOf reads ?name_contains= for the projects list.
func nameFilterOf(r *http.Request) (string, error) {
	v := r.URL.Query().Get("name_contains")
	if !nameFilter.MatchString(v) {
		return "", invalid("name_contains may hold only a-z, 0-9 and '-', at most 40 characters, got %q", clip(v))
	}
	return v, nil
}

// pageOf reads ?limit=&after= for list endpoints.
func pageOf(r *http.Request) (store.Page, error) {
	var p store.Page
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return p, invalid("limit must be a number from 1 to 1000, got %q", v)
		}
		p.Limit = n
	}
	p.After = r.URL.Query().Get("after")
	return p, nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	include, err := includeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !include {
		writeJSON(w, http.StatusOK, map[string]any{"project": p})
		return
	}
	with, err := s.withComputes(r, []store.Project{*p})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"project": with[0]})
}

// includeOf reads ?include=, which may only ask for the compute's status.
func includeOf(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("include"); v {
	case "":
		return false, nil
	case "compute":
		return true, nil
	default:
		return false, invalid("include may only be \"compute\", got %q", clip(v))
	}
}

type patchProjectInput struct {
	Name   *string             `json:"name"`
	Config *projectConfigInput `json:"config"`
}

func (s *Server) patchProject(w http.ResponseWriter, r *http.Request) {
	var in patchProjectInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Name != nil {
		if err := validateName("project", *in.Name); err != nil {
			s.fail(w, r, err)
			return
		}
		p.Name = *in.Name
	}
	if err := in.Config.apply(&p.Config, s.limits.storage); err != nil {
		s.fail(w, r, err)
		return
	}
	t, err := s.st.GetTenant(r.Context(), p.TenantID)
	if err == nil {
		err = checkProjectQuotas(t, p)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.UpdatedAt = store.Now()
	if err := s.st.UpdateProject(r.Context(), p); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"project": p})
}

// deleteProject destroys the project's compute and data, then the project.
func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.st.GetComputeByProject(r.Context(), p.ID)
	switch {
	case err == nil:
		if err := s.retire(r, p, c); err != nil {
			s.fail(w, r, err)
			return
		}
		if _, err := s.mgr.Destroy(r.Context(), c.ID, compute.ReasonAPI); err != nil {
			s.fail(w, r, err)
			return
		}
	case !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
		return
	}
	if err := s.st.DeleteProject(r.Context(), p.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("project deleted", "project", p.ID, "name", p.Name)
	writeJSON(w, http.StatusOK, map[string]any{"deleted": true, "project": p})
}
