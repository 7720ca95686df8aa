package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// findMariadbd resolves the server binary: the configured path, else PATH,
// else Debian's /usr/sbin (not in a normal user's PATH).
func findMariadbd(configured string) (string, error) {
	const hint = "install mariadb-server or set compute.local.mariadbd"
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("mariadbd not found at %s: %w (%s)", configured, err, hint)
		}
		return filepath.Abs(p)
	}
	for _, name := range []string{"mariadbd", "/usr/sbin/mariadbd"} {
		if p, err := exec.LookPath(name); err == nil {
			return filepath.Abs(p)
		}
	}
	return "", fmt.Errorf("mariadbd not found: %s", hint)
}

// findInstallDB resolves mariadb-install-db, preferring the one next to
// mariadbd so that both come from the same MariaDB build.
func findInstallDB(configured, mariadbd string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("mariadb-install-db not found at %s: %w", configured, err)
		}
		return filepath.Abs(p)
	}
	candidates := []string{
		filepath.Join(filepath.Dir(mariadbd), "mariadb-install-db"),
		filepath.Join(filepath.Dir(filepath.Dir(mariadbd)), "bin", "mariadb-install-db"),
		"mariadb-install-db",
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return filepath.Abs(p)
		}
	}
	return "", fmt.Errorf("mariadb-install-db not found next to %s or in PATH: install mariadb-server", mariadbd)
}

// mariadbdVersion parses "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for ...".
func mariadbdVersion(mariadbd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mariadbd, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", mariadbd, err)
	}
	fields := strings.Fields(string(out))
	for i, f := range fields {
		if f == "Ver" && i+1 < len(fields) {
			return fields[i+1], nil
		}
	}
	return "", fmt.Errorf("%s --version: no version in %q", mariadbd, strings.TrimSpace(string(out)))
}

// processUser is the name to pass as mariadbd --user. mariadbd refuses to
// run as root unless told --user=root explicitly; as another user, naming
// that same user is accepted silently. Empty when the uid has no name.
func processUser() string {
	uid := os.Geteuid()
	if uid == 0 {
		return "root"
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return ""
}
