package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// UIDRange is the range of user ids that computes run as when the daemon
// runs as root: each compute gets its own uid (and the same gid), so that
// even a bug in mariadbd cannot touch another compute's files, the state
// store or anything else of the host. The ids need no entry in /etc/passwd.
type UIDRange struct{ First, Last int }

// DefaultUIDRange is far above the ids distributions hand out (they stop
// at 60000 for users and use 100000+ for subordinate ids of containers in
// 65536-wide blocks; this range starts past the first 31 such blocks).
var DefaultUIDRange = UIDRange{First: 2_100_000, Last: 2_165_535}

// owners hands out compute uids. With no range (the daemon is not root),
// computes run as the daemon's own user.
type owners struct {
	r   *UIDRange
	dir string // the computes' folder: each compute's data/ owner is its uid
}

// errNoUID means every uid of the range is taken.
var errNoUID = errors.New("no free uid left in compute.local.uid_range")

// dirMode is the mode of the folders the driver creates above computes.
func dirMode() os.FileMode {
	if os.Geteuid() == 0 {
		return 0o711
	}
	return 0o700
}

// uidOf returns the uid that owns the compute's datadir.
func uidOf(l layout) (int, error) { return ownerOf(l.data()) }

// ownerOf returns the uid that owns p.
func ownerOf(p string) (int, error) {
	info, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no owner information", p)
	}
	return int(st.Uid), nil
}

// allocate picks the lowest uid of the range that no compute folder under
// dir owns. The caller serializes allocations.
func (o owners) allocate() (int, error) {
	used := map[int]bool{}
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		if uid, err := uidOf(layout{root: filepath.Join(o.dir, e.Name())}); err == nil {
			used[uid] = true
		}
	}
	for uid := o.r.First; uid <= o.r.Last; uid++ {
		if !used[uid] {
			return uid, nil
		}
	}
	return 0, fmt.Errorf("%w (%d-%d)", errNoUID, o.r.First, o.r.Last)
}

// own gives the compute's mariadbd what it writes: the datadir, run/,
// tmp/, files/ and the error log. The folder itself, my.cnf and the admin
// password stay the daemon's: mariadbd reads my.cnf and never needs the
// password.
func own(l layout, uid int) error {
	for _, p := range []string{l.data(), l.run(), l.tmp(), l.files()} {
		if err := chownTree(p, uid); err != nil {
			return err
		}
	}
	for _, p := range []string{l.logFile(), l.logFile() + ".1", l.initSQL()} {
		if err := os.Lchown(p, uid, uid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func chownTree(root string, uid int) error {
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
}

// reachable checks that a process of another uid can walk down to dir:
// every folder above it must be searchable by others (o+x).
func reachable(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("computes run as their own unprivileged uid and cannot reach %s: %s is mode %v; "+
				"run chmod o+x %s, or choose a data_dir outside it (as root the default is /var/lib/serverlessd)",
				dir, p, info.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
