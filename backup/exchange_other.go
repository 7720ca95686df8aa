//go:build !linux

package backup

import (
	"errors"
	"io/fs"
	"os"
)

// exchange moves the folder src to dst and removes what was at dst. Only
// Linux can swap two folders in one step (and leaves the old one at src
// for the caller); elsewhere a crash between the two renames leaves dst
// missing and the old data at dst.old.
func exchange(src, dst string) error {
	old := dst + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if err := os.Rename(dst, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
