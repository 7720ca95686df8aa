//go:build linux

package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/evloop"
	"golang.org/x/sys/unix"
)

// The event-loop engine relays plain sessions between the commands that
// need the daemon's own work: it reads a command when the client's socket
// is ready, plans it (session.plan), writes it to the backend, and feeds
// the backend's bytes to the session's tracker as they come, writing
// what the tracker emits to the client. The session's goroutine waits
// meanwhile, holding bmu; whatever the loop must not do (block: a wake, a
// login, a query of its own, an answer to a Detach) it hands back to that
// goroutine, which does it with the goroutine engine and then gives the
// session back to a loop.

type loopGroup = evloop.Group

func newLoopGroup() (*loopGroup, error) { return evloop.NewGroup() }

// exitReason is why a loop handed a session back.
type exitReason int

const (
	exitSlow        exitReason = iota // a command plan refused is in carry
	exitAfter                         // a finished command needs blocking after-work
	exitMidResponse                   // the backend waits for the client mid-response
	exitBackendLost                   // the backend failed during a command
	exitBackendIdle                   // the backend closed or spoke between commands
	exitDetach                        // Detach asked for the session
	exitPinTimeout                    // idle and pinned past the pinned idle timeout
	exitQuit                          // COM_QUIT was forwarded
	exitClosed                        // the client left, or the session was shut down
	exitIdle                          // a pooled session idle past idleAfter
)

// loopExit is what the loop hands back with a session.
type loopExit struct {
	why      exitReason
	err      error
	carry    []byte // client bytes not handled yet
	c        *command
	t        *tracker
	toClient []byte // bytes the sockets had not taken yet
	toServer []byte
	client   net.Conn // the client's socket again, unless closed
	req      *detachReq
}

// loopSession is a session while a loop relays it. Only the loop's
// thread touches it, but for shutdown.
type loopSession struct {
	ss   *session
	loop *evloop.Loop
	id   uint64
	back chan loopExit

	mu  sync.Mutex // guards cfd and sfd against shutdown racing exit
	cfd int
	sfd int    // the socket of the session's link (link.sock); -1 without one
	cev uint32 // the events each is registered for
	sev uint32

	in        []byte // client bytes not handled yet
	inBuf     []byte // the buffer in starts in, kept across commands
	toServer  []byte
	toClient  []byte
	c         *command // the command whose response is awaited
	t         *tracker
	segs      [][]byte
	out       []byte // a small response, gathered for one write
	frame     []byte // the command being sent
	cmd       command
	track     tracker
	idleSince time.Time
	req       *detachReq
	exited    bool

	// Of a pooled session: the wait for a link of the command in in,
	// and the proxy's own query in flight on its link.
	waiter   *poolWaiter
	waitPool *backendPool
	waitFrom time.Time
	own      *ownQuery
}

// maxLoopIn bounds the client bytes a loop holds while a response is
// awaited (pipelined commands).
const maxLoopIn = 4 + maxWholeCommand

// mayLoop reports whether the session may use the event loops at all.
// It reads only what the session's own goroutine writes.
func (ss *session) mayLoop() bool {
	return ss.s.loops != nil && !ss.noLoop && !ss.tls
}

// linkLoopable reports whether the session's backend connection can go
// to a loop now; the caller holds bmu, under which Detach changes it. A
// pooled session goes without one, and borrows in the loop.
func (ss *session) linkLoopable() bool {
	if ss.link == nil {
		return ss.pooled()
	}
	return !ss.link.dead && ss.link.br.Buffered() == 0
}

// pooledLoop is the loop of the pool a pooled session borrows from: its
// link's, or its running compute's; nil if its compute is asleep.
func (ss *session) pooledLoop() *evloop.Loop {
	if ss.link != nil {
		if ss.link.pool == nil {
			return nil
		}
		return ss.link.pool.loop
	}
	if res, ok := ss.warm(); ok {
		return ss.s.pools.loopFor(res.ComputeID)
	}
	return nil
}

