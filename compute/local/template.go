package local

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/compute/mariadb"
)

// templateRecipe names how templates are built. Bump it whenever
// accountsSQL or the install-db options change, so no compute is copied from
// a template built the old way.
const templateRecipe = "t4"

// accountsSQL runs once per template, in mariadb-install-db's bootstrap,
// after MariaDB's own system tables. It leaves exactly two accounts:
// mariadb.sys (locked; the definer of the sys schema and of mysql.user) and
// the daemon's admin, whose password is a placeholder no password matches
// until the compute's first start sets its own. No root, no anonymous user,
// no test db: a user's 'name'@'%' is then the only account that matches
// them over the socket (a more specific 'name'@'localhost', or the
// anonymous user at localhost, would win otherwise).
var accountsSQL = strings.Join([]string{
	"FLUSH PRIVILEGES;",
	"DELETE FROM mysql.global_priv WHERE NOT (User = 'mariadb.sys' AND Host = 'localhost');",
	"DELETE FROM mysql.db WHERE NOT (User = 'mariadb.sys' AND Host = 'localhost');",
	"DELETE FROM mysql.tables_priv WHERE NOT (User = 'mariadb.sys' AND Host = 'localhost');",
	"DELETE FROM mysql.columns_priv WHERE NOT (User = 'mariadb.sys' AND Host = 'localhost');",
	"DELETE FROM mysql.procs_priv WHERE NOT (User = 'mariadb.sys' AND Host = 'localhost');",
	"DELETE FROM mysql.proxies_priv;",
	"DELETE FROM mysql.roles_mapping;",
	"FLUSH PRIVILEGES;",
	"CREATE USER '" + AdminUser + "'@'localhost' IDENTIFIED VIA mysql_native_password USING 'invalid';",
	"GRANT ALL PRIVILEGES ON *.* TO '" + AdminUser + "'@'localhost' WITH GRANT OPTION;",
	"DROP DATABASE IF EXISTS test;",
	mariadb.SchemaGuardSQL + ";",
	"",
}, "\n")

// templateData returns the template datadir for this mariadbd version,
// building it on first use. The build happens in a temporary folder that is
// renamed into place, so a crash never leaves a half-built template.
func (d *Driver) templateData(ctx context.Context) (string, error) {
	d.templateMu.Lock()
	defer d.templateMu.Unlock()
	final := filepath.Join(d.opts.TemplatesDir, d.version+"."+templateRecipe)
	data := filepath.Join(final, "data")
	if _, err := os.Stat(data); err == nil {
		return data, nil
	}
	if err := os.MkdirAll(d.opts.TemplatesDir, 0o700); err != nil {
		return "", err
	}
	t0 := time.Now()
	tmp, err := os.MkdirTemp(d.opts.TemplatesDir, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := d.installDatadir(ctx, filepath.Join(tmp, "data")); err != nil {
		return "", fmt.Errorf("build template datadir: %w", err)
	}
	if err := sparsifyTree(tmp); err != nil {
		return "", err
	}
	if err := syncTree(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(data); statErr == nil {
			return data, nil // another process built it first
		}
		return "", err
	}
	_ = syncDir(d.opts.TemplatesDir)
	d.log.Info("template datadir created", "version", d.version, "path", final, "duration", time.Since(t0))
	return data, nil
}

// installDatadir initialises a datadir with mariadb-install-db and the
// daemon's accounts. It makes templates, and is the slow per-compute
// alternative the benchmarks compare template copies against.
func (d *Driver) installDatadir(ctx context.Context, datadir string) error {
	sqlFile := datadir + ".accounts.sql"
	if err := os.WriteFile(sqlFile, []byte(accountsSQL), 0o600); err != nil {
		return err
	}
	defer os.Remove(sqlFile)
	// A private tmpdir: bootstraps running at once (several daemons or
	// test processes) otherwise collide on temporary table names in /tmp.
	tmpdir := datadir + ".tmp"
	if err := os.MkdirAll(tmpdir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(tmpdir)
	args := []string{
		"--no-defaults", // --no-defaults must come first
		"--datadir=" + datadir,
		"--tmpdir=" + tmpdir,
		"--skip-test-db",
		"--skip-name-resolve",
		"--auth-root-authentication-method=socket",
		"--extra-file=" + sqlFile,
		// Passed through to the bootstrap mariadbd: a small redo log keeps
		// the template, and so every copy, small.
		fmt.Sprintf("--innodb-log-file-size=%d", templateLogFileSize),
	}
	if d.user != "" {
		args = append(args, "--user="+d.user)
	}
	out, err := exec.CommandContext(ctx, d.installDB, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", d.installDB, err, errorLines(out))
	}
	// The bootstrap's buffer pool dump is of no use to a compute.
	_ = os.Remove(filepath.Join(datadir, "ib_buffer_pool"))
	return nil
}

// lastLines returns the last n lines of b, trimmed, for error messages.
// errorLines keeps the lines of mariadb-install-db's output that say what
// went wrong, not its generic advice.
func errorLines(b []byte) string {
	var keep [][]byte
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if bytes.Contains(l, []byte("ERROR")) || bytes.Contains(l, []byte("Warning")) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 || len(keep) > 20 {
		return lastLines(b, 20)
	}
	return string(bytes.Join(keep, []byte("; ")))
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
