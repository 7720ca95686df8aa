//go:build unix

package backup

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// owner is a file's uid and gid.
func owner(info fs.FileInfo) (int, int) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// chown gives a restored file its owner where the daemon may (it is root);
// otherwise the file stays the daemon's, as everything it writes.
func chown(p string, uid, gid int) error {
	if uid < 0 || os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(p, uid, gid); err != nil && !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return nil
}
