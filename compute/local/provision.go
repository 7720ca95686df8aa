package local

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Rename(dir, l.root); err != nil {
		return err
	}
	return syncDir(d.opts.Dir)
}

// writeAdminSecret generates the compute's admin password and the init
// file that applies it at the first start. Only the hash goes into init.sql.
//
// Why at the first start and not at provisioning: setting it at
// provisioning means a full bootstrap run of mariadbd on the copy (a start
// and a stop, ~0.3 s), while an init-file statement costs nothing measurable
// on a start that happens anyway. Why only once, not at every start: it
// would rewrite the grant tables on every resume for nothing.
func writeAdminSecret(l layout) error {
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	password := base64.RawURLEncoding.EncodeToString(raw)
	if err := writeSynced(l.password(), []byte(password+"\n")); err != nil {
		return err
	}
	stmt := fmt.Sprintf("ALTER USER '%s'@'localhost' IDENTIFIED VIA mysql_native_password USING '%s';\n",
		AdminUser, nativeHash(password))
	return writeSynced(l.initSQL(), []byte(stmt))
}

// nativeHash is mysql_native_password's "*" + HEX(SHA1(SHA1(password))).
func nativeHash(password string) string {
	s1 := sha1.Sum([]byte(password))
	s2 := sha1.Sum(s1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(s2[:]))
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
