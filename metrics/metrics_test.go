package metrics

import (
	"slices"
	"testing"
)

// TestNames lists families before their first sample, the runtime's and
// the process's among them, and the per-project ones only when on.
func TestNames(t *testing.T) {
	names := New(false).Names()
	for _, want := range []string{"serverlessd_wake_duration_seconds", "serverlessd_proxy_pool_wait_seconds",
		"serverlessd_operation_failures_total", "go_goroutines", "process_cpu_seconds_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() lacks %s: %v", want, names)
		}
	}
	if slices.Contains(names, "serverlessd_project_wakes_total") {
		t.Error("per-project wakes listed with per-project labels off")
	}
	if !slices.Contains(New(true).Names(), "serverlessd_project_wakes_total") {
		t.Error("per-project wakes not listed with per-project labels on")
	}
	m := New(false)
	m.Register(NewFunc("store_up", "test", false, nil, func() []Sample { return nil }))
	if !slices.Contains(m.Names(), "serverlessd_store_up") {
		t.Error("a registered FuncCollector is not listed")
	}
}
