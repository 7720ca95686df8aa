//go:build linux

package backup

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// exchange moves the folder src to dst in one step, and what was at dst
// to src, for the caller to remove: at no moment is dst missing, so a
// compute that starts after a crash half-way finds either datadir, never
// none (which it would initialize empty).
func exchange(src, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	if errors.Is(err, fs.ErrNotExist) {
		return os.Rename(src, dst) // dst is lost: nothing to exchange with
	}
	return err
}
