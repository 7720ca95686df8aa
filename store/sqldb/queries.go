package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/serverlessd/serverlessd/store"
)

// Column lists, in the order the scan functions read them.
const (
	projectCols = "id, name, config, created_at, updated_at, tenant_id"
	tenantCols  = "id, name, quotas, created_at, updated_at"
	apiKeyCols  = "id, tenant_id, name, scope, project_id, read_only, hash, expires_at, created_at, last_used_at"
	computeCols = "id, project_id, state, driver, node, spec, address, error, " +
		"last_active, started_at, suspended_at, created_at, updated_at, version"
	// computeRead selects a compute with its project's tenant (a project
	// never changes tenant, so the join is always current).
	computeRead = `SELECT c.id, c.project_id, c.state, c.driver, c.node, c.spec, c.address, c.error,
		c.last_active, c.started_at, c.suspended_at, c.created_at, c.updated_at, c.version, p.tenant_id
		FROM computes c JOIN projects p ON p.id = c.project_id`
	roleCols      = "project_id, name, password_hash, created_at, updated_at"
	operationCols = "id, project_id, compute_id, action, status, reason, error, started_at, finished_at, detached_sessions"
	intervalCols  = "id, project_id, compute_id, started_at, ended_at, last_seen_at, tenant_id, memory_bytes"
	sampleCols    = "project_id, compute_id, sampled_at, storage_bytes, bytes_in, bytes_out, tenant_id"
)

// queries are the shared SQL, prepared once. Preparing saves SQLite from
// parsing each query again, which was 40% of a lookup (18 -> 10 us); pgx
// caches its prepared statements either way.
type queries struct {
	insertTenant, getTenant, listTenants, updateTenant, deleteTenant *sql.Stmt

	insertAPIKey, getAPIKeyByHash, listAPIKeys, deleteAPIKey, touchAPIKey *sql.Stmt

	insertProject, getProject, getTenantProject, updateProject, deleteProject *sql.Stmt
	listProjects, listTenantProjects, countProjects                           *sql.Stmt

	insertCompute, getCompute, getComputeByProject, listComputes, listComputesInState *sql.Stmt
	casCompute, computeExists, deleteCompute, projectTenant                           *sql.Stmt

	insertRole, getRole, listRoles, updateRole, deleteRole *sql.Stmt

	insertOperation, finishOperation, listOperations *sql.Stmt
	runningOperations, failRunningOperations         *sql.Stmt

	insertInterval, endInterval, openIntervals           *sql.Stmt
	listIntervals, listAllIntervals, listTenantIntervals *sql.Stmt
	insertSample, listSamples, listAllSamples            *sql.Stmt
	listTenantSamples                                    *sql.Stmt

	all []*sql.Stmt // for Close
}

