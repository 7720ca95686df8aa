//go:build !linux

package pgtest

import "syscall"

// dieWithParent: only Linux has a parent-death signal; elsewhere a killed
// test binary leaves postgres to its own shutdown.
func dieWithParent(*syscall.SysProcAttr) {}
