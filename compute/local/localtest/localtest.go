// Package localtest helps tests that run the local driver.
package localtest

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns a new temporary folder that a compute's mariadbd, running as
// its own unprivileged uid when the tests run as root, can walk through:
// testing's TempDir and its parent are private (mode 0700). The folder
// itself can be searched, not listed, by others.
func Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
