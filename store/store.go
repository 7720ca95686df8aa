// Package store holds serverlessd's domain types and the Store interface that
// persists them. Backends live in sub-packages (sqlite, postgres) and all pass
// the same conformance suite in storetest.
package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Backends wrap them so callers can use errors.Is.
var (
	// ErrNotFound means the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a compare-and-set lost: the object changed since it was read.
	ErrConflict = errors.New("conflict: the object changed concurrently")
	// ErrAlreadyExists means a unique key (a project name, a role name, a
	// project's single compute) is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInUse means other objects still refer to the one being deleted (a
	// tenant that still has projects).
	ErrInUse = errors.New("in use")
)

// ComputeState is a step of the compute lifecycle (see DESIGN.md).
type ComputeState string

// The compute lifecycle:
//
//	creating -> suspended <-> resuming -> active -> suspending -> suspended
//	any -> failed (next wake retries); any -> destroying -> gone
const (
	StateCreating   ComputeState = "creating"
	StateSuspended  ComputeState = "suspended"
	StateResuming   ComputeState = "resuming"
	StateActive     ComputeState = "active"
	StateSuspending ComputeState = "suspending"
	StateFailed     ComputeState = "failed"
	StateDestroying ComputeState = "destroying"
)

// DefaultIdleTimeout is a project's idle timeout when none is given, in seconds.
const DefaultIdleTimeout = 300

// ProjectConfig is a project's user-settable configuration. It is stored as a
// JSON document so that new options do not need a schema migration.
type ProjectConfig struct {
	// IdleTimeout is how many seconds without traffic before the compute
	// suspends. 0 means never.
	IdleTimeout int `json:"idle_timeout"`
	// SuspendWithOpenConnections lets an idle compute suspend even while
	// (idle) client connections are open. Nil means the default (true).
	SuspendWithOpenConnections *bool `json:"suspend_with_open_connections,omitempty"`
	// StorageSize is the requested storage size, e.g. "10Gi".
	StorageSize string `json:"storage_size,omitempty"`
	// PageServerURL and SafekeeperURL are accepted and stored as given.
	PageServerURL string `json:"page_server_url,omitempty"`
	SafekeeperURL string `json:"safekeeper_url,omitempty"`
	// MaxConnections caps the project's client connections through the
	// proxy. 0 means the daemon's proxy.max_connections_per_project, which
	// also bounds larger values.
	MaxConnections int `json:"max_connections,omitempty"`
	// PinnedIdleTimeout ends a client session that stays idle this many
	// seconds while pinned to its compute (an open transaction, locks):
	// its transaction is rolled back. nil: the daemon's default (15
	// minutes); 0: never.
	PinnedIdleTimeout *int `json:"pinned_idle_timeout,omitempty"`
	// PoolMode is how client sessions use backend connections:
	// PoolSession ("" too) or PoolTransaction.
	PoolMode string `json:"pool_mode,omitempty"`
	// PoolSize bounds the backend connections pooled sessions use; 0 is
	// half of what the compute takes.
	PoolSize int `json:"pool_size,omitempty"`
	// PoolWaitTimeout is how many seconds a pooled session waits for a
	// busy pool before its command fails; 0 is 30.
	PoolWaitTimeout int `json:"pool_wait_timeout,omitempty"`
}

// SuspendsWithOpenConnections is SuspendWithOpenConnections with its
// default applied.
func (c ProjectConfig) SuspendsWithOpenConnections() bool {
	return c.SuspendWithOpenConnections == nil || *c.SuspendWithOpenConnections
}

// Pool modes.
const (
	// PoolSession gives each client session its own backend connection
	// while it is attached.
	PoolSession = "session"
	// PoolTransaction lends a backend connection to a session for each
	// transaction, or each statement in autocommit.
	PoolTransaction = "transaction"
)

// The default tenant holds the projects made before tenants existed and
// those created without naming a tenant. Its projects alone are reached by
// name in a MySQL login (<project>.<user>); every project is reached by id.
const (
	DefaultTenantID   = "ten_default"
	DefaultTenantName = "default"
)

