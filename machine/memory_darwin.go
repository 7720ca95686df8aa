package machine

import "golang.org/x/sys/unix"

// Memory is the machine's RAM. 0 means unknown.
func Memory() int64 {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil || n > 1<<62 {
		return 0
	}
	return int64(n)
}
