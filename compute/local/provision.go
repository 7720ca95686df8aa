package local

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/store"
)

// Folders under Dir that are not computes: work in progress, removed by New.
const (
	provisionPrefix = ".provision-"
	destroyPrefix   = ".destroy-"
)

// Provision creates the compute's folder from the template datadir, with
// its own admin password. It is idempotent. The folder is assembled under a
// temporary name and renamed into place, so it either exists whole or not.
func (d *Driver) Provision(ctx context.Context, c *store.Compute) error {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return err
	}
	if _, err := memoryOf(c.Spec.Resources.Memory); err != nil {
		return err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return err
	}
	defer unlock()
	if l.provisioned() {
		return nil
	}
	tpl, err := d.templateData(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := d.assemble(l, func(tmp layout) error { return copyTree(tmp.data(), tpl) }); err != nil {
		return fmt.Errorf("provision compute %s: %w", c.ID, err)
	}
	d.log.Info("compute provisioned", "compute", c.ID, "path", l.root, "duration", time.Since(t0))
	return nil
}

// assemble builds a compute folder under a temporary name with fill (which
// creates the datadir), adds the admin secret and the private folders, and
// renames it to l.root.
func (d *Driver) assemble(l layout, fill func(tmp layout) error) error {
	dir, err := os.MkdirTemp(d.opts.Dir, provisionPrefix+filepath.Base(l.root)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir) // a no-op once renamed
	tmp := layout{root: dir}
	if err := fill(tmp); err != nil {
		return err
	}
	for _, sub := range []string{tmp.run(), tmp.tmp(), tmp.files()} {
		if err := os.Mkdir(sub, 0o700); err != nil {
			return err
		}
	}
	if err := writeAdminSecret(tmp); err != nil {
		return err
	}
	// The uid is allocated and the folder renamed into place under one
	// lock: the allocation scans the placed folders' owners.
	d.uidMu.Lock()
	defer d.uidMu.Unlock()
	if err := d.ownNew(tmp); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Rename(dir, l.root); err != nil {
		return err
	}
	return syncDir(d.opts.Dir)
}

// ownNew gives a new compute folder its own uid. The caller holds uidMu.
func (d *Driver) ownNew(l layout) error {
	if d.owners.r == nil {
		return nil
	}
	uid, err := d.owners.allocate()
	if err != nil {
		return err
	}
	if err := os.Chmod(l.root, 0o711); err != nil {
		return err
	}
	return own(l, uid)
}

// computeUID returns the uid the compute's mariadbd runs as, or -1 when
// the daemon is not root. A compute provisioned before per-compute uids
// (its datadir is root's) gets one now.
func (d *Driver) computeUID(l layout) (int, error) {
	if d.owners.r == nil {
		return -1, nil
	}
	uid, err := uidOf(l)
	if err != nil || uid != 0 {
		return uid, err
	}
	d.uidMu.Lock()
	defer d.uidMu.Unlock()
	if err := d.ownNew(l); err != nil {
		return 0, fmt.Errorf("give compute folder %s its own uid: %w", l.root, err)
	}
	return uidOf(l)
}

// writeAdminSecret generates the compute's admin password. mariadbd never
// reads it: the init file of every start holds only its hash.
func writeAdminSecret(l layout) error {
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	password := base64.RawURLEncoding.EncodeToString(raw)
	return writeSynced(l.password(), []byte(password+"\n"))
}

// writeInitFile writes the init file that re-creates the daemon's account
// at every start (mariadb.InitSQL): a tenant can lock that account while
// the compute runs, never for longer.
func writeInitFile(l layout) error {
	creds, err := l.admin()
	if err != nil {
		return err
	}
	return writeConfig(l.initSQL(), mariadb.InitSQL("localhost", mariadb.HashPassword(creds.Password)), 0o600)
}

// writeSynced writes a new private file and fsyncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// Destroy stops the compute and removes its folder. The folder is first
// renamed aside, so it disappears at once even if the removal is cut short.
func (d *Driver) Destroy(ctx context.Context, c *store.Compute) error {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.stopLocked(ctx, c.ID, l); err != nil {
		return err
	}
	d.mu.Lock()
	for name := range systemSchemas {
		delete(d.sysSizes, c.ID+"/"+name)
	}
	d.mu.Unlock()
	if _, err := os.Stat(l.root); os.IsNotExist(err) {
		return nil
	}
	aside, err := os.MkdirTemp(d.opts.Dir, destroyPrefix+c.ID+"-")
	if err != nil {
		return err
	}
	if err := os.Rename(l.root, filepath.Join(aside, "compute")); err != nil {
		os.Remove(aside)
		return fmt.Errorf("destroy compute %s: %w", c.ID, err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return fmt.Errorf("destroy compute %s: %w", c.ID, err)
	}
	d.log.Info("compute destroyed", "compute", c.ID)
	return nil
}
