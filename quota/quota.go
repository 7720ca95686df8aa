// Package quota enforces tenant quotas where a compute starts: the memory
// of a tenant's computes running at once, and its compute-seconds in a
// calendar month.
package quota

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/usage"
)

// spentTTL is how long a tenant's intervals of this month are reused
// before they are read again: the read takes every interval of its month.
// The intervals open at the read keep counting until now, and a start
// through CheckStart drops the tenant's read, so only a compute started by
// another daemon is missed, for at most this long.
const spentTTL = time.Minute

// Checker is a compute.StartChecker over a store. Give it the daemon's
// caching store: a start then reads the tenant from memory.
type Checker struct {
	Store store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	spent map[string]spent // tenant id -> compute-seconds this month
}

type spent struct {
	closed float64     // seconds of the intervals closed at the read
	open   []time.Time // starts (clipped to the month) of those still open
	month  time.Time
	at     time.Time
}

// until is the compute-seconds spent by now.
func (s spent) until(now time.Time) float64 {
	total := s.closed
	for _, start := range s.open {
		total += max(now.Sub(start).Seconds(), 0)
	}
	return total
}

var _ compute.StartChecker = (*Checker)(nil)

// CheckStart refuses c's start when its tenant's running computes plus c
// would pass max_active_memory, or when the tenant spent its
// compute_seconds_per_month.
func (q *Checker) CheckStart(ctx context.Context, c *store.Compute, tenantRunning int64) error {
	t, err := q.Store.GetTenant(ctx, c.TenantID)
	if err != nil {
		return fmt.Errorf("quotas of project %s: %w", c.ProjectID, err)
	}
	if err := checkMemory(t, compute.MemoryOf(c.Spec)+tenantRunning); err != nil {
		return err
	}
	if err := q.checkSeconds(ctx, t, q.now()); err != nil {
		return err
	}
	// The start about to happen opens an interval the cached read does
	// not have: the next check reads again.
	q.mu.Lock()
	delete(q.spent, t.ID)
	q.mu.Unlock()
	return nil
}

// Spent reports whether the tenant has used up its
// compute_seconds_per_month: its computes then suspend at their next idle
// point and stay down (CheckStart refuses them).
func (q *Checker) Spent(ctx context.Context, tenantID string) bool {
	t, err := q.Store.GetTenant(ctx, tenantID)
	if err != nil {
		return false
	}
	var qe *compute.QuotaError
	return errors.As(q.checkSeconds(ctx, t, q.now()), &qe)
}

func (q *Checker) now() time.Time {
	if q.Now != nil {
		return q.Now().UTC()
	}
	return time.Now().UTC()
}

// checkMemory refuses a start that would bring the memory of the tenant's
// running computes to used, past max_active_memory.
func checkMemory(t *store.Tenant, used int64) error {
	if t.Quotas.MaxActiveMemory == "" {
		return nil
	}
	limit, err := quantity.Units(t.Quotas.MaxActiveMemory)
	if err != nil {
		return fmt.Errorf("tenant %s: max_active_memory %q: %w", t.Name, t.Quotas.MaxActiveMemory, err)
	}
	if used > limit {
		return &compute.QuotaError{Msg: fmt.Sprintf("tenant %s would run %s of computes at once, over its quota max_active_memory %s: "+
			"close another project's connections so that it suspends, or ask an admin to raise the quota", t.Name, mib(used), t.Quotas.MaxActiveMemory)}
	}
	return nil
}

func (q *Checker) checkSeconds(ctx context.Context, t *store.Tenant, now time.Time) error {
	limit := t.Quotas.ComputeSecondsPerMonth
	if limit <= 0 {
		return nil
	}
	used, err := q.spentThisMonth(ctx, t.ID, now)
	if err != nil {
		return err
	}
	if used >= float64(limit) {
		return &compute.QuotaError{Msg: fmt.Sprintf("tenant %s used %.0f compute-seconds this month, its quota compute_seconds_per_month is %d: "+
			"wait for the next month, or ask an admin to raise the quota", t.Name, used, limit)}
	}
	return nil
}

// spentThisMonth is the compute-seconds of the tenant's projects since the
// start of the month (UTC).
func (q *Checker) spentThisMonth(ctx context.Context, tenantID string, now time.Time) (float64, error) {
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	q.mu.Lock()
	s, ok := q.spent[tenantID]
	q.mu.Unlock()
	if ok && s.month.Equal(month) && now.Sub(s.at) < spentTTL {
		return s.until(now), nil
	}
	ivs, err := q.Store.ListTenantIntervals(ctx, tenantID, month, now)
	if err != nil {
		return 0, fmt.Errorf("compute-seconds of tenant %s: %w", tenantID, err)
	}
	s = spent{month: month, at: now}
	var closed []store.UsageInterval
	for _, iv := range ivs {
		if iv.End.IsZero() {
			s.open = append(s.open, maxTime(iv.Start, month))
		} else {
			closed = append(closed, iv)
		}
	}
	_, total := usage.Report(closed, nil, month, now, now)
	s.closed = total.ComputeSeconds
	q.mu.Lock()
	if q.spent == nil {
		q.spent = map[string]spent{}
	}
	q.spent[tenantID] = s
	q.mu.Unlock()
	return s.until(now), nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func mib(n int64) string { return fmt.Sprintf("%dMi", n>>20) }
