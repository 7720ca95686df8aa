//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/evloop"
	"github.com/serverlessd/serverlessd/proxy/wire"
	"golang.org/x/sys/unix"
)

// Pooled sessions in the event loops. A pooled session's loop is its
// compute pool's (Group.For), so one thread parks, reclaims and hands
// over the links of that pool's loop sessions, and a borrow never
// blocks: the session gets a link at once, or its command waits in the
// loop for a grant. What would block (logging in on a new slot,
// resetting a link left by a session in another state, waking the
// compute) goes back to the session's goroutine with the grant pending.
// The loop reads LAST_INSERT_ID() and sets it with queries of its own on
// the link, between the client's commands.

type poolLoop = *evloop.Loop

func (ps *pools) loopFor(computeID string) poolLoop {
	if ps.loops == nil {
		return nil
	}
	return ps.loops.For(computeID)
}

func (p *backendPool) doOnLoop(fn func()) bool { return p.loop != nil && p.loop.Do(fn) }

// toLoop gives the link's connection to the event loops: a descriptor of
// their own, the net.Conn closed so that Go's poller forgets it.
func (l *link) toLoop() error {
	if l.loopHeld {
		return nil
	}
	if l.br.Buffered() > 0 {
		return errors.New("backend bytes already buffered")
	}
	fd, err := dupFD(l.conn)
	if err != nil {
		return err
	}
	l.conn.Close()
	l.sock, l.loopHeld = fd, true
	return nil
}

// toConn makes the link a net.Conn again, for the goroutine engine. On
// failure the link's connection is closed.
func (l *link) toConn() error {
	if !l.loopHeld {
		return nil
	}
	c, err := fileConn(l.sock)
	l.closeSock()
	if err != nil {
		return err
	}
	l.conn = c
	l.br.Reset(c)
	l.bw.Reset(c)
	return nil
}

func (l *link) closeSock() {
	if l.loopHeld {
		unix.Close(l.sock)
		l.sock, l.loopHeld = -1, false
	}
}

// sockAlive is peerAlive for a loop's socket.
func sockAlive(fd int) bool {
	var b [1]byte
	for {
		_, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return err == unix.EAGAIN // bytes or an EOF: not silent
		}
	}
}

// releaseLoopLink takes the link from a session its loop relays, on that
// loop's thread: the socket leaves the loop's watch, and the session
// borrows again at its next command. False when the session is closed
// (its link goes with it) or no longer in the loop.
func (ss *session) releaseLoopLink() bool {
	ss.cmu.Lock()
	ls := ss.ls
	if ss.closed || ls == nil || ls.exited || ss.link == nil {
		ss.cmu.Unlock()
		return false
	}
	ls.unwatchLink()
	ss.link = nil
	ss.cmu.Unlock()
	ss.unready()
	return true
}

// unwatchLink takes the link's socket off the loop.
func (ls *loopSession) unwatchLink() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.sev != 0 {
		ls.loop.Watch(unix.EPOLL_CTL_DEL, ls.sfd, ls.id, 1, 0)
		ls.sev = 0
	}
	ls.sfd = -1
}

// attachPooled readies a pooled session's link for command c: its own,
// taken back from the pool, or one its pool has free now. false: the
// command waits in ls.in (for a grant, or the proxy's own query), or
// the session went back to its goroutine.
func (ls *loopSession) attachPooled(c *command) bool {
	ss := ls.ss
	if c.code == mysql.COM_QUIT || ss.link != nil || c.code == mysql.COM_STMT_CLOSE {
		ss.unpark()
		return true
	}
	res, ok := ss.warm()
	if !ok {
		return ls.goSlow(nil, grant{}) // asleep: the goroutine wakes it
	}
	for {
		p := ss.s.pools.get(res.ComputeID, poolSize(ss.poolSet, res.MaxClients))
		if p.loop != ls.loop {
			return ls.goSlow(nil, grant{}) // another compute: another loop
		}
		g, w, err := p.tryBorrowLoop(ss, ss.poolKey(), ls.grantFn(p))
		if errors.Is(err, errPoolDropped) {
			continue
		}
		if w != nil {
			ls.waiter, ls.waitPool, ls.waitFrom = w, p, time.Now()
			return false
		}
		return ls.adopt(p, g)
	}
}

// grantFn is where p sends the grant a waiting command gets; it runs
// under p's lock, so the grant is taken after.
func (ls *loopSession) grantFn(p *backendPool) func(grant) {
	return func(g grant) {
		take := func() { ls.granted(p, g) }
		if p.onLoopNow {
			ls.loop.Later(take) // this loop's own thread: no wake-up
		} else if !ls.loop.Do(take) {
			go p.returnGrant(g) // the loop is closed
		}
	}
}

// granted takes a grant for the command waiting in ls.in.
func (ls *loopSession) granted(p *backendPool, g grant) {
	if ls.exited || ls.waiter == nil {
		p.returnGrant(g)
		return
	}
	ls.waiter = nil
	if f := ls.ss.s.cfg.OnPoolWait; f != nil {
		f(p.computeID, time.Since(ls.waitFrom))
	}
	ls.run(func() error {
		if ls.adopt(p, g) {
			return ls.processIn()
		}
		return nil
	})
}

// adopt makes a granted link the session's, if that needs no blocking
// work; otherwise the goroutine takes over with the grant.
func (ls *loopSession) adopt(p *backendPool, g grant) bool {
	ss := ls.ss
	l := g.l
	if l == nil || g.from != nil || l.dead || l.key != ss.poolKey() || !loopUsable(l) {
		return ls.goSlow(p, g)
	}
	switch {
	case l.owner == ss && l.user == ss.user:
	case ss.loggedIn && !l.tainted && l.sig != "" && l.sig == ss.stateSig():
		l.newOwner(ss)
		ss.s.stats.inc(statPoolMatched)
	default:
		return ls.goSlow(p, g) // a reset: COM_CHANGE_USER's exchange
	}
	if !ss.setLink(l) { // closed meanwhile: setLink discarded the link
		ls.exit(loopExit{why: exitClosed, err: net.ErrClosed}, true)
		return false
	}
	ls.mu.Lock()
	ls.sfd = l.sock
	ls.mu.Unlock()
	if want := ss.st.lastInsertID; l.lastInsertID != want {
		ls.ownQuery(setInsertIDSQL(want), func(_ [][]*string, err error) {
			if err != nil {
				ls.loseLink(err)
				return
			}
			l.lastInsertID = want
		})
		return false
	}
	return true
}

// loopUsable readies a link for the loop: its socket the loop's, and
// still connected if it sat unused for a while.
func loopUsable(l *link) bool {
	if err := l.toLoop(); err != nil {
		l.dead = true
		return false
	}
	if time.Since(l.lastUsed) >= idleProbe && !sockAlive(l.sock) {
		l.dead = true
		return false
	}
	return true
}

// goSlow hands the session to its goroutine for the command in ls.in,
// with the grant p gave it (if any) to borrow.
func (ls *loopSession) goSlow(p *backendPool, g grant) bool {
	if p != nil {
		ls.ss.pending = &pendingGrant{p: p, g: g}
	}
	ls.exit(loopExit{why: exitSlow}, false)
	return false
}

// settle parks a pooled session's link once a command is over and
// nothing pins it, reading LAST_INSERT_ID() first so that the link can
// go to another session. The client has the answer already.
func (ls *loopSession) settle() {
	ss := ls.ss
	l := ss.link
	if ls.exited || !ss.pooled() || l == nil || l.pool == nil || ss.pinned != "" || ls.own != nil {
		return
	}
	if !ss.st.insertDirty {
		ls.park()
		return
	}
	ls.ownQuery(readInsertIDSQL, func(rows [][]*string, err error) {
		v, err := insertIDFrom(rows, err)
		ss.st.lastInsertID, ss.st.insertDirty = v, false
		if err != nil {
			ls.loseLink(err)
			return
		}
		ls.park()
	})
}

// park leaves the link parked with the session, or gives it to a waiter.
func (ls *loopSession) park() {
	ss := ls.ss
	l := ss.link
	ss.markBoundary(l)
	l.pool.parkLoop(ss, l, ss.releaseLoopLink)
}

// loseLink drops a link that failed the proxy's own query; the session
// borrows again at its next command.
func (ls *loopSession) loseLink(err error) {
	ss := ls.ss
	ss.log.Info("backend connection lost after a command", "project", ss.project, "err", err)
	l := ss.link
	if l == nil {
		return
	}
	if ss.releaseLoopLink() {
		ss.dropTaken(l)
	} else {
		l.dead = true
	}
}

// stopWaiting gives up the session's wait for a link; a grant already
// on its way finds the session gone and goes back.
func (ls *loopSession) stopWaiting() {
	if ls.waiter != nil {
		ls.waitPool.cancelWait(ls.waiter)
		ls.waiter = nil
	}
}

// tickPooled ends a wait for a link past the project's pool_wait_timeout
// with the pool's refusal, and a query of the proxy's own past its
// timeout with the link.
func (ls *loopSession) tickPooled(now time.Time) error {
	ss := ls.ss
	if q := ls.own; q != nil && now.Sub(q.since) >= ownQueryTimeout {
		ls.ownDone(nil, fmt.Errorf("no answer in %s", ownQueryTimeout))
		return ls.resume()
	}
	if ls.waiter == nil || now.Sub(ls.waitFrom) < ss.poolWait() || !ls.waitPool.cancelWait(ls.waiter) {
		return nil
	}
	p := ls.waitPool
	ls.waiter = nil
	if f := ss.s.cfg.OnPoolWait; f != nil {
		f(p.computeID, now.Sub(ls.waitFrom))
	}
	ss.s.stats.reattachFailed("pool_timeout")
	r := ss.poolRefusal(p, errPoolTimeout).(*refusal)
	ss.log.Info("attaching the session failed", "project", ss.project, "reason", r.kind.String(), "err", r.cause)
	n := int(ls.in[0]) | int(ls.in[1])<<8 | int(ls.in[2])<<16
	ls.consume(n) // the command that waited: answered with the error
	buf, _ := wire.AppendPacket(nil, 1, wire.ErrPayload(r.reply))
	ss.bytesOut += int64(len(buf))
	if err := sendTo(ls.cfd, buf, &ls.toClient); err != nil {
		return err
	}
	return ls.resume()
}

// ownQuery is a query of the proxy's own on the session's link, between
// the client's commands, whose answer the loop reads.
type ownQuery struct {
	buf   []byte
	since time.Time
	then  func(rows [][]*string, err error)
}

// ownQuery sends sql on the link; then gets the answer, and the session
// goes on (resume) after it.
func (ls *loopSession) ownQuery(sql string, then func([][]*string, error)) {
	ls.own = &ownQuery{since: time.Now(), then: then}
	pkt, _ := wire.AppendPacket(nil, 0, append([]byte{mysql.COM_QUERY}, sql...))
	if err := sendTo(ls.sfd, pkt, &ls.toServer); err != nil {
		ls.loop.Later(func() {
			if !ls.exited && ls.own != nil {
				ls.run(func() error {
					ls.ownDone(nil, err)
					return ls.resume()
				})
			}
		})
	}
}

// readOwn reads the answer to the proxy's own query.
func (ls *loopSession) readOwn() error {
	n, err := readFD(ls.sfd, ls.loop.Scratch)
	if err == unix.EAGAIN {
		return nil
	}
	var rows [][]*string
	if err == nil {
		q := ls.own
		q.buf = append(q.buf, ls.loop.Scratch[:n]...)
		if rows, err = parseOwn(q.buf, ls.ss.link.caps); errors.Is(err, errShortAnswer) {
			return nil
		}
	}
	ls.ownDone(rows, err)
	return ls.resume()
}

func (ls *loopSession) ownDone(rows [][]*string, err error) {
	q := ls.own
	ls.own = nil
	q.then(rows, err)
}

// errShortAnswer: the answer read so far is not whole yet.
var errShortAnswer = errors.New("answer not complete yet")

// parseOwn reads a whole answer to a text query from buf.
func parseOwn(buf []byte, caps uint32) ([][]*string, error) {
	next := func() ([]byte, error) {
		if len(buf) < 4 {
			return nil, errShortAnswer
		}
		n := int(buf[0]) | int(buf[1])<<8 | int(buf[2])<<16
		if len(buf) < 4+n {
			return nil, errShortAnswer
		}
		p := buf[4 : 4+n]
		buf = buf[4+n:]
		if n == 0 {
			return nil, errors.New("empty packet from the backend")
		}
		return p, nil
	}
	rows, err := readResult(next, caps)
	if err == nil && len(buf) > 0 {
		err = &protocolError{"bytes after the end of a response"}
	}
	return rows, err
}
