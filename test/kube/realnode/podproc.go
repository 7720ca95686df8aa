//go:build linux && realnode

package realnode

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// podProcess is a process of a Pod's container, seen from the host.
type podProcess struct {
	pid, uid int
}

// podProcesses returns the processes called comm in the kubelet's kubepods
// cgroups: the containers' processes, whatever runtime started them.
func podProcesses(comm string) []podProcess {
	seen := map[int]bool{}
	var out []podProcess
	for _, d := range kubepodsDirs() {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil || seen[pid] {
				continue
			}
			seen[pid] = true
			name, _ := os.ReadFile(filepath.Join("/proc", f, "comm"))
			if strings.TrimSpace(string(name)) != comm {
				continue
			}
			if uid, ok := procUID(pid); ok {
				out = append(out, podProcess{pid: pid, uid: uid})
			}
		}
	}
	return out
}

// procUID is a process's real uid, from /proc/<pid>/status.
func procUID(pid int) (int, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, err := strconv.Atoi(f[1])
			return uid, err == nil
		}
	}
	return 0, false
}