// relayInLoop gives the session to a loop until it hands it back, and
// does what the loop handed it back for. needNext asks for the goroutine
// engine to run the next command (one the loop refused).
func (ss *session) relayInLoop() (needNext bool, err error) {
	ss.bmu.Lock()
	defer ss.serveWaitersAfter(ss.link) // after the unlock: deferred calls run last first
	defer ss.bmu.Unlock()
	loop := ss.s.loops.Pick()
	if ss.pooled() {
		loop = ss.pooledLoop()
	}
	if loop == nil || !ss.linkLoopable() {
		return true, nil
	}
	ss.returnPending() // the loop borrows for itself
	if ss.pooled() && ss.link != nil && ss.st.insertDirty {
		// A link parked in the loop may go to another session there,
		// which cannot wait for this read.
		if err := ss.readInsertID(); err != nil {
			ss.linkLostAfter(err)
		}
	}
	if err := ss.cw.Flush(); err != nil {
		return false, err
	}
	ls := &loopSession{ss: ss, loop: loop, back: make(chan loopExit, 1), cfd: -1, sfd: -1, idleSince: time.Now()}
	if n := ss.cr.Buffered(); n > 0 {
		p, _ := ss.cr.Peek(n)
		ls.in = append([]byte(nil), p...)
		ss.cr.Discard(n)
	}
	if !ss.enterLoop(ls) {
		ss.noLoop = true // stay with goroutines
		return len(ls.in) > 0, ss.restoreCarry(ls.in)
	}
	// The loop has buffers of its own: the session's wait on the free
	// lists meanwhile, so that thousands of sessions in loops cost little.
	ss.lendBuffers()
	if !ls.loop.Do(ls.start) {
		ss.takeBuffers()
		ls.exited = true
		ls.releaseLink(true)
		ls.closeFDs()
		ss.reopen(loopExit{})
		return false, net.ErrClosed
	}
	ex := <-ls.back
	ss.takeBuffers()
	return ss.leaveLoop(ex)
}

// serveWaitersAfter serves the waiters of the pool of l, a pooled
// session's link when it took its bmu: a borrower that came meanwhile
// could not reclaim the link, parked or parked again since.
func (ss *session) serveWaitersAfter(l *link) {
	ss.offerParked()
	if ss.pooled() && l != nil && l.pool != nil {
		l.pool.serveWaiters()
	}
}

// enterLoop swaps the session's sockets for duplicates the loop owns and
// closes the originals, so that Go's poller stops watching them.
func (ss *session) enterLoop(ls *loopSession) bool {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	if ss.closed {
		return false
	}
	var err error
	if ls.cfd, err = dupFD(ss.conn); err == nil && ss.link != nil {
		if err = ss.link.toLoop(); err != nil {
			ls.closeFDs()
		}
	}
	if err != nil {
		ss.log.Warn("relay event loop cannot take the session; using goroutines", "err", err)
		return false
	}
	ss.conn.Close()
	if l := ss.link; l != nil {
		ls.sfd = l.sock
		if l.pool != nil {
			l.pool.markLoop(l)
		}
	}
	ss.ls, ss.inLoop = ls, true
	return true
}