// Tenant owns projects and API keys: a team, a customer. Project names are
// unique within a tenant.
type Tenant struct {
	ID        string       `json:"id"`
	Name      string       `json:"name"`
	Quotas    TenantQuotas `json:"quotas"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// TenantQuotas bound what one tenant may take. Zero means no limit beyond
// the daemon's own. It is stored as JSON, so new quotas need no migration.
type TenantQuotas struct {
	// MaxProjects caps how many projects the tenant has.
	MaxProjects int `json:"max_projects,omitempty"`
	// MaxComputeMemory caps one compute's memory (a quantity, "2Gi").
	MaxComputeMemory string `json:"max_compute_memory,omitempty"`
	// MaxConnectionsPerProject caps each project's client connections.
	MaxConnectionsPerProject int `json:"max_connections_per_project,omitempty"`
	// MaxStorage caps each project's storage (a quantity): a compute
	// asking more is refused, one asking nothing gets at most this, and a
	// compute at its limit turns read-only.
	MaxStorage string `json:"max_storage,omitempty"`
	// MaxActiveMemory caps the memory of the tenant's computes running at
	// once (a quantity); a start past it is refused.
	MaxActiveMemory string `json:"max_active_memory,omitempty"`
	// ComputeSecondsPerMonth caps the compute-seconds of the tenant's
	// projects in a calendar month (UTC); once spent, starts are refused
	// until the month ends or the quota is raised.
	ComputeSecondsPerMonth int64 `json:"compute_seconds_per_month,omitempty"`
}

// API key scopes.
const (
	ScopeAdmin   = "admin"   // everything, tenants included
	ScopeTenant  = "tenant"  // the key's tenant and its projects
	ScopeProject = "project" // one project
)

// APIKey is a bearer credential for the HTTP API. Only a hash of the key is
// stored; the key itself is shown once, when it is created.
type APIKey struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	Scope    string `json:"scope"`
	// ProjectID is the project of a project-scoped key.
	ProjectID string `json:"project_id,omitempty"`
	ReadOnly  bool   `json:"read_only"`
	// Hash is the hex SHA-256 of the key.
	Hash       string    `json:"-"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// Project is one database, reached as <project>.<user>.
type Project struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// TenantID owns the project; empty on create means the default tenant.
	TenantID  string        `json:"tenant_id"`
	Config    ProjectConfig `json:"config"`
	CreatedAt time.Time     `json:"created_at"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// Resources are a compute's CPU and memory, in Kubernetes quantity syntax.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// ComputeSpec is what a compute runs with. It is stored as JSON.
type ComputeSpec struct {
	Image     string    `json:"image,omitempty"`
	Resources Resources `json:"resources"`
	Storage   string    `json:"storage,omitempty"`
}

// Compute is a project's database server: a mariadbd process or a Pod.
type Compute struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	// TenantID is the project's tenant, read with the compute (it is not
	// written: a project never changes tenant).
	TenantID string       `json:"tenant_id,omitempty"`
	State    ComputeState `json:"state"`
	Driver   string       `json:"driver"`
	// Node is the daemon node whose disk holds the compute (local driver).
	Node string      `json:"node,omitempty"`
	Spec ComputeSpec `json:"spec"`
	// Address is where the running backend listens ("unix:/path" or "ip:3306").
	Address string `json:"address,omitempty"`
	// Error is the last failure, kept while State is failed.
	Error       string    `json:"error,omitempty"`
	LastActive  time.Time `json:"last_active,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	SuspendedAt time.Time `json:"suspended_at,omitzero"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Version increases by one on every update; it guards compare-and-set.
	Version int64 `json:"version"`
}

// Role is a database user of a project. PasswordHash is MariaDB's
// mysql_native_password form, "*" + HEX(SHA1(SHA1(password))): never the
// cleartext.
type Role struct {
	ProjectID    string    `json:"project_id"`
	Name         string    `json:"name"`
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Operation actions.
const (
	ActionCreate  = "create"
	ActionStart   = "start"
	ActionSuspend = "suspend"
	ActionDestroy = "destroy"
	ActionRestore = "restore"
)

// Operation statuses.
const (
	OpRunning   = "running"
	OpSucceeded = "succeeded"
	OpFailed    = "failed"
)

// Operation is one lifecycle action on a compute: the audit trail.
type Operation struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	ComputeID string `json:"compute_id"`
	Action    string `json:"action"`
	Status    string `json:"status"`
	// Reason says why the action ran (api, wake, idle, shutdown, reconcile...).
	Reason     string    `json:"reason,omitempty"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// DurationMS is FinishedAt-StartedAt in milliseconds, once finished.
	DurationMS float64 `json:"duration_ms,omitempty"`
	// DetachedSessions counts the client sessions a suspend moved off
	// the compute: they stay open and attach again at their next command.
	DetachedSessions int `json:"detached_sessions,omitempty"`
}

// UsageInterval is one stretch of time a compute was active: the source of
// compute-seconds. End is zero while it is open.
//
// LastSeen is a heartbeat the scheduler advances while the compute runs, so
// that an interval left open by a daemon killed with -9 can be closed at the
// time the compute was last seen active, rather than at the restart (which
// would bill the downtime) or never (which would bill nothing).
//
// Usage rows carry project and compute ids but no foreign keys: billing must
// still see them after the project or compute is deleted.
type UsageInterval struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	// TenantID is the project's tenant; empty on write means the default.
	TenantID string `json:"tenant_id"`
	// MemoryBytes is the compute's memory while the interval ran (0:
	// unknown), for memory-seconds.
	MemoryBytes int64     `json:"memory_bytes,omitempty"`
	ComputeID   string    `json:"compute_id"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end,omitzero"`
	LastSeen    time.Time `json:"last_seen"`
}

