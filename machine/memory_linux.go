package machine

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Memory is the memory the daemon's computes can use: the machine's
// RAM, or the daemon's cgroup (v2) limit when lower, since the local
// driver's mariadbd processes run in the daemon's cgroup. 0 means unknown.
func Memory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	total := int64(si.Totalram) * int64(si.Unit)
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return total
	}
	if limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && limit > 0 {
		return min(total, limit)
	}
	return total // "max": no limit
}