// leaveLoop takes the session back from the loop and does what it was
// handed back for.
func (ss *session) leaveLoop(ex loopExit) (needNext bool, err error) {
	if !ss.reopen(ex) {
		if ex.err == nil {
			ex.err = io.EOF
		}
		return false, ex.err
	}
	if ex.why == exitAfter {
		ss.afterCommand(ex.c) // before the client has the answer
	}
	if err := ss.writePending(ex); err != nil {
		return false, err
	}
	if err := ss.restoreCarry(ex.carry); err != nil {
		return false, err
	}
	switch ex.why {
	case exitSlow:
		return true, nil
	case exitMidResponse:
		err = ss.finishResponse(ex.t)
		ss.afterCommand(ex.c)
	case exitBackendLost:
		err = ss.backendLost(ex.err, ex.t != nil && ex.t.started())
		ss.afterCommand(ex.c)
	case exitBackendIdle:
		if ss.link != nil {
			ss.link.dead = true // the next command finds out what happened
		}
	case exitDetach:
		ex.req.done <- detachOutcome(ss.detach())
	case exitPinTimeout:
		return false, ss.endPinnedLocked()
	case exitQuit:
		return false, errQuit
	case exitClosed:
		return false, ex.err
	case exitIdle:
		ss.releaseAtBoundary() // parked again, for the goroutine engine
		return true, nil       // it waits for the next command with its buffers lent
	}
	return false, err
}

// reopen gives the session net.Conns again for the loop's sockets; false
// when they were closed.
func (ss *session) reopen(ex loopExit) bool {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	ss.ls, ss.inLoop = nil, false
	if ex.client == nil {
		return false
	}
	if ss.closed {
		ex.client.Close()
		if ss.link != nil {
			ss.link.conn.Close()
		}
		return false
	}
	ss.conn, ss.raw = ex.client, ex.client
	ss.cw.Reset(ex.client)
	return true
}

// restoreCarry puts client bytes the loop read but did not handle back in
// front of the client's socket.
func (ss *session) restoreCarry(carry []byte) error {
	if len(carry) == 0 {
		ss.cr.Reset(ss.conn)
		return nil
	}
	ss.cr.Reset(io.MultiReader(bytes.NewReader(carry), ss.conn))
	return nil
}

// writePending writes what the loop's sockets had not taken yet.
func (ss *session) writePending(ex loopExit) error {
	if len(ex.toClient) > 0 {
		if _, err := ss.conn.Write(ex.toClient); err != nil {
			return err
		}
	}
	if len(ex.toServer) > 0 && ss.link != nil {
		if _, err := ss.link.conn.Write(ex.toServer); err != nil {
			return err
		}
	}
	return nil
}

// start registers the session's sockets; it runs on the loop's thread.
func (ls *loopSession) start() {
	id, err := ls.loop.Add(ls)
	if err != nil {
		ls.exit(loopExit{why: exitClosed, err: err}, true)
		return
	}
	ls.id = id
	ls.run(func() error {
		if err := ls.watch(); err != nil {
			return err
		}
		return ls.processIn()
	})
}

// Event handles one epoll event of one socket.
func (ls *loopSession) Event(side int, ev uint32) {
	if ls.exited {
		return
	}
	ls.run(func() error {
		if side == 0 {
			return ls.clientEvent(ev)
		}
		return ls.serverEvent(ev)
	})
}

// Tick ends a pinned session idle past its pinned idle timeout, and
// answers a Detach that arrived during a command.
func (ls *loopSession) Tick(now time.Time) {
	ss := ls.ss
	if ls.exited || ls.c != nil {
		return
	}
	if ls.own != nil || ls.waiter != nil {
		ls.run(func() error { return ls.tickPooled(now) })
		return
	}
	if ss.pinned != "" && ss.pinTimeout > 0 && now.Sub(ls.idleSince) >= ss.pinTimeout {
		ls.exit(loopExit{why: exitPinTimeout}, false)
		return
	}
	// An idle pooled session waits in the goroutine engine, whose wait
	// costs less than a loop's (a parked goroutine and no tick), so that
	// thousands of pooled clients cost little while they idle; its next
	// command brings it back.
	if ss.pooled() && ss.pinned == "" && len(ls.in) == 0 && len(ls.toClient) == 0 &&
		len(ls.toServer) == 0 && now.Sub(ls.idleSince) >= idleAfter {
		ls.exit(loopExit{why: exitIdle}, false)
	}
}

// run calls fn, then updates the sockets' registrations; an error ends
// the loop's part. A panic ends the session, never the daemon.
func (ls *loopSession) run(fn func() error) {
	defer func() {
		if v := recover(); v != nil && !ls.exited {
			ls.ss.log.Error("relay panic; closing the session", "panic", v, "stack", string(debug.Stack()))
			ls.exit(loopExit{why: exitClosed, err: fmt.Errorf("relay panic: %v", v)}, true)
		}
	}()
	err := fn()
	if err == nil && !ls.exited {
		err = ls.watch()
	}
	if err != nil && !ls.exited {
		ls.exit(loopExit{why: exitClosed, err: err}, true)
	}
}

const hangup = unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLRDHUP

func (ls *loopSession) clientEvent(ev uint32) error {
	if ev&unix.EPOLLOUT != 0 && len(ls.toClient) > 0 {
		if err := flushTo(ls.cfd, &ls.toClient); err != nil {
			return err
		}
	}
	if ev&(unix.EPOLLIN|hangup) == 0 || len(ls.in) >= maxLoopIn {
		return nil
	}
	n, err := readFD(ls.cfd, ls.loop.Scratch)
	if err == unix.EAGAIN {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ls.in) == 0 {
		// Every command handled: start again at the front of the
		// session's buffer rather than allocate a new one.
		ls.in = append(ls.inBuf[:0], ls.loop.Scratch[:n]...)
		ls.inBuf = ls.in
	} else {
		ls.in = append(ls.in, ls.loop.Scratch[:n]...)
	}
	return ls.processIn()
}

// processIn runs the complete commands the client has sent, one at a
// time, while no response is awaited.
func (ls *loopSession) processIn() error {
	ss := ls.ss
	for ls.c == nil && !ls.exited && ls.own == nil && ls.waiter == nil && len(ls.toServer) == 0 && len(ls.in) >= 4 {
		n := int(ls.in[0]) | int(ls.in[1])<<8 | int(ls.in[2])<<16
		if ls.in[3] != 0 || n == 0 || n > maxWholeCommand {
			ls.exit(loopExit{why: exitSlow}, false) // garbage, or too large to hold: the goroutine engine
			return nil
		}
		if len(ls.in) < 4+n {
			return nil
		}
		c := &ls.cmd
		*c = command{n: n, code: ls.in[4], payload: ss.buf(n)}
		copy(c.hdr[:], ls.in[:4])
		copy(c.payload, ls.in[4:4+n])
		if ss.pooled() && !ls.attachPooled(c) {
			continue // waiting, or gone back to the goroutine: the loop ends
		}
		var kind respKind
		switch {
		case c.code == mysql.COM_QUIT:
			if !ss.pooled() { // a pooled link goes back to the pool
				writeFD(ls.sfd, ls.in[:4+n])
			}
			ls.in = ls.in[4+n:]
			ls.exit(loopExit{why: exitQuit}, true)
			return nil
		case c.code == mysql.COM_STMT_CLOSE:
			kind = respNone
			if !ss.planClose(c) {
				ls.consume(n)
				ls.finish(c)
				ls.settle()
				continue
			}
		default:
			var ok bool
			if kind, ok = ss.plan(c); !ok {
				ls.exit(loopExit{why: exitSlow}, false)
				return nil
			}
		}
		ss.markRunning()
		ls.consume(n)
		ss.bytesIn += int64(4 + c.n)
		ls.frame = appendFrame(ls.frame[:0], c)
		if err := sendTo(ls.sfd, ls.frame, &ls.toServer); err != nil {
			ls.exit(loopExit{why: exitBackendLost, err: err, c: c}, false)
			return nil
		}
		if kind == respNone {
			c.ok = true
			ls.finish(c)
			ls.settle()
			continue
		}
		ls.track.reset(ss, c, kind)
		ls.c, ls.t = c, &ls.track
	}
	return nil
}

