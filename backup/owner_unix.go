//go:build unix

package backup

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
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

// runAsOwner makes cmd, when the daemon is root, run as the owner of dir
// (a compute's datadir, whose user may have no name), with run, its
// scratch folder, made its own: what it writes in dir stays the compute's.
// Otherwise cmd runs as the daemon, which then owns dir.
func runAsOwner(cmd *exec.Cmd, dir, run string) error {
	info, err := os.Stat(dir)
	if err != nil || os.Geteuid() != 0 {
		return err
	}
	uid, gid := owner(info)
	if uid <= 0 {
		cmd.Args = append(cmd.Args, "--user=root")
		return nil
	}
	if err := os.Chown(run, uid, gid); err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return nil
}
