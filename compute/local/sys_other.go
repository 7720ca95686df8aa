//go:build !linux

package local

import (
	"errors"
	"os"
)

// openPidfd: pidfds are Linux's; elsewhere exits are polled.
func openPidfd(int) *os.File { return nil }

// reserve: no fallocate outside Linux; the copy writes every data region.
func reserve(*os.File, int64) error { return nil }

// allowedCPUs: no affinity outside Linux; computes run anywhere.
func allowedCPUs() []int { return nil }

// pinCPUs: no affinity outside Linux.
func pinCPUs(int, []int) error { return nil }

// cloneFile: no reflinks outside Linux; the caller copies.
func cloneFile(_, _ *os.File) error { return errors.ErrUnsupported }