// prepare prepares the shared SQL, rebound for the dialect. The tables must
// exist: SQLite checks them when it prepares.
func prepare(ctx context.Context, db *sql.DB, d Dialect) (*queries, error) {
	var all []*sql.Stmt
	var errs []error
	q := newQueries(func(query string) *sql.Stmt {
		st, err := db.PrepareContext(ctx, d.rebind(query))
		if err != nil {
			errs = append(errs, fmt.Errorf("prepare %q: %w", query, err))
			return nil
		}
		all = append(all, st)
		return st
	})
	q.all = all
	if err := errors.Join(errs...); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

// close closes the prepared statements.
func (q *queries) close() error {
	var errs []error
	for _, st := range q.all {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// newQueries builds every statement with r from its SQL, written with '?'
// placeholders.
func newQueries(r func(string) *sql.Stmt) *queries {
	return &queries{
		insertTenant: r(`INSERT INTO tenants (` + tenantCols + `) VALUES (?, ?, ?, ?, ?)`),
		getTenant: r(`SELECT ` + tenantCols + ` FROM tenants WHERE id = ? OR name = ?
			ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`),
		listTenants:  r(`SELECT ` + tenantCols + ` FROM tenants WHERE id > ? ORDER BY id LIMIT ?`),
		updateTenant: r(`UPDATE tenants SET name = ?, quotas = ?, updated_at = ? WHERE id = ?`),
		deleteTenant: r(`DELETE FROM tenants WHERE id = ?`),

		insertAPIKey:    r(`INSERT INTO api_keys (` + apiKeyCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		getAPIKeyByHash: r(`SELECT ` + apiKeyCols + ` FROM api_keys WHERE hash = ?`),
		listAPIKeys:     r(`SELECT ` + apiKeyCols + ` FROM api_keys WHERE tenant_id = ? ORDER BY id`),
		deleteAPIKey:    r(`DELETE FROM api_keys WHERE tenant_id = ? AND id = ?`),
		// last_used_at never moves back, whatever order touches land in.
		touchAPIKey: r(`UPDATE api_keys SET last_used_at = ?
			WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`),

		insertProject: r(`INSERT INTO projects (` + projectCols + `) VALUES (?, ?, ?, ?, ?, ?)`),
		// One query serves an id or a name. Ids contain '_' and names are
		// DNS labels, so at most one row matches in practice; the ORDER BY
		// makes an id win should a stray name ever equal another's id. Only
		// the default tenant's projects are found by name: names are unique
		// per tenant, ids everywhere.
		getProject: r(`SELECT ` + projectCols + ` FROM projects
			WHERE id = ? OR (tenant_id = '` + store.DefaultTenantID + `' AND name = ?)
			ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`),
		getTenantProject: r(`SELECT ` + projectCols + ` FROM projects
			WHERE tenant_id = ? AND (id = ? OR name = ?)
			ORDER BY CASE WHEN id = ? THEN 0 ELSE 1 END LIMIT 1`),
		listProjects:       r(`SELECT ` + projectCols + ` FROM projects WHERE id > ? AND name LIKE ? ORDER BY id LIMIT ?`),
		listTenantProjects: r(`SELECT ` + projectCols + ` FROM projects WHERE tenant_id = ? AND id > ? AND name LIKE ? ORDER BY id LIMIT ?`),
		countProjects:      r(`SELECT COUNT(*) FROM projects WHERE tenant_id = ?`),
		updateProject:      r(`UPDATE projects SET name = ?, config = ?, updated_at = ? WHERE id = ?`),
		deleteProject:      r(`DELETE FROM projects WHERE id = ?`),

		insertCompute: r(`INSERT INTO computes (` + computeCols + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		getCompute:          r(computeRead + ` WHERE c.id = ?`),
		getComputeByProject: r(computeRead + ` WHERE c.project_id = ?`),
		listComputes:        r(computeRead + ` WHERE c.id > ? ORDER BY c.id LIMIT ?`),
		listComputesInState: r(computeRead + ` WHERE c.state = ? AND c.id > ? ORDER BY c.id LIMIT ?`),
		projectTenant:       r(`SELECT tenant_id FROM projects WHERE id = ?`),
		// The compare-and-set: one statement, so the database's own row lock
		// decides the race and no transaction is needed.
		casCompute: r(`UPDATE computes SET state = ?, driver = ?, node = ?, spec = ?, address = ?,
			error = ?, last_active = ?, started_at = ?, suspended_at = ?, updated_at = ?,
			version = version + 1
			WHERE id = ? AND state = ? AND version = ?`),
		computeExists: r(`SELECT state, version FROM computes WHERE id = ?`),
		deleteCompute: r(`DELETE FROM computes WHERE id = ?`),

		insertRole: r(`INSERT INTO roles (` + roleCols + `) VALUES (?, ?, ?, ?, ?)`),
		getRole:    r(`SELECT ` + roleCols + ` FROM roles WHERE project_id = ? AND name = ?`),
		listRoles:  r(`SELECT ` + roleCols + ` FROM roles WHERE project_id = ? ORDER BY name`),
		updateRole: r(`UPDATE roles SET password_hash = ?, updated_at = ? WHERE project_id = ? AND name = ?`),
		deleteRole: r(`DELETE FROM roles WHERE project_id = ? AND name = ?`),

		insertOperation: r(`INSERT INTO operations (` + operationCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		// RETURNING (SQLite 3.35+, PostgreSQL) gives started_at for the
		// duration without a second round trip.
		finishOperation: r(`UPDATE operations SET status = ?, error = ?, finished_at = ?
			WHERE id = ? RETURNING started_at`),
		// id breaks ties between operations started in the same microsecond,
		// so the order is stable.
		listOperations: r(`SELECT ` + operationCols + ` FROM operations WHERE project_id = ?
			ORDER BY started_at DESC, id DESC LIMIT ?`),
		// "status = 'running'" is spelled out, not a parameter, so that the
		// planners of both databases pick the partial index operations_running.
		runningOperations: r(`SELECT ` + operationCols + ` FROM operations WHERE status = 'running'
			ORDER BY started_at, id`),
		failRunningOperations: r(`UPDATE operations SET status = ?, error = ?, finished_at = ?
			WHERE compute_id = ? AND status = 'running' AND started_at <= ?`),

		insertInterval: r(`INSERT INTO usage_intervals (` + intervalCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		// The CASE keeps an interval from ending before it started (a clock
		// step, a bad caller), which would bill negative seconds.
		endInterval: r(`UPDATE usage_intervals
			SET ended_at = CASE WHEN started_at > ? THEN started_at ELSE ? END,
			    last_seen_at = CASE WHEN started_at > ? THEN started_at ELSE ? END
			WHERE compute_id = ? AND ended_at IS NULL`),
		// "ended_at IS NULL" is spelled out so that the planners of both
		// databases pick the partial index.
		openIntervals: r(`SELECT ` + intervalCols + ` FROM usage_intervals WHERE ended_at IS NULL
			ORDER BY started_at, id`),
		// Overlap with [from, to): it starts before to and ends (or, open,
		// reaches now) after from. One project and all projects are two
		// statements, not "? = '' OR project_id = ?", so that the planner can
		// use the (project_id, started_at) index for the first.
		listIntervals: r(`SELECT ` + intervalCols + ` FROM usage_intervals
			WHERE project_id = ? AND started_at < ? AND COALESCE(ended_at, ?) > ?
			ORDER BY started_at, id`),
		listTenantIntervals: r(`SELECT ` + intervalCols + ` FROM usage_intervals
			WHERE tenant_id = ? AND started_at < ? AND COALESCE(ended_at, ?) > ?
			ORDER BY started_at, id`),
		listAllIntervals: r(`SELECT ` + intervalCols + ` FROM usage_intervals
			WHERE started_at < ? AND COALESCE(ended_at, ?) > ?
			ORDER BY started_at, id`),

		insertSample: r(`INSERT INTO usage_samples (` + sampleCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		listSamples: r(`SELECT ` + sampleCols + ` FROM usage_samples
			WHERE project_id = ? AND sampled_at >= ? AND sampled_at < ?
			ORDER BY sampled_at, compute_id`),
		listTenantSamples: r(`SELECT ` + sampleCols + ` FROM usage_samples
			WHERE tenant_id = ? AND sampled_at >= ? AND sampled_at < ?
			ORDER BY sampled_at, compute_id`),
		listAllSamples: r(`SELECT ` + sampleCols + ` FROM usage_samples
			WHERE sampled_at >= ? AND sampled_at < ?
			ORDER BY sampled_at, compute_id`),
	}
}
