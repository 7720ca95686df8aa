//go:build !linux

package proxy

import "github.com/serverlessd/serverlessd/compute"

// The event loop is built on epoll, so it exists on Linux only. Elsewhere
// (macOS development builds) every session uses the goroutine relay.

// loopConn stands in for the event loop's session; it is never set.
type loopConn struct{}

func (*loopConn) shutdown() {}

// relayInLoop never takes the session: the goroutines do.
func (ss *session) relayInLoop(*compute.Lease) (handOff, bool) { return handOff{}, false }
