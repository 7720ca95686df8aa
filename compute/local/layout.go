package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/serverlessd/serverlessd/compute"
)

// layout names the files of one compute's folder.
type layout struct{ root string }

func (l layout) data() string     { return filepath.Join(l.root, "data") }
func (l layout) cnf() string      { return filepath.Join(l.root, "my.cnf") }
func (l layout) logFile() string  { return filepath.Join(l.root, "mariadbd.log") }
func (l layout) password() string { return filepath.Join(l.root, "admin.password") }
func (l layout) initSQL() string  { return filepath.Join(l.root, "init.sql") }
func (l layout) run() string      { return filepath.Join(l.root, "run") }
func (l layout) tmp() string      { return filepath.Join(l.root, "tmp") }
func (l layout) files() string    { return filepath.Join(l.root, "files") }
func (l layout) socket() string   { return filepath.Join(l.root, "run", "mysqld.sock") }
func (l layout) pidFile() string  { return filepath.Join(l.root, "run", "mariadbd.pid") }
func (l layout) address() string  { return "unix:" + l.socket() }

// provisioned reports whether the compute's folder is complete. Provision
// creates it with one rename, so a folder that exists is whole.
func (l layout) provisioned() bool {
	_, err := os.Stat(l.data())
	return err == nil
}

// admin reads the compute's admin credentials.
func (l layout) admin() (compute.Credentials, error) {
	b, err := os.ReadFile(l.password())
	if errors.Is(err, fs.ErrNotExist) {
		return compute.Credentials{}, fmt.Errorf("compute folder %s: %w", l.root, compute.ErrNotProvisioned)
	}
	if err != nil {
		return compute.Credentials{}, err
	}
	return compute.Credentials{User: AdminUser, Password: strings.TrimSpace(string(b))}, nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so a crash never leaves a half-written my.cnf or pid file.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
