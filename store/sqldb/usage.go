package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// touchBatch is the most compute ids one TouchIntervals statement carries:
// far below SQLite's (32766) and PostgreSQL's (65535) parameter limits, and
// large enough that a tick over every active compute is one statement in
// practice.
const touchBatch = 512

// StartInterval inserts an open interval. The partial unique index on open
// intervals turns a second open interval for the compute into
// ErrAlreadyExists.
func (s *Store) StartInterval(ctx context.Context, iv *store.UsageInterval) error {
	n := *iv
	if n.ProjectID == "" || n.ComputeID == "" {
		return fmt.Errorf("start usage interval: project id %q and compute id %q are both required",
			n.ProjectID, n.ComputeID)
	}
	if !n.End.IsZero() {
		return fmt.Errorf("start usage interval of compute %s: End is set (%v): "+
			"StartInterval records an open interval", n.ComputeID, n.End)
	}
	if n.ID == "" {
		n.ID = store.NewID("usg")
	}
	n.Start = orNow(n.Start, store.Now())
	n.LastSeen = orNow(n.LastSeen, n.Start)
	if n.TenantID == "" {
		n.TenantID = store.DefaultTenantID
	}
	_, err := s.q.insertInterval.ExecContext(ctx,
		n.ID, n.ProjectID, n.ComputeID, micros(n.Start), nil, micros(n.LastSeen), n.TenantID, n.MemoryBytes)
	if s.d.IsUniqueViolation != nil && s.d.IsUniqueViolation(err) {
		return fmt.Errorf("start usage interval %s: compute %s has an open interval already (or the id is taken): %w",
			n.ID, n.ComputeID, store.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("start usage interval %s of compute %s: %w", n.ID, n.ComputeID, err)
	}
	*iv = n
	return nil
}

// EndInterval closes the compute's open interval at end, or at its start if
// end is earlier.
func (s *Store) EndInterval(ctx context.Context, computeID string, end time.Time) error {
	e := micros(orNow(end, store.Now()))
	res, err := s.q.endInterval.ExecContext(ctx, e, e, e, e, computeID)
	if err != nil {
		return fmt.Errorf("end usage interval of compute %s: %w", computeID, err)
	}
	return mustAffect(res, fmt.Sprintf("end usage interval of compute %s: no open interval", computeID))
}

// TouchIntervals advances LastSeen on the computes' open intervals, in
// batches of touchBatch ids. Each batch is one statement; batches are not
// one transaction, since each is idempotent and a later tick redoes a
// failed one.
func (s *Store) TouchIntervals(ctx context.Context, computeIDs []string, at time.Time) error {
	// "last_seen_at < ?" keeps LastSeen from moving back, and skips
	// rewriting rows that a newer touch already reached.
	return s.touchBatches(ctx, `UPDATE usage_intervals SET last_seen_at = ?
		WHERE ended_at IS NULL AND last_seen_at < ? AND compute_id IN (?`, "usage intervals", computeIDs, at)
}

// TouchComputes advances LastActive on the computes, in batches as
// TouchIntervals. It is no compare-and-set: Version does not change.
func (s *Store) TouchComputes(ctx context.Context, computeIDs []string, at time.Time) error {
	return s.touchBatches(ctx, `UPDATE computes SET last_active = ?
		WHERE (last_active IS NULL OR last_active < ?) AND id IN (?`, "last activity", computeIDs, at)
}

// touchBatches runs query, which sets a time to at where it is before at
// for the listed ids and ends with "IN (?", once per batch of touchBatch
// ids.
func (s *Store) touchBatches(ctx context.Context, query, what string, computeIDs []string, at time.Time) error {
	t := micros(orNow(at, store.Now()))
	for len(computeIDs) > 0 {
		batch := computeIDs[:min(len(computeIDs), touchBatch)]
		computeIDs = computeIDs[len(batch):]
		// Pad the list to a power of two with repeats of its first id, so
		// that the statements take at most log2(touchBatch)+1 shapes and
		// PostgreSQL's per-connection statement cache reuses them.
		size := 1 << bits.Len(uint(len(batch)-1))
		args := make([]any, 0, 2+size)
		args = append(args, t, t)
		for i := range size {
			args = append(args, batch[i%len(batch)])
		}
		q := query + strings.Repeat(", ?", size-1) + `)`
		if _, err := s.db.ExecContext(ctx, s.d.rebind(q), args...); err != nil {
			return fmt.Errorf("touch %s of %d computes: %w", what, len(batch), err)
		}
	}
	return nil
}

// OpenIntervals lists every open interval, oldest first.
func (s *Store) OpenIntervals(ctx context.Context) ([]store.UsageInterval, error) {
	rows, err := s.q.openIntervals.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list open usage intervals: %w", err)
	}
	out, err := collect(rows, scanInterval)
	if err != nil {
		return nil, fmt.Errorf("list open usage intervals: %w", err)
	}
	return out, nil
}

// ListIntervals lists the intervals overlapping [from, to) of a project, or
// of all projects when projectID is "".
func (s *Store) ListIntervals(ctx context.Context, projectID string, from, to time.Time) ([]store.UsageInterval, error) {
	lo, hi := bounds(from, to)
	now := store.Now().UnixMicro()
	var err error
	var out []store.UsageInterval
	if projectID == "" {
		out, err = queryAll(ctx, s.q.listAllIntervals, scanInterval, hi, now, lo)
	} else {
		out, err = queryAll(ctx, s.q.listIntervals, scanInterval, projectID, hi, now, lo)
	}
	if err != nil {
		return nil, fmt.Errorf("list usage intervals of %s: %w", projectOrAll(projectID), err)
	}
	return out, nil
}

// ListTenantIntervals lists the intervals overlapping [from, to) of a
// tenant's projects, deleted ones included.
func (s *Store) ListTenantIntervals(ctx context.Context, tenantID string, from, to time.Time) ([]store.UsageInterval, error) {
	lo, hi := bounds(from, to)
	out, err := queryAll(ctx, s.q.listTenantIntervals, scanInterval, tenantID, hi, store.Now().UnixMicro(), lo)
	if err != nil {
		return nil, fmt.Errorf("list usage intervals of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// ListTenantUsageSamples lists the samples in [from, to) of a tenant's
// projects, deleted ones included.
func (s *Store) ListTenantUsageSamples(ctx context.Context, tenantID string, from, to time.Time) ([]store.UsageSample, error) {
	lo, hi := bounds(from, to)
	out, err := queryAll(ctx, s.q.listTenantSamples, scanSample, tenantID, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("list usage samples of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// AddUsageSample inserts a sample.
func (s *Store) AddUsageSample(ctx context.Context, us *store.UsageSample) error {
	n := *us
	if n.ProjectID == "" || n.ComputeID == "" {
		return fmt.Errorf("add usage sample: project id %q and compute id %q are both required",
			n.ProjectID, n.ComputeID)
	}
	n.At = orNow(n.At, store.Now())
	if n.TenantID == "" {
		n.TenantID = store.DefaultTenantID
	}
	_, err := s.q.insertSample.ExecContext(ctx,
		n.ProjectID, n.ComputeID, micros(n.At), n.StorageBytes, n.BytesIn, n.BytesOut, n.TenantID)
	if err != nil {
		return s.mapErr(err, "add usage sample of compute %s", n.ComputeID)
	}
	*us = n
	return nil
}

// ListUsageSamples lists the samples in [from, to) of a project, or of all
// projects when projectID is "".
func (s *Store) ListUsageSamples(ctx context.Context, projectID string, from, to time.Time) ([]store.UsageSample, error) {
	lo, hi := bounds(from, to)
	var err error
	var out []store.UsageSample
	if projectID == "" {
		out, err = queryAll(ctx, s.q.listAllSamples, scanSample, lo, hi)
	} else {
		out, err = queryAll(ctx, s.q.listSamples, scanSample, projectID, lo, hi)
	}
	if err != nil {
		return nil, fmt.Errorf("list usage samples of %s: %w", projectOrAll(projectID), err)
	}
	return out, nil
}

// bounds encodes a [from, to) range as microseconds, a zero time leaving its
// side unbounded.
func bounds(from, to time.Time) (lo, hi int64) {
	lo, hi = math.MinInt64, math.MaxInt64
	if !from.IsZero() {
		lo = from.UnixMicro()
	}
	if !to.IsZero() {
		hi = to.UnixMicro()
	}
	return lo, hi
}

func projectOrAll(projectID string) string {
	if projectID == "" {
		return "all projects"
	}
	return "project " + projectID
}

// queryAll runs a prepared query and scans every row.
func queryAll[T any](ctx context.Context, st *sql.Stmt, scan func(scanner) (*T, error), args ...any) ([]T, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scan)
}

func scanInterval(r scanner) (*store.UsageInterval, error) {
	var iv store.UsageInterval
	err := r.Scan(&iv.ID, &iv.ProjectID, &iv.ComputeID,
		timeCol{&iv.Start}, timeCol{&iv.End}, timeCol{&iv.LastSeen}, &iv.TenantID, &iv.MemoryBytes)
	if err != nil {
		return nil, err
	}
	return &iv, nil
}

func scanSample(r scanner) (*store.UsageSample, error) {
	var us store.UsageSample
	err := r.Scan(&us.ProjectID, &us.ComputeID, timeCol{&us.At},
		&us.StorageBytes, &us.BytesIn, &us.BytesOut, &us.TenantID)
	if err != nil {
		return nil, err
	}
	return &us, nil
}
