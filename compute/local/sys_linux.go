//go:build linux

package local

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openPidfd returns a pidfd for pid, or nil where pidfds are unavailable
// (Linux < 5.3, some sandboxes). It is non-blocking, so os.NewFile registers
// it with Go's netpoller.
func openPidfd(pid int) *os.File {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "pidfd")
}

// reserve allocates size bytes of f on disk, as InnoDB itself extends its
// files, so that a later write into a hole never fails with ENOSPC.
func reserve(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	return nil
}
