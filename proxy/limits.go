package proxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/serverlessd/serverlessd/compute"
)

// ProjectLimits is implemented by a Directory that knows each project's own
// connection limit (StoreDirectory does).
type ProjectLimits interface {
	// ProjectMaxConnections returns the project's connection limit; 0
	// means the daemon's default (Config.MaxConnectionsPerProject).
	ProjectMaxConnections(ctx context.Context, projectID string) (int, error)
}

// connCounts counts open connections per key (a source address or a
// project id) and refuses one past a limit.
type connCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire counts one more connection for key unless it already has limit;
// limit <= 0 means no limit. A true result must be matched by release.
func (c *connCounts) acquire(key string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit > 0 && c.n[key] >= limit {
		return false
	}
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return true
}

func (c *connCounts) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key) // the map only holds keys with open connections
		return
	}
	c.n[key]--
}

func (c *connCounts) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// admit makes the checks done before any handshake work: the global and
// per-source connection caps and the failed-login limiter. On success the
// source's count holds the session until the caller releases it.
func (s *Server) admit(ss *session, active int64) *refusal {
	if s.cfg.MaxConnections > 0 && active > int64(s.cfg.MaxConnections) {
		return refuse(CountTooManyConns, mysql.ER_CON_COUNT_ERROR, "Too many connections",
			fmt.Errorf("limit is %d", s.cfg.MaxConnections))
	}
	if !s.sources.acquire(ss.key, s.cfg.MaxConnectionsPerSource) {
		return refuse(CountTooManyFromSource, mysql.ER_CON_COUNT_ERROR, "Too many connections from "+ss.key,
			fmt.Errorf("limit per source is %d", s.cfg.MaxConnectionsPerSource))
	}
	if !s.limiter.allowed(ss.key, ss.start) {
		s.sources.release(ss.key)
		return ss.blocked()
	}
	return nil
}

// blocked is the answer to a source whose failed-login bucket is empty.
func (ss *session) blocked() *refusal {
	return refuse(CountRateLimited, mysql.ER_HOST_IS_BLOCKED,
		fmt.Sprintf("Host '%s' is blocked because of too many failed logins; try again later", ss.key), nil)
}

// admitProject counts the authenticated session against its project's
// limit, before any wake. On success the caller releases ss.projectID.
func (ss *session) admitProject() error {
	ctx, cancel := context.WithDeadline(ss.s.baseCtx, ss.start.Add(ss.s.cfg.HandshakeTimeout))
	defer cancel()
	limit := ss.s.projectLimit(ctx, ss)
	if ss.s.projects.acquire(ss.projectID, limit) {
		return nil
	}
	return refuse(CountTooManyForProject, mysql.ER_CON_COUNT_ERROR, fmt.Sprintf(
		"Too many connections for project %s: its limit is %d client connections (max_connections)", clip(ss.project, 64), limit),
		fmt.Errorf("project limit is %d", limit))
}

// admitCompute refuses a session past the number of client connections
// the project's compute takes (compute.WakeResult.MaxClients): the compute's
// own limit must always leave its daemon room to check and control it. The
// session is already counted in its project (one compute per project).
func (ss *session) admitCompute(res compute.WakeResult) error {
	if res.MaxClients <= 0 || ss.s.projects.count(ss.projectID) <= res.MaxClients {
		return nil
	}
	return refuse(CountTooManyForProject, mysql.ER_CON_COUNT_ERROR, "Too many connections for project "+clip(ss.project, 64),
		fmt.Errorf("its compute takes %d client connections", res.MaxClients))
}

// projectLimit is the project's own limit, bounded by (and defaulting to)
// MaxConnectionsPerProject. A failed lookup falls back to the default.
func (s *Server) projectLimit(ctx context.Context, ss *session) int {
	bound := s.cfg.MaxConnectionsPerProject
	pl, ok := s.dir.(ProjectLimits)
	if !ok {
		return bound
	}
	own, err := pl.ProjectMaxConnections(ctx, ss.projectID)
	if err != nil {
		ss.log.Warn("project connection limit unknown; using the default", "project_id", ss.projectID, "err", err)
		return bound
	}
	return effectiveLimit(own, bound)
}

// effectiveLimit combines a project's limit (0: none) with the daemon's
// default and bound (negative: none); 0 in the result means no limit.
func effectiveLimit(own, bound int) int {
	switch {
	case own <= 0:
		return max(bound, 0)
	case bound <= 0:
		return own
	default:
		return min(own, bound)
	}
}

// ProjectPins is an optional Directory method: a project's own pinned idle
// timeout (config pinned_idle_timeout seconds; nil: the daemon's default,
// 0: never).
type ProjectPins interface {
	ProjectPinnedIdleTimeout(ctx context.Context, projectID string) (*int, error)
}

// pinnedIdleTimeout is how long the session may sit pinned and idle; 0
// means forever.
func (s *Server) pinnedIdleTimeout(ctx context.Context, ss *session) time.Duration {
	def := max(s.cfg.PinnedIdleTimeout, 0)
	pp, ok := s.dir.(ProjectPins)
	if !ok {
		return def
	}
	own, err := pp.ProjectPinnedIdleTimeout(ctx, ss.projectID)
	if err != nil || own == nil {
		return def
	}
	return time.Duration(*own) * time.Second
}
