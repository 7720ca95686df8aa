//go:build linux || darwin

package s3test

import (
	"os"
	"syscall"
)

// lock holds an exclusive lock on the file p until the returned function
// runs; the kernel drops it if the process dies, so no lock goes stale.
func lock(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
