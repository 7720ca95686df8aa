// Package server is serverlessd's HTTP control-plane API: projects, computes,
// roles, operations and the wake contract for proxies.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// Options configure the API server.
type Options struct {
	Store   store.Store
	Manager *compute.Manager
	// Tokens are the accepted bearer tokens; none means no auth (loopback only).
	Tokens []string
	// ProxyAddr is the MySQL listener's address, shown in connection strings.
	ProxyAddr string
	// Extra handlers mounted without auth, may be nil.
	Extra map[string]http.Handler
	// Metrics, when set, serves GET /metrics: Full to admins, Public
	// (without per-project series) to anyone else.
	Metrics *Metrics
	Logger  *slog.Logger
	// DefaultQuotas are a new tenant's quotas where its create names none.
	DefaultQuotas store.TenantQuotas
	// Limits bound the resources a compute may ask for; zero fields take
	// defaults (see Limits).
	Limits Limits
	// Backups, when set, serves backups and restores.
	Backups Backups
}

// Metrics are the two views of the daemon's metrics.
type Metrics struct{ Full, Public http.Handler }

// Server is the HTTP API.
type Server struct {
	st        store.Store
	mgr       *compute.Manager
	tokens    [][]byte
	proxyAddr string
	log       *slog.Logger
	limits    resourceLimits
	quotas    store.TenantQuotas // for new tenants
	backups   Backups            // nil when backups are off
	handler   http.Handler
	patterns  []string // of every route registered, Extra aside
	http      *http.Server
	draining  atomic.Bool
}

// maxBody is the largest request body accepted (413 beyond).
const maxBody = 1 << 20

// New builds the API server and its routes.
func New(opts Options) *Server {
	s := &Server{st: opts.Store, mgr: opts.Manager, proxyAddr: opts.ProxyAddr, quotas: opts.DefaultQuotas,
		log: opts.Logger.With("component", "api"), backups: opts.Backups}
	// Without a manager (tests of the HTTP plumbing) the stricter, local bounds apply.
	s.limits = opts.Limits.resolve(opts.Manager == nil || opts.Manager.Driver().NodeLocal())
	for _, t := range opts.Tokens {
		s.tokens = append(s.tokens, []byte(t))
	}
	api := http.NewServeMux()
	s.handle(api, s.apiRoutes())
	root := http.NewServeMux()
	s.handle(root, s.publicRoutes(opts.Metrics))
	for pattern, h := range opts.Extra {
		root.Handle(pattern, h)
	}
	root.Handle("/", s.auth(api))
	s.handler = s.recoverer(jsonStatus(root))
	// Built here, not in Serve, so that Shutdown, called from another
	// goroutine, always sees it: a Shutdown that comes first makes a later
	// Serve close its listener and return at once.
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// route is one endpoint: its ServeMux pattern, "METHOD /path", and handler.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// apiRoutes are the endpoints behind auth.
func (s *Server) apiRoutes() []route {
	return []route{
		{"POST /api/v1/tenants", s.createTenant},
		{"GET /api/v1/tenants", s.listTenants},
		{"GET /api/v1/tenants/{id}", s.getTenant},
		{"PATCH /api/v1/tenants/{id}", s.patchTenant},
		{"DELETE /api/v1/tenants/{id}", s.deleteTenant},
		{"POST /api/v1/tenants/{id}/api_keys", s.createAPIKey},
		{"GET /api/v1/tenants/{id}/api_keys", s.listAPIKeys},
		{"DELETE /api/v1/tenants/{id}/api_keys/{kid}", s.deleteAPIKey},
		{"GET /api/v1/tenants/{id}/usage", s.tenantUsage},

		{"POST /api/v1/projects", s.createProject},
		{"GET /api/v1/projects", s.listProjects},
		{"GET /api/v1/projects/{id}", s.getProject},
		{"PATCH /api/v1/projects/{id}", s.patchProject},
		{"DELETE /api/v1/projects/{id}", s.deleteProject},

		{"POST /api/v1/projects/{id}/compute", s.createCompute},
		{"GET /api/v1/projects/{id}/compute", s.getProjectCompute},
		{"GET /api/v1/projects/{id}/compute/{cid}", s.getCompute},
		{"POST /api/v1/projects/{id}/compute/{cid}/suspend", s.suspendCompute},
		{"POST /api/v1/projects/{id}/compute/{cid}/resume", s.resumeCompute},
		{"DELETE /api/v1/projects/{id}/compute/{cid}", s.destroyCompute},

		{"POST /api/v1/projects/{id}/roles", s.createRole},
		{"GET /api/v1/projects/{id}/roles", s.listRoles},
		{"POST /api/v1/projects/{id}/roles/{name}/reset_password", s.resetPassword},
		{"DELETE /api/v1/projects/{id}/roles/{name}", s.deleteRole},

		{"GET /api/v1/projects/{id}/operations", s.listOperations},
		{"GET /api/v1/projects/{id}/backups", s.listBackups},
		{"POST /api/v1/projects/{id}/restore", s.restoreProject},
		{"POST /api/v1/projects/{id}/branches", s.createBranch},
		{"POST /api/v1/projects/{id}/undelete", s.undeleteProject},
		{"GET /api/v1/projects/{id}/usage", s.projectUsage},
		{"GET /api/v1/usage", s.billing},
		{"GET /wake_compute", s.wakeCompute},
	}
}

// publicRoutes are served without a token: the probes, this API's
// documentation, and the metrics (which decide for themselves what a
// caller sees).
func (s *Server) publicRoutes(m *Metrics) []route {
	rs := []route{
		{"GET /healthz", healthz},
		{"GET /readyz", s.readyz},
		{"GET /api/v1/openapi.json", serveOpenAPI},
	}
	if m != nil {
		rs = append(rs, route{"GET /metrics", s.metrics(*m).ServeHTTP})
	}
	return rs
}

// handle registers routes on mux and records their patterns.
func (s *Server) handle(mux *http.ServeMux, routes []route) {
	for _, rt := range routes {
		mux.HandleFunc(rt.pattern, rt.handler)
		s.patterns = append(s.patterns, rt.pattern)
	}
}

// Handler returns the API's http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on ln until Shutdown, and closes ln. After Shutdown
// it closes ln and returns nil at once.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("API listening", "addr", ln.Addr().String())
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests and waits for those in flight. It may
// run before or during Serve, from any goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// SetDraining makes /readyz fail from now on: the daemon is stopping, and
// load balancers must send new clients elsewhere.
func (s *Server) SetDraining() { s.draining.Store(true) }

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, http.StatusServiceUnavailable, "draining", "this daemon is shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.st.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the state store does not answer: "+err.Error())
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

// recoverer turns a handler panic into a logged 500, so that no request can
// take the daemon down.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in API handler", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal", "internal error; see the daemon log")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
