package server

import "golang.org/x/sys/unix"

// machineMemory is the machine's RAM. 0 means unknown.
func machineMemory() int64 {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil || n > 1<<62 {
		return 0
	}
	return int64(n)
}
