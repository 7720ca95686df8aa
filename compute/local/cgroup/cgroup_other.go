//go:build !linux

package cgroup

import (
	"errors"
	"runtime"
)

// errUnsupported is returned by Open where there are no cgroups.
var errUnsupported = errors.New("cgroup: control groups exist only on Linux, not on " + runtime.GOOS)

// Group is one cgroup for one compute. Outside Linux none can be opened.
type Group struct{ path string }

// Available reports whether this process can create cgroups here; outside
// Linux never.
func Available() (ok bool, reason string) {
	return false, errUnsupported.Error()
}

// Open fails outside Linux.
func Open(path string, lim Limits) (*Group, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

// Add fails outside Linux.
func (g *Group) Add(pid int) error { return errUnsupported }

// Stats fails outside Linux.
func (g *Group) Stats() (Stats, error) { return Stats{}, errUnsupported }

// Delete has nothing to remove outside Linux.
func (g *Group) Delete() error { return nil }
