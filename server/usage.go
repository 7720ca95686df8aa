package server

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/usage"
)

// maxBuckets bounds a usage reply (a year of hours is 8784).
const maxBuckets = 10_000

// period reads ?from=&to= (RFC 3339; default: the last 24 hours).
func period(r *http.Request) (from, to time.Time, err error) {
	to = time.Now().UTC()
	parse := func(key string, dst *time.Time) error {
		v := r.URL.Query().Get(key)
		if v == "" {
			return nil
		}
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return invalid("%s must be an RFC 3339 time like 2026-01-02T15:04:05Z, got %q", key, v)
		}
		*dst = t.UTC()
		return nil
	}
	if err = parse("to", &to); err != nil {
		return
	}
	from = to.Add(-24 * time.Hour)
	if err = parse("from", &from); err != nil {
		return
	}
	if !from.Before(to) {
		err = invalid("from (%s) must be before to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return
}

// projectUsage is GET /api/v1/projects/{id}/usage?from=&to=&granularity=hour|day.
func (s *Server) projectUsage(w http.ResponseWriter, r *http.Request) {
	from, to, err := period(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	step, err := usage.Step(r.URL.Query().Get("granularity"))
	if err != nil {
		s.fail(w, r, invalid("%v", err))
		return
	}
	if to.Sub(from)/step > maxBuckets {
		s.fail(w, r, invalid("the period holds more than %d buckets; use granularity=day or a shorter period", maxBuckets))
		return
	}
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ivs, samples, err := s.usageRows(r, p.ID, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	buckets := usage.Buckets(ivs, samples, from, to, step, time.Now())
	writeJSON(w, http.StatusOK, map[string]any{
		"project_id": p.ID, "from": from, "to": to, "granularity": r.URL.Query().Get("granularity"), "buckets": buckets,
	})
}

func (s *Server) usageRows(r *http.Request, projectID string, from, to time.Time) ([]store.UsageInterval, []store.UsageSample, error) {
	ivs, err := s.st.ListIntervals(r.Context(), projectID, from, to)
	if err != nil {
		return nil, nil, err
	}
	samples, err := s.st.ListUsageSamples(r.Context(), projectID, from, to)
	return ivs, samples, err
}

// billing is GET /api/v1/usage?from=&to=: usage per project and per
// tenant, as JSON or, with Accept: text/csv, as CSV (?group=tenant for one
// line per tenant). An admin sees every tenant (one with ?tenant=), a
// tenant key its tenant, a project key its project.
func (s *Server) billing(w http.ResponseWriter, r *http.Request) {
	p := who(r)
	switch {
	case p.projectID != "":
		s.report(w, r, func(from, to time.Time) ([]store.UsageInterval, []store.UsageSample, error) {
			return s.usageRows(r, p.projectID, from, to)
		})
	case !p.admin:
		s.tenantReport(w, r, p.tenantID)
	case r.URL.Query().Get("tenant") != "":
		t, err := s.st.GetTenant(r.Context(), r.URL.Query().Get("tenant"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.tenantReport(w, r, t.ID)
	default:
		s.report(w, r, func(from, to time.Time) ([]store.UsageInterval, []store.UsageSample, error) {
			return s.usageRows(r, "", from, to)
		})
	}
}

// tenantUsage is GET /api/v1/tenants/{id}/usage: the billing report of one
// tenant's projects, deleted ones included.
func (s *Server) tenantUsage(w http.ResponseWriter, r *http.Request) {
	t, err := s.tenant(r)
	if err == nil && who(r).projectID != "" {
		err = forbidden{"a project-scoped API key sees its project's usage only: GET /api/v1/projects/{id}/usage"}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.tenantReport(w, r, t.ID)
}

// tenantReport writes the report of one tenant, from its own rows.
func (s *Server) tenantReport(w http.ResponseWriter, r *http.Request, tenantID string) {
	s.report(w, r, func(from, to time.Time) ([]store.UsageInterval, []store.UsageSample, error) {
		ivs, err := s.st.ListTenantIntervals(r.Context(), tenantID, from, to)
		if err != nil {
			return nil, nil, err
		}
		samples, err := s.st.ListTenantUsageSamples(r.Context(), tenantID, from, to)
		return ivs, samples, err
	})
}

// usageSource reads the usage rows a report covers.
type usageSource func(from, to time.Time) ([]store.UsageInterval, []store.UsageSample, error)

// report writes the usage of the rows rows reads.
func (s *Server) report(w http.ResponseWriter, r *http.Request, rows usageSource) {
	from, to, err := period(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ivs, samples, err := rows(from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	lines, total := usage.Report(ivs, samples, from, to, time.Now())
	for i := range lines {
		// Deleted projects keep their usage; they just have no name.
		if p, err := s.st.GetProject(r.Context(), lines[i].ProjectID); err == nil {
			lines[i].ProjectName = p.Name
		}
	}
	tenants := usage.ByTenant(lines)
	for i := range tenants {
		if t, err := s.st.GetTenant(r.Context(), tenants[i].TenantID); err == nil {
			tenants[i].TenantName = t.Name
		}
	}
	if lines == nil {
		lines, tenants = []usage.Line{}, []usage.Line{}
	}
	if strings.Contains(r.Header.Get("Accept"), "text/csv") {
		if r.URL.Query().Get("group") == "tenant" {
			writeCSV(w, append(tenants, total), "tenant")
			return
		}
		writeCSV(w, append(lines, total), "project")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"from": from, "to": to, "projects": lines, "tenants": tenants, "total": total})
}

// writeCSV writes one line per project or per tenant (by), total last.
func writeCSV(w http.ResponseWriter, lines []usage.Line, by string) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	head := []string{"project_id", "project_name", "tenant_id"}
	if by == "tenant" {
		head = []string{"tenant_id", "tenant_name"}
	}
	_ = cw.Write(append(head, "compute_seconds", "memory_gib_seconds", "storage_bytes", "storage_gib_hours", "bytes_in", "bytes_out"))
	for _, l := range lines {
		row := []string{l.ProjectID, l.ProjectName, l.TenantID}
		if by == "tenant" {
			row = []string{l.TenantID, l.TenantName}
			if l.ProjectID == "total" {
				row[0] = "total"
			}
		}
		_ = cw.Write(append(row, fmtFloat(l.ComputeSeconds), fmtFloat(l.MemoryGiBSeconds), strconv.FormatInt(l.StorageBytes, 10),
			fmtFloat(l.StorageGiBHours), strconv.FormatInt(l.BytesIn, 10), strconv.FormatInt(l.BytesOut, 10)))
	}
	cw.Flush()
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
