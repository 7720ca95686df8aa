package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// DataDir is the compute's datadir: what a backup snapshot holds. The rest
// of its folder (my.cnf, the admin secret, logs) is rebuilt by the driver.
func (d *Driver) DataDir(c *store.Compute) string { return filepath.Join(d.opts.Dir, c.ID, "data") }

// Staging returns a new empty folder on the computes' filesystem, for a
// datadir to be restored into and then moved in by ReplaceData or
// ProvisionFrom with a rename. A daemon that dies meanwhile leaves it to
// New, which removes it.
func (d *Driver) Staging(c *store.Compute) (string, error) {
	dir, err := os.MkdirTemp(d.opts.Dir, provisionPrefix+c.ID+"-data-")
	if err != nil {
		return "", fmt.Errorf("staging folder for compute %s: %w", c.ID, err)
	}
	return dir, nil
}

// ReplaceData swaps a stopped compute's datadir for src, a folder from
// Staging, owned from then on by the compute's user. The old datadir is
// removed: the caller has kept what it needs of it.
func (d *Driver) ReplaceData(ctx context.Context, c *store.Compute, src string) error {
	l, unlock, err := d.lockStopped(ctx, c, "replace the datadir of")
	if err != nil {
		return err
	}
	defer unlock()
	uid, err := d.computeUID(l)
	if errors.Is(err, fs.ErrNotExist) {
		uid, err = ownerOf(l.run()) // the datadir is lost; run/ is the compute's too
	}
	if err != nil {
		return fmt.Errorf("replace the datadir of compute %s: %w", c.ID, err)
	}
	if uid >= 0 {
		if err := chownTree(src, uid); err != nil {
			return fmt.Errorf("replace the datadir of compute %s: %w", c.ID, err)
		}
	}
	old := l.data() + ".replaced-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(l.data(), old); errors.Is(err, fs.ErrNotExist) {
		old = "" // lost: nothing to set aside
	} else if err != nil {
		return fmt.Errorf("replace the datadir of compute %s: %w", c.ID, err)
	}
	if err := os.Rename(src, l.data()); err != nil {
		return fmt.Errorf("replace the datadir of compute %s: %w (the old one is at %s)", c.ID, err, old)
	}
	d.dropStaging(src)
	if err := syncDir(l.root); err != nil {
		return err
	}
	d.mu.Lock()
	for name := range systemSchemas {
		delete(d.sysSizes, c.ID+"/"+name)
	}
	d.mu.Unlock()
	if old == "" {
		return nil
	}
	return os.RemoveAll(old)
}

// ProvisionFrom provisions a new compute whose datadir is src, a folder
// from Staging (a branch of another compute's data).
func (d *Driver) ProvisionFrom(ctx context.Context, c *store.Compute, src string) error {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return err
	}
	defer unlock()
	if l.provisioned() {
		return fmt.Errorf("provision compute %s from a copy: it is provisioned already", c.ID)
	}
	t0 := time.Now()
	if err := d.assemble(l, func(tmp layout) error { return os.Rename(src, tmp.data()) }); err != nil {
		return fmt.Errorf("provision compute %s from a copy: %w", c.ID, err)
	}
	d.dropStaging(src)
	d.log.Info("compute provisioned from a copy", "compute", c.ID, "path", l.root, "duration", time.Since(t0))
	return nil
}

// dropStaging removes the Staging folder that held src, once src was moved
// out of it and if nothing else is left in it.
func (d *Driver) dropStaging(src string) {
	parent := filepath.Dir(src)
	if filepath.Dir(parent) == filepath.Clean(d.opts.Dir) && strings.HasPrefix(filepath.Base(parent), provisionPrefix) {
		_ = os.Remove(parent) // fails, harmlessly, while it holds anything
	}
}

// CloneData copies a stopped compute's datadir into a new Staging folder,
// with reflinks where the filesystem has them (constant time), and returns
// the copy's path, for ProvisionFrom (a branch).
func (d *Driver) CloneData(ctx context.Context, c *store.Compute) (string, error) {
	l, unlock, err := d.lockStopped(ctx, c, "copy the datadir of")
	if err != nil {
		return "", err
	}
	defer unlock()
	dir, err := d.Staging(c)
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	dst := filepath.Join(dir, "data")
	if err := copyTree(dst, l.data()); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("copy the datadir of compute %s: %w", c.ID, err)
	}
	d.log.Info("datadir copied", "compute", c.ID, "duration", time.Since(t0))
	return dst, nil
}

// lockStopped takes the compute's lock for an action on its files, which
// needs it stopped; the error names the action.
func (d *Driver) lockStopped(ctx context.Context, c *store.Compute, action string) (layout, func(), error) {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return l, nil, err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return l, nil, err
	}
	d.mu.Lock()
	_, running := d.procs[c.ID]
	d.mu.Unlock()
	if running {
		unlock()
		return l, nil, fmt.Errorf("%s compute %s: it is running; suspend it first", action, c.ID)
	}
	return l, unlock, nil
}