// UsageSample is a point-in-time measure of a compute: its storage (a gauge,
// the bytes held at At) and the bytes proxied since the previous sample
// (deltas, so that a report sums them and a daemon restart loses at most one
// sample's worth rather than resetting a counter).
type UsageSample struct {
	ProjectID string `json:"project_id"`
	// TenantID is the project's tenant; empty on write means the default.
	TenantID     string    `json:"tenant_id"`
	ComputeID    string    `json:"compute_id"`
	At           time.Time `json:"at"`
	StorageBytes int64     `json:"storage_bytes"`
	BytesIn      int64     `json:"bytes_in"`
	BytesOut     int64     `json:"bytes_out"`
}

// Page selects a slice of a list ordered by id: at most Limit items with an
// id greater than After. A zero Limit means the backend default (100).
type Page struct {
	Limit int
	After string
	// NameContains keeps only the items whose name contains it. Only
	// ListProjects reads it. Callers pass only a-z, 0-9 and '-' (a name's
	// alphabet), so it holds no LIKE wildcard.
	NameContains string
}

// Store persists serverlessd's state. Every method takes a context and is
// safe for concurrent use.
type Store interface {
	// CreateTenant fails with ErrAlreadyExists if the name is taken.
	CreateTenant(ctx context.Context, t *Tenant) error
	// GetTenant finds a tenant by id or by name.
	GetTenant(ctx context.Context, idOrName string) (*Tenant, error)
	ListTenants(ctx context.Context, page Page) ([]Tenant, error)
	// UpdateTenant writes t's name and quotas.
	UpdateTenant(ctx context.Context, t *Tenant) error
	// DeleteTenant removes a tenant with its API keys; it fails with
	// ErrInUse while the tenant has projects.
	DeleteTenant(ctx context.Context, id string) error

	// CreateAPIKey stores k (its hash, never the key).
	CreateAPIKey(ctx context.Context, k *APIKey) error
	// GetAPIKeyByHash finds the key with that hash, expired or not.
	GetAPIKeyByHash(ctx context.Context, hash string) (*APIKey, error)
	// ListAPIKeys lists a tenant's keys ordered by id.
	ListAPIKeys(ctx context.Context, tenantID string) ([]APIKey, error)
	// DeleteAPIKey revokes one of a tenant's keys.
	DeleteAPIKey(ctx context.Context, tenantID, id string) error
	// TouchAPIKey records that a key was used at at.
	TouchAPIKey(ctx context.Context, id string, at time.Time) error

	// CreateProject fails with ErrAlreadyExists if the name is taken in the
	// tenant, and with ErrNotFound if the tenant does not exist.
	CreateProject(ctx context.Context, p *Project) error
	// GetProject finds a project by id, of any tenant, or by name in the
	// default tenant: the handles a MySQL login may use.
	GetProject(ctx context.Context, idOrName string) (*Project, error)
	// GetTenantProject finds a project of one tenant by id or name; another
	// tenant's project is ErrNotFound.
	GetTenantProject(ctx context.Context, tenantID, idOrName string) (*Project, error)
	// ListProjects lists the projects of one tenant or, when tenantID is "",
	// of all tenants.
	ListProjects(ctx context.Context, tenantID string, page Page) ([]Project, error)
	// CountProjects counts a tenant's projects.
	CountProjects(ctx context.Context, tenantID string) (int, error)
	UpdateProject(ctx context.Context, p *Project) error
	// DeleteProject removes a project with its roles, computes and operations.
	// Its usage intervals and samples stay, for billing.
	DeleteProject(ctx context.Context, id string) error

	// CreateCompute fails with ErrAlreadyExists if the project has one.
	CreateCompute(ctx context.Context, c *Compute) error
	GetCompute(ctx context.Context, id string) (*Compute, error)
	GetComputeByProject(ctx context.Context, projectID string) (*Compute, error)
	ListComputes(ctx context.Context, page Page) ([]Compute, error)
	// ListComputesInState lists the computes in one state (indexed).
	ListComputesInState(ctx context.Context, state ComputeState, page Page) ([]Compute, error)
	// UpdateCompute is a compare-and-set: it writes c only if the stored row
	// is still in state from with version c.Version, else ErrConflict. On
	// success c.Version is incremented and c.UpdatedAt set.
	UpdateCompute(ctx context.Context, c *Compute, from ComputeState) error
	DeleteCompute(ctx context.Context, id string) error

	// CreateRole fails with ErrAlreadyExists if the name is taken in the project.
	CreateRole(ctx context.Context, r *Role) error
	GetRole(ctx context.Context, projectID, name string) (*Role, error)
	ListRoles(ctx context.Context, projectID string) ([]Role, error)
	// UpdateRole replaces the role's password hash.
	UpdateRole(ctx context.Context, r *Role) error
	DeleteRole(ctx context.Context, projectID, name string) error

	CreateOperation(ctx context.Context, op *Operation) error
	// FinishOperation sets status, error, finished_at and duration.
	FinishOperation(ctx context.Context, op *Operation) error
	// ListOperations lists a project's operations, newest first.
	ListOperations(ctx context.Context, projectID string, limit int) ([]Operation, error)
	// RunningOperations lists every operation still running, of every
	// project, oldest first. At start-up it is what a killed daemon left
	// unfinished; a partial index keeps it as cheap as the few it returns.
	RunningOperations(ctx context.Context) ([]Operation, error)
	// FailRunningOperations finishes as failed, with error msg and
	// finished_at at, the compute's operations that are still running and
	// started at or before at, and returns how many it finished. Operations
	// that finished meanwhile keep their outcome, and ones started after at
	// (by a daemon that runs now) are left alone.
	FailRunningOperations(ctx context.Context, computeID, msg string, at time.Time) (int, error)

	// StartInterval records that a compute became active. An empty ID gets a
	// new "usg_" id, a zero Start is now and a zero LastSeen is Start; iv is
	// updated only on success. A compute has at most one open interval, and
	// the database enforces it (so that two daemons, or a retried start,
	// cannot bill the same seconds twice): starting a second while one is
	// open fails with ErrAlreadyExists. iv.End must be zero.
	StartInterval(ctx context.Context, iv *UsageInterval) error
	// EndInterval closes the compute's open interval at end (a zero end is
	// now), setting End and LastSeen. An end before the interval's start is
	// taken as the start, so no interval ever counts negative time. It fails
	// with ErrNotFound if the compute has no open interval.
	EndInterval(ctx context.Context, computeID string, end time.Time) error
	// TouchIntervals advances LastSeen to at on the open intervals of the
	// given computes, in one statement per few hundred ids, so that a
	// scheduler tick costs one write however many computes are active.
	// LastSeen never moves back; unknown or closed computes are ignored.
	TouchIntervals(ctx context.Context, computeIDs []string, at time.Time) error
	// TouchComputes advances LastActive to at on the given computes, in
	// one statement per few hundred ids: every daemon reports the activity
	// it sees, so that the one that suspends idle computes counts all of
	// it. LastActive never moves back; Version does not change (it is no
	// state change), and unknown computes are ignored.
	TouchComputes(ctx context.Context, computeIDs []string, at time.Time) error
	// OpenIntervals lists every open interval, ordered by start: what
	// reconciliation closes at start-up for computes that no longer run.
	OpenIntervals(ctx context.Context) ([]UsageInterval, error)
	// ListIntervals lists the intervals that overlap [from, to), an open one
	// counting as extending to now, of one project or, when projectID is "",
	// of all projects; ordered by start. A zero from or to leaves that side
	// unbounded. Intervals are returned whole: callers clip them to the range.
	ListIntervals(ctx context.Context, projectID string, from, to time.Time) ([]UsageInterval, error)
	// ListTenantIntervals is ListIntervals of a tenant's projects, deleted
	// ones included.
	ListTenantIntervals(ctx context.Context, tenantID string, from, to time.Time) ([]UsageInterval, error)

	// AddUsageSample records a sample. A zero At is now; s is updated only on
	// success.
	AddUsageSample(ctx context.Context, s *UsageSample) error
	// ListUsageSamples lists the samples with At in [from, to) of one project
	// or, when projectID is "", of all projects; ordered by At. A zero from
	// or to leaves that side unbounded.
	ListUsageSamples(ctx context.Context, projectID string, from, to time.Time) ([]UsageSample, error)
	// ListTenantUsageSamples is ListUsageSamples of a tenant's projects,
	// deleted ones included.
	ListTenantUsageSamples(ctx context.Context, tenantID string, from, to time.Time) ([]UsageSample, error)

	// Ping checks that the store answers (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}

// NewID returns a random id with the given prefix, e.g. "prj_3kq8...". The
// underscore keeps ids apart from project names, which are DNS labels.
func NewID(prefix string) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // cannot happen on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return prefix + "_" + string(b)
}

// Now returns the current time in UTC at microsecond precision, the
// precision both backends keep.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
