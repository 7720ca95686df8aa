//go:build linux

package proxy

import (
	"net"

	"github.com/serverlessd/serverlessd/compute"
)

// relayInLoop hands the session to an event loop and waits for it to end
// there (done), or to come back at a COM_CHANGE_USER. It is not done
// either when the loop cannot take the session; the goroutines take it.
func (ss *session) relayInLoop(lease *compute.Lease) (h handOff, done bool) {
	l, err := pickLoop()
	if err != nil {
		ss.log.Warn("relay event loop unavailable; using goroutines", "err", err)
		return h, false
	}
	c := &loopConn{loop: l, ss: ss, lease: lease, cfd: -1, sfd: -1, done: make(chan *loopConn, 1)}
	c.scan.handOff = ss.answersItself
	if !ss.enterLoop(c) {
		return h, false
	}
	if err := l.add(c); err != nil {
		ss.log.Warn("relay event loop refused the session; closing it", "err", err)
		c.closeFDs()
		ss.leaveLoop(nil)
		return h, true
	}
	<-c.done
	if c.handOff == nil {
		ss.leaveLoop(nil)
		ss.logClosed(c.in, c.out, c.clientErr, c.serverErr)
		return h, true
	}
	if !ss.leaveLoop(c.handOff) {
		return h, true // closed meanwhile
	}
	return handOff{st: c.scan.st, carry: c.carry, toServer: c.toServer, toClient: c.toClient, in: c.in, out: c.out}, false
}

// enterLoop swaps the session's sockets for duplicates the loop owns, and
// closes the originals so Go's poller stops watching them. It reports
// false, with the session as it was, if that fails.
func (ss *session) enterLoop(c *loopConn) bool {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	if ss.closed {
		return false
	}
	var err error
	if c.cfd, err = dupFD(ss.conn); err == nil {
		c.sfd, err = dupFD(ss.backend)
	}
	if err != nil {
		c.closeFDs()
		ss.log.Warn("relay event loop cannot take the session; using goroutines", "err", err)
		return false
	}
	ss.conn.Close()
	ss.backend.Close()
	ss.lc = c
	return true
}

// leaveLoop gives the session back its net.Conns (nil: the loop closed
// them). It reports false if the session was closed meanwhile.
func (ss *session) leaveLoop(conns []net.Conn) bool {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	ss.lc = nil
	if conns == nil {
		return false
	}
	ss.conn, ss.raw, ss.backend = conns[0], conns[0], conns[1]
	if ss.closed {
		conns[0].Close()
		conns[1].Close()
		return false
	}
	return true
}