// consume drops a handled command of n bytes from the client's bytes.
func (ls *loopSession) consume(n int) {
	ls.in = ls.in[4+n:]
}

func (ls *loopSession) serverEvent(ev uint32) error {
	if ev&unix.EPOLLOUT != 0 && len(ls.toServer) > 0 {
		if err := flushTo(ls.sfd, &ls.toServer); err != nil {
			ls.exit(loopExit{why: exitBackendLost, err: err, c: ls.c, t: ls.t}, false)
			return nil
		}
		if len(ls.toServer) == 0 && ls.c == nil {
			return ls.processIn()
		}
	}
	if ev&(unix.EPOLLIN|hangup) == 0 || ls.sfd < 0 {
		return nil
	}
	if ls.own != nil {
		return ls.readOwn()
	}
	if ls.c == nil {
		// An event of a link this session gave up in the same epoll
		// batch may reach it: only a socket that has something to say
		// between commands means the backend spoke or left.
		if !sockAlive(ls.sfd) {
			ls.exit(loopExit{why: exitBackendIdle}, false)
		}
		return nil
	}
	n, err := readFD(ls.sfd, ls.loop.Scratch)
	if err == unix.EAGAIN {
		return nil
	}
	if err != nil {
		ls.exit(loopExit{why: exitBackendLost, err: err, c: ls.c, t: ls.t}, false)
		return nil
	}
	return ls.relay(ls.loop.Scratch[:n])
}

// relay feeds backend bytes to the tracker and writes what it emits to
// the client. A finished command is applied to the session before its
// last bytes go out, as the goroutine engine does: a client that has its
// answer sees the session's state already updated.
func (ls *loopSession) relay(data []byte) error {
	t := ls.t
	segs, used, err := t.feed(data, ls.segs[:0])
	ls.segs = segs[:0]
	if len(segs) > 0 {
		t.emitted = true
		for _, s := range segs {
			ls.ss.bytesOut += int64(len(s))
		}
	}
	if err == nil && used < len(data) {
		err = &protocolError{"bytes after the end of a response"}
	}
	if err != nil {
		sendvTo(ls.cfd, segs, &ls.toClient, &ls.out)
		return err
	}
	if t.done {
		c := ls.c
		ls.ss.lastStatus = t.status
		ls.c, ls.t = nil, nil
		if ls.needsGoroutine(c) {
			for _, s := range segs {
				ls.toClient = append(ls.toClient, s...)
			}
			ls.exit(loopExit{why: exitAfter, c: c}, false)
			return nil
		}
		ls.ss.afterCommand(c)
		ls.idleSince = time.Now()
	}
	if err := sendvTo(ls.cfd, segs, &ls.toClient, &ls.out); err != nil {
		return err
	}
	switch {
	case t.wantClient:
		ls.exit(loopExit{why: exitMidResponse, c: ls.c, t: t}, false)
	case t.done:
		ls.settle()
		return ls.resume()
	}
	return nil
}

// resume goes on once nothing is in flight: Detach's turn if it asked,
// else the next command.
func (ls *loopSession) resume() error {
	if ls.exited || ls.c != nil || ls.own != nil || ls.waiter != nil {
		return nil
	}
	if ls.req != nil {
		ls.exit(loopExit{why: exitDetach, req: ls.req}, false)
		return nil
	}
	return ls.processIn()
}

// needsGoroutine reports whether applying a finished command needs
// blocking work: a query of the proxy's own (named locks, the collation,
// the user variables of a pooled session), or ending another session (a
// KILL).
func (ls *loopSession) needsGoroutine(c *command) bool {
	ss := ls.ss
	return c.ok && c.flags&flagNamedLock != 0 || ss.st.collationStale || ss.killsSession != 0 ||
		ss.pooled() && ss.st.unexplained && ss.st.pin() == ""
}

