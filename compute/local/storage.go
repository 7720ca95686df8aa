package local

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/serverlessd/serverlessd/store"
)

// systemSchemas are the datadir folders of MariaDB's own schemas: about 250
// small files (sys alone has a hundred views) that tenants cannot write
// (mysql and sys are out of their reach; performance_schema is off).
// StorageBytes measures them once per compute and daemon, which takes its
// cost per compute from ~250 stat calls to a few dozen.
var systemSchemas = map[string]bool{"mysql": true, "sys": true, "performance_schema": true}

// growable are the files of mysql/ that a tenant's SQL makes grow without
// writing the schema itself: its routines (proc), events, and the
// statistics of its tables. They are measured every time.
var growable = map[string]bool{}

func init() {
	for _, t := range []string{"proc", "event", "table_stats", "column_stats", "index_stats"} {
		growable[t+".MAD"], growable[t+".MAI"] = true, true
	}
	growable["innodb_table_stats.ibd"], growable["innodb_index_stats.ibd"] = true, true
}

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
		total += fileSize(e)
		return nil
	})
	return total, err
}

func fileSize(e fs.DirEntry) int64 {
	if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
		return info.Size()
	}
	return 0
}

// systemSchemaSize returns the size of a system schema folder: the cached
// size of its fixed files, measured on first use, plus its growable ones
// (mysql/ only) measured now.
func (d *Driver) systemSchemaSize(id, dir string) int64 {
	key := id + "/" + filepath.Base(dir)
	d.mu.Lock()
	fixed, ok := d.sysSizes[key]
	d.mu.Unlock()
	if !ok {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !growable[e.Name()] {
				fixed += fileSize(e)
			}
		}
		d.mu.Lock()
		d.sysSizes[key] = fixed
		d.mu.Unlock()
	}
	if filepath.Base(dir) != "mysql" {
		return fixed
	}
	grown := fixed
	for name := range growable {
		if info, err := os.Lstat(filepath.Join(dir, name)); err == nil && info.Mode().IsRegular() {
			grown += info.Size()
		}
	}
	return grown
}
