//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/serverlessd/serverlessd/compute"
	"golang.org/x/sys/unix"
)

// errHandOff ends a session's time in the event loop: it met a command
// (COM_CHANGE_USER) that the goroutine relay handles.
var errHandOff = errors.New("hand off to the goroutine relay")

// loopConn is one session relayed by an event loop. Its sockets are
// duplicates of the session's, whose net.Conns are closed so that Go's
// poller no longer watches them: only the loop does.
type loopConn struct {
	id    uint64
	loop  *eventLoop
	ss    *session
	lease *compute.Lease

	mu       sync.Mutex // guards cfd and sfd against shutdown racing close
	cfd, sfd int        // client and server (backend) sockets; -1 once closed
	cev, sev uint32     // the epoll events each is registered for, or unwatched
	sParked  bool       // the backend hung up while the client was still taking bytes

	scan      clientScanner
	carry     []byte // client bytes held back: a partial frame still to inspect
	toServer  []byte // read from the client, not yet taken by the backend
	toClient  []byte // read from the backend, not yet taken by the client
	in, out   int64
	handOff   []net.Conn // client and backend, after errHandOff
	finished  bool
	clientErr error
	serverErr error
	done      chan *loopConn
}

// handle runs one epoll event of one side.
func (c *loopConn) handle(side int, ev uint32) {
	defer func() {
		// A bug in one session must not take the daemon and every other
		// session down: end that session, and say so loudly.
		if v := recover(); v != nil && !c.finished {
			c.ss.log.Error("relay panic; closing the session", "panic", v, "stack", string(debug.Stack()))
			c.clientErr = fmt.Errorf("relay panic: %v", v)
			c.finish(c.clientErr)
		}
	}()
	var err error
	if side == sideClient {
		err = c.clientEvent(ev)
	} else {
		err = c.serverEvent(ev)
	}
	if err == nil {
		err = c.watch()
	}
	if err != nil {
		c.finish(err)
	}
}

const hangup = unix.EPOLLHUP | unix.EPOLLERR

// errClientGone: the client reset or closed both ways while the backend
// was still taking its bytes; they are for nobody now.
var errClientGone = errors.New("client hung up")

// unwatched is the registered-events value of a socket taken off epoll.
const unwatched = ^uint32(0)

func (c *loopConn) clientEvent(ev uint32) error {
	if ev&unix.EPOLLOUT != 0 && len(c.toClient) > 0 {
		if err := flushTo(c.cfd, &c.toClient); err != nil {
			c.clientErr = err
			return err
		}
	}
	switch {
	case ev&(unix.EPOLLIN|hangup) == 0:
		return nil
	case len(c.toServer) > 0 && ev&hangup != 0:
		c.clientErr = errClientGone
		return errClientGone
	case len(c.toServer) > 0:
		return nil // the backend is still taking the last request
	}
	return c.readClient()
}

func (c *loopConn) serverEvent(ev uint32) error {
	if ev&unix.EPOLLOUT != 0 && len(c.toServer) > 0 {
		if err := flushTo(c.sfd, &c.toServer); err != nil {
			c.serverErr = err
			return err
		}
	}
	switch {
	case ev&(unix.EPOLLIN|hangup) == 0:
		return nil
	case len(c.toClient) > 0:
		// The client is still taking the last response. A backend that
		// closed after writing more (a unix socket reports that at once,
		// unread bytes or not) is parked until then: reading now would
		// overtake the pending bytes, and leaving it on epoll would spin.
		if ev&hangup != 0 {
			c.sParked = true
		}
		return nil
	}
	return c.readServer()
}