// finish applies a finished command that had no response.
func (ls *loopSession) finish(c *command) {
	if ls.needsGoroutine(c) {
		ls.exit(loopExit{why: exitAfter, c: c}, false)
		return
	}
	ls.ss.afterCommand(c)
	ls.idleSince = time.Now()
	if ls.req != nil {
		ls.exit(loopExit{why: exitDetach, req: ls.req}, false)
	}
}

// askDetach is Detach's request for a session in this loop; false when
// the session left the loop before the request arrived (Detach then
// waits for bmu).
func (ls *loopSession) askDetach(req *detachReq) bool {
	return ls.loop.Do(func() {
		switch {
		case ls.exited:
			req.done <- detachRetry
		case ls.c == nil && ls.own == nil && ls.waiter == nil && len(ls.toServer) == 0:
			ls.exit(loopExit{why: exitDetach, req: req}, false)
		default:
			ls.req = req // after the command in progress
		}
	})
}

// watch registers each socket for what it can do next: the client for
// reading while the loop can hold more of its bytes, the backend for
// reading while the client takes what it is sent (and between commands,
// to see it close); each for writing while bytes wait for it.
func (ls *loopSession) watch() error {
	cw, sw := uint32(0), uint32(unix.EPOLLRDHUP)
	if len(ls.in) < maxLoopIn {
		cw |= unix.EPOLLIN
	}
	if len(ls.toClient) > 0 {
		cw |= unix.EPOLLOUT
	} else {
		sw |= unix.EPOLLIN
	}
	if len(ls.toServer) > 0 {
		sw |= unix.EPOLLOUT
	}
	if err := ls.register(ls.cfd, 0, cw, &ls.cev); err != nil {
		return err
	}
	if ls.sfd < 0 {
		return nil
	}
	return ls.register(ls.sfd, 1, sw, &ls.sev)
}

func (ls *loopSession) register(fd, side int, events uint32, cur *uint32) error {
	switch {
	case *cur == events:
		return nil
	case *cur == 0:
		*cur = events
		return ls.loop.Watch(unix.EPOLL_CTL_ADD, fd, ls.id, side, events)
	}
	*cur = events
	return ls.loop.Watch(unix.EPOLL_CTL_MOD, fd, ls.id, side, events)
}

// exit hands the session back to its goroutine: its sockets become
// net.Conns again, or are closed when closing.
func (ls *loopSession) exit(ex loopExit, closing bool) {
	if ls.exited {
		return
	}
	ls.exited = true
	ls.stopWaiting()
	if ls.cev != 0 {
		ls.loop.Watch(unix.EPOLL_CTL_DEL, ls.cfd, ls.id, 0, 0)
	}
	if ls.sev != 0 {
		ls.loop.Watch(unix.EPOLL_CTL_DEL, ls.sfd, ls.id, 1, 0)
		ls.sev = 0
	}
	if ls.id != 0 {
		ls.loop.Remove(ls.id)
	}
	ex.carry = ls.in
	ex.toClient, ex.toServer = ls.toClient, ls.toServer
	ls.releaseLink(closing)
	if !closing {
		if err := ls.reopen(&ex); err != nil {
			ex.why, ex.err = exitClosed, err
		}
	}
	ls.closeFDs()
	if ex.why != exitDetach && ls.req != nil {
		ls.req.done <- detachRetry
	}
	ls.back <- ex
}

// reopen makes a net.Conn of the client's socket for the goroutine.
func (ls *loopSession) reopen(ex *loopExit) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	client, err := fileConn(ls.cfd)
	if err != nil {
		return fmt.Errorf("hand back client socket: %w", err)
	}
	ex.client = client
	return nil
}

