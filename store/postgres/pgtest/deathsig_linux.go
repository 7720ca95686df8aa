//go:build linux

package pgtest

import "syscall"

// dieWithParent makes postgres die with the test binary, even one killed by
// a timeout. SIGQUIT is PostgreSQL's immediate shutdown: it takes its
// backends with it.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGQUIT }
