// Package storetest is the conformance suite that every store.Store backend
// runs unchanged, so that the backends cannot drift apart.
//
// A backend's test calls:
//
//	storetest.Run(t, func(t *testing.T) store.Store { ... })
//
// open must return a fresh, empty, migrated store and arrange (t.Cleanup) to
// close it. Each subtest opens its own store.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// Run runs the whole suite.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"ProjectCRUD", testProjectCRUD},
		{"ProjectUniqueness", testProjectUniqueness},
		{"ProjectConcurrentCreate", testProjectConcurrentCreate},
		{"ProjectNameFilter", testProjectNameFilter},
		{"TenantCRUD", testTenantCRUD},
		{"TenantProjects", testTenantProjects},
		{"APIKeys", testAPIKeys},
		{"ComputeCRUD", testComputeCRUD},
		{"ComputesInState", testComputesInState},
		{"ComputeUniqueness", testComputeUniqueness},
		{"ComputeCAS", testComputeCAS},
		{"ComputeCASRace", testComputeCASRace},
		{"ComputeTouch", testComputeTouch},
		{"RoleCRUD", testRoleCRUD},
		{"RoleUniqueness", testRoleUniqueness},
		{"OperationCRUD", testOperationCRUD},
		{"OperationsNewestFirst", testOperationsNewestFirst},
		{"RunningOperations", testRunningOperations},
		{"Pagination", testPagination},
		{"DeleteProjectCascades", testDeleteProjectCascades},
		{"Times", testTimes},
		{"NotFound", testNotFound},
		{"UsageIntervalLifecycle", testUsageIntervalLifecycle},
		{"UsageIntervalRace", testUsageIntervalRace},
		{"UsageTouchMany", testUsageTouchMany},
		{"UsageListIntervals", testUsageListIntervals},
		{"UsageSamples", testUsageSamples},
		{"UsageSurvivesDelete", testUsageSurvivesDelete},
		{"UsageByTenant", testUsageByTenant},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// newProject creates a project with the given name.
func newProject(t *testing.T, s store.Store, name string) *store.Project {
	t.Helper()
	p := &store.Project{Name: name, Config: store.ProjectConfig{IdleTimeout: store.DefaultIdleTimeout}}
	if err := s.CreateProject(t.Context(), p); err != nil {
		t.Fatalf("CreateProject(%q): %v", name, err)
	}
	return p
}

// newCompute creates a suspended compute for the project.
func newCompute(t *testing.T, s store.Store, projectID string) *store.Compute {
	t.Helper()
	c := &store.Compute{
		ProjectID: projectID,
		State:     store.StateSuspended,
		Driver:    "local",
		Node:      "node-a",
		Spec:      store.ComputeSpec{Image: "mariadb:11", Resources: store.Resources{CPU: "500m", Memory: "1Gi"}},
	}
	if err := s.CreateCompute(t.Context(), c); err != nil {
		t.Fatalf("CreateCompute(project %s): %v", projectID, err)
	}
	return c
}

// wantErr fails unless err wraps target and its message names key, so that
// errors both match a sentinel and say what failed.
func wantErr(t *testing.T, what string, err, target error, key string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %q", what, err, target)
		return
	}
	if !strings.Contains(err.Error(), key) {
		t.Errorf("%s: error %q does not name %q", what, err, key)
	}
}

// same fails unless got and want are deeply equal.
func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// isStored fails unless tm is UTC at microsecond precision, as the store
// keeps times.
func isStored(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if tm.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", what, tm.Location())
	}
	if tm.Nanosecond()%1000 != 0 {
		t.Errorf("%s: %v has sub-microsecond digits", what, tm)
	}
}

// ids returns the ids of a list, for messages and comparisons.
func ids[T any](items []T, id func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = id(it)
	}
	return out
}

func projectID(p store.Project) string     { return p.ID }
func computeID(c store.Compute) string     { return c.ID }
func operationID(o store.Operation) string { return o.ID }

func name(prefix string, i int) string { return fmt.Sprintf("%s-%03d", prefix, i) }
