package local

import (
	"context"
	"io/fs"
	"path/filepath"

	"github.com/serverlessd/serverlessd/store"
)

// systemSchemas are the datadir folders of MariaDB's own schemas: about 150
// small files that barely change, and that tenants cannot write (mysql is
// read-only to them; performance_schema is off). StorageBytes measures them
// once per compute and daemon, which takes its cost per scheduler tick from
// ~200 stat calls to a few dozen. sys is not among them: it is read-only to
// tenants too, but small enough to measure every time.
var systemSchemas = map[string]bool{"mysql": true, "performance_schema": true}

// StorageBytes is the size of the compute's folder: its datadir, config and
// logs.
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
		if e.IsDir() && filepath.Dir(path) == l.data() && systemSchemas[e.Name()] {
			total += d.systemSchemaSize(c.ID, path)
			return filepath.SkipDir
		}
		if info, ierr := e.Info(); ierr == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// systemSchemaSize returns the cached size of a system schema folder,
// measuring it on first use.
func (d *Driver) systemSchemaSize(id, dir string) int64 {
	key := id + "/" + filepath.Base(dir)
	d.mu.Lock()
	n, ok := d.sysSizes[key]
	d.mu.Unlock()
	if ok {
		return n
	}
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil {
			if info, ierr := e.Info(); ierr == nil && info.Mode().IsRegular() {
				n += info.Size()
			}
		}
		return nil
	})
	d.mu.Lock()
	d.sysSizes[key] = n
	d.mu.Unlock()
	return n
}
