package local

import (
	"context"
	"io/fs"
	"path/filepath"

	"github.com/serverlessd/serverlessd/store"
)

// StorageBytes is the size of the compute's folder: its datadir, config and
// logs. Every file is measured each time, the system schemas included: a
// tenant's routines and events are stored in mysql/ (proc, event), so a
// cached size would let them grow past the storage limit unseen.
func (d *Driver) StorageBytes(ctx context.Context, c *store.Compute) (int64, error) {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return 0, err
	}
	var total int64
	err = filepath.WalkDir(l.root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed during the walk is not an error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if info, ierr := e.Info(); ierr == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total, err
}