// releaseLink makes the session's link, if any, a net.Conn again as the
// loop lets the session go. A link with an answer on its way that no one
// will read (closing mid-command, the proxy's own query) is dead.
func (ls *loopSession) releaseLink(closing bool) {
	ss := ls.ss
	l := ss.link
	if l == nil {
		return
	}
	if l.pool != nil {
		l.pool.unpark(l) // the goroutine parks it again after its command
	}
	busy := ls.own != nil || closing && (ls.c != nil || len(ls.toServer) > 0)
	ls.own = nil
	ls.mu.Lock()
	err := l.toConn()
	ls.sfd = -1
	ls.mu.Unlock()
	if err != nil || busy {
		l.dead = true
		l.conn.Close()
	}
}

// closeFDs closes the loop's client socket.
func (ls *loopSession) closeFDs() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.cfd >= 0 {
		unix.Close(ls.cfd)
		ls.cfd = -1
	}
}

// shutdown ends the session from another goroutine: a shut-down socket
// reads as closed and the loop hands the session back. Closing it here
// instead could free the descriptor while the loop still uses it.
func (ls *loopSession) shutdown() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, fd := range []int{ls.cfd, ls.sfd} {
		if fd >= 0 {
			unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
}

// appendFrame appends a whole command as the backend gets it.
func appendFrame(b []byte, c *command) []byte {
	n := len(c.payload)
	b = append(b, byte(n), byte(n>>8), byte(n>>16), 0)
	return append(b, c.payload...)
}

// readFD reads once; io.EOF reports an orderly close.
func readFD(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// sendTo writes p, keeping what the peer cannot take yet in *pending (a
// copy: p may be the loop's scratch buffer).
func sendTo(fd int, p []byte, pending *[]byte) error {
	n, err := writeFD(fd, p)
	if err != nil {
		return err
	}
	if n < len(p) {
		*pending = append((*pending)[:0], p[n:]...)
	}
	return nil
}

// coalesceMax is the largest response sendvTo copies into one buffer.
const coalesceMax = 16 << 10

// sendvTo writes segs in one writev, keeping what the peer cannot take
// yet in *pending.
func sendvTo(fd int, segs [][]byte, pending *[]byte, scratch *[]byte) error {
	if len(segs) == 1 {
		return sendTo(fd, segs[0], pending)
	}
	// A small response (most of them) is copied into one buffer and
	// written with write(2): cheaper than writev of its few pieces.
	total := 0
	for _, s := range segs {
		total += len(s)
	}
	if total <= coalesceMax {
		buf := (*scratch)[:0]
		for _, s := range segs {
			buf = append(buf, s...)
		}
		*scratch = buf
		return sendTo(fd, buf, pending)
	}
	n := 0
	for {
		k, err := unix.Writev(fd, segs)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			k, err = 0, nil
		}
		if err != nil {
			return err
		}
		n = k
		break
	}
	if n == total {
		return nil
	}
	for _, s := range segs {
		if n >= len(s) {
			n -= len(s)
			continue
		}
		*pending = append(*pending, s[n:]...)
		n = 0
	}
	return nil
}

// flushTo writes more of *pending, releasing a large buffer once it is
// empty so an idle session holds little memory.
func flushTo(fd int, pending *[]byte) error {
	n, err := writeFD(fd, *pending)
	if err != nil {
		return err
	}
	switch rest := (*pending)[n:]; {
	case len(rest) > 0:
		*pending = append((*pending)[:0], rest...)
	case cap(*pending) > 16<<10:
		*pending = nil
	default:
		*pending = (*pending)[:0]
	}
	return nil
}

// writeFD writes as much of p as the socket takes now.
func writeFD(fd int, p []byte) (int, error) {
	total := 0
	for total < len(p) {
		n, err := unix.Write(fd, p[total:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return total, nil
		case err != nil:
			return total, err
		}
		total += n
	}
	return total, nil
}

// fileConn makes a net.Conn of its own from fd; fd stays open.
func fileConn(fd int) (net.Conn, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "relay")
	defer f.Close()
	return net.FileConn(f)
}

// dupFD duplicates the socket under conn (close-on-exec).
func dupFD(conn net.Conn) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
