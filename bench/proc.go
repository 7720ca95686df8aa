package bench

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// ProcMigrations returns how many times a process's threads have moved
// between CPUs, summed from /proc/<pid>/task/*/sched (se.nr_migrations).
// That file needs a kernel with CONFIG_SCHED_DEBUG; without it the error
// says so. Threads that exit between the listing and the read are skipped.
func ProcMigrations(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	found := false
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/sched", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, val, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(name) != "se.nr_migrations" {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse se.nr_migrations of /proc/%d/task/%s/sched: %w", pid, t.Name(), err)
			}
			total += n
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("no se.nr_migrations under /proc/%d/task (kernel without CONFIG_SCHED_DEBUG?)", pid)
	}
	return total, nil
}
