package local

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestCPUPlacer(t *testing.T) {
	p := newCPUPlacer([]int{0, 1, 2, 3})
	for _, tc := range []struct {
		id    string
		milli int64
		want  []int
	}{
		{"a", 1000, []int{3}},    // the highest free CPU
		{"b", 500, []int{2}},     // a part of a CPU still takes one
		{"c", 2000, []int{0, 1}}, // the least used
		{"d", 0, nil},            // no limit: anywhere
		{"e", 4000, nil},         // the whole machine: anywhere
		{"f", 1500, []int{2, 3}}, // every CPU used once: the highest
	} {
		if got := p.place(tc.id, tc.milli); !slices.Equal(got, tc.want) {
			t.Errorf("place(%s, %d) = %v, want %v", tc.id, tc.milli, got, tc.want)
		}
	}
	p.release("c")
	if got := p.place("g", 1000); !slices.Equal(got, []int{1}) {
		t.Errorf("after c left, place(g) = %v, want [1]", got)
	}
	if got := p.place("g", 1000); !slices.Equal(got, []int{1}) {
		t.Errorf("placing g again = %v, want [1] (its old place freed first)", got)
	}
}

// TestComputesGetTheirOwnCPUs starts real mariadbd: two computes of one CPU
// get one core each, different ones; one without a limit runs anywhere.
func TestComputesGetTheirOwnCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Fatalf("this test needs 2 CPUs, the machine has %d", runtime.NumCPU())
	}
	d, _ := newDriver(t, Options{})
	var lists []string
	for _, cpu := range []string{"1", "1", ""} {
		c := newCompute(t, d, "128Mi")
		c.Spec.Resources.CPU = cpu
		start(t, d, c)
		t.Cleanup(func() { stop(t, d, c) })
		d.mu.Lock()
		pid := d.procs[c.ID].pid
		d.mu.Unlock()
		lists = append(lists, allowedList(t, pid))
	}
	all := allowedList(t, os.Getpid())
	if lists[0] == all || lists[1] == all || lists[0] == lists[1] || strings.ContainsAny(lists[0]+lists[1], ",-") {
		t.Errorf("computes of one CPU run on %q and %q; want one core each, different ones (the machine: %q)", lists[0], lists[1], all)
	}
	if lists[2] != all {
		t.Errorf("a compute without a CPU limit runs on %q, want every CPU (%q)", lists[2], all)
	}
}

// allowedList is a process's Cpus_allowed_list.
func allowedList(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list for pid %d", pid)
	return ""
}