// readClient forwards what the client sent, KILL ids mapped, and stops at
// COM_QUIT or COM_CHANGE_USER.
func (c *loopConn) readClient() error {
	buf := c.loop.scratch
	k := copy(buf, c.carry)
	n, err := readFD(c.cfd, buf[k:])
	if err != nil {
		if err == unix.EAGAIN {
			return nil
		}
		c.clientErr = err
		return err
	}
	data := buf[:k+n]
	out, used, stop := c.scan.scan(data, c.ss.rewriteKill)
	c.carry = append(c.carry[:0], data[used:]...)
	if len(out) > 0 {
		if err := sendTo(c.sfd, out, &c.toServer); err != nil {
			c.serverErr = err
			return err
		}
		c.in += int64(len(out))
		c.lease.Add(int64(len(out)), 0)
	}
	switch stop {
	case actQuit:
		return errQuit
	case actChangeUser, actDaemon:
		return errHandOff
	}
	return nil
}

func (c *loopConn) readServer() error {
	buf := c.loop.scratch
	n, err := readFD(c.sfd, buf)
	if err != nil {
		if err == unix.EAGAIN {
			return nil
		}
		c.serverErr = err
		return err
	}
	if err := sendTo(c.cfd, buf[:n], &c.toClient); err != nil {
		c.clientErr = err
		return err
	}
	c.out += int64(n)
	c.lease.Add(0, int64(n))
	return nil
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

// sendTo writes p, and keeps whatever the peer cannot take yet in *pending
// (a copy: p is the loop's scratch buffer).
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

// watch registers each socket for what it can do next: a side reads only
// when its peer has taken everything, and waits to write only when it
// has something left over.
func (c *loopConn) watch() error {
	cw, sw := uint32(0), uint32(0)
	if len(c.toServer) == 0 {
		cw |= unix.EPOLLIN
	} else {
		sw |= unix.EPOLLOUT
	}
	if len(c.toClient) == 0 {
		sw |= unix.EPOLLIN
		c.sParked = false
	} else {
		cw |= unix.EPOLLOUT
	}
	if err := c.register(c.cfd, sideClient, cw, false, &c.cev); err != nil {
		return err
	}
	return c.register(c.sfd, sideServer, sw, c.sParked, &c.sev)
}

// register changes what fd is registered for (*cur) to events, or takes it
// off epoll while it is parked.
func (c *loopConn) register(fd, side int, events uint32, parked bool, cur *uint32) error {
	switch {
	case parked && *cur == unwatched, !parked && *cur == events:
		return nil
	case parked:
		*cur = unwatched
		return unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	case *cur == unwatched:
		*cur = events
		return c.loop.ctl(unix.EPOLL_CTL_ADD, fd, c.id, side, events)
	}
	*cur = events
	return c.loop.ctl(unix.EPOLL_CTL_MOD, fd, c.id, side, events)
}

// finish takes c off the loop. On errHandOff its sockets become
// net.Conns again for the goroutine relay; otherwise they are closed.
func (c *loopConn) finish(err error) {
	c.finished = true
	c.loop.remove(c)
	if err == errHandOff {
		err = c.reopen()
	}
	if err != nil {
		c.closeFDs()
	}
	c.done <- c
}

// reopen turns the sockets back into net.Conns, for the session to take.
func (c *loopConn) reopen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	client, err := fileConn(c.cfd)
	if err != nil {
		return fmt.Errorf("hand off client socket: %w", err)
	}
	server, err := fileConn(c.sfd)
	if err != nil {
		client.Close()
		return fmt.Errorf("hand off backend socket: %w", err)
	}
	unix.Close(c.cfd)
	unix.Close(c.sfd)
	c.cfd, c.sfd = -1, -1
	c.handOff = []net.Conn{client, server}
	return nil
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

func (c *loopConn) closeFDs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fd := range []*int{&c.cfd, &c.sfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// shutdown asks the loop to end the session from another goroutine: a
// shut-down socket reads as closed, and the loop closes it. Closing it
// here instead could free the descriptor number while the loop still
// uses it.
func (c *loopConn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fd := range []int{c.cfd, c.sfd} {
		if fd >= 0 {
			unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
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
