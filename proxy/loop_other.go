//go:build !linux

package proxy

// The event loops are built on epoll, so they exist on Linux only.
// Elsewhere (macOS development builds) every session uses the goroutine
// engine.

type loopGroup struct{}

func newLoopGroup() (*loopGroup, error) { return nil, nil }

func (*loopGroup) Close() {}

type loopSession struct{}

func (*loopSession) shutdown() {}

func (*loopSession) askDetach(*detachReq) bool { return false }

func (ss *session) mayLoop() bool { return false }

func (ss *session) relayInLoop() (bool, error) { return true, nil }

// poolLoop is the event loop of a backend pool: none here.
type poolLoop = *struct{}

func (ps *pools) loopFor(string) poolLoop { return nil }

func (p *backendPool) doOnLoop(func()) bool { return false }

func (ss *session) releaseLoopLink() bool { return false }

// toConn has nothing to do: no event loop ever holds a link here.
func (l *link) toConn() error { return nil }

func (l *link) closeSock() {}
