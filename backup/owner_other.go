//go:build !unix

package backup

import (
	"io/fs"
	"os/exec"
)

// owner: no uids here.
func owner(fs.FileInfo) (int, int) { return -1, -1 }

// chown: no uids here.
func chown(string, int, int) error { return nil }

// runAsOwner: no uids here; cmd runs as the daemon.
func runAsOwner(*exec.Cmd, string, string) error { return nil }
