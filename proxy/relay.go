package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// The relay is one loop per session: read a command from the client,
// make sure the session has a backend connection (waking the compute and
// restoring the session's state if it lost its connection), forward the
// command, and relay the response packet by packet, reading the status
// and session-state blocks of its OK and EOF packets on the way. Knowing
// where each response ends is what lets a session outlive its backend
// connection: between commands the proxy can detach it, and attach it to
// another one later.

// errQuit ends the session after COM_QUIT.
var errQuit = errors.New("client quit")

// Buffer sizes. Commands are small and big packets stream through in
// pieces of clientBufSize; responses are read and written in pieces of
// respBufSize, haproxy's own buffer size.
const (
	clientBufSize = 16 << 10
	respBufSize   = 16 << 10
	// maxWholeCommand bounds the commands read whole before forwarding
	// (all but big inserts and blobs, which stream).
	maxWholeCommand = 1 << 20
	// maxInspectQuery bounds the queries checked for a KILL or a DROP.
	maxInspectQuery = 128
)

// ER_CONNECTION_KILLED is MariaDB's "Connection was killed", which
// go-mysql does not define.
const erConnectionKilled = 1927

// serve runs the command loop until the client leaves or the session ends.
func (ss *session) serve() {
	ss.takeBuffers()
	var err error
	for err == nil {
		if ss.mayLoop() {
			var needNext bool
			if needNext, err = ss.relayInLoop(); err != nil || !needNext {
				continue
			}
		}
		// The wait is not under next's frame: see handle.
		var hdr [4]byte
		if hdr, err = ss.awaitCommand(); err == nil {
			err = ss.next(hdr)
		}
	}
	ss.logClosed(err)
}

// logClosed logs the end of the session that serve ran.
func (ss *session) logClosed(err error) {
	if errors.Is(err, errQuit) || errors.Is(err, io.EOF) {
		err = nil
	}
	ss.log.Debug("session closed", "project", ss.project, "user", ss.user,
		"bytes_in", ss.bytesIn, "bytes_out", ss.bytesOut, "err", err, "duration", time.Since(ss.start))
}

// next handles one command, whose header is hdr, and its response.
func (ss *session) next(hdr [4]byte) error {
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if hdr[3] != 0 || n == 0 {
		return ss.fatal(mysql.NewError(mysql.ER_NET_PACKETS_OUT_OF_ORDER,
			"serverlessd: got a packet that is not a command; closing the connection"))
	}
	// The payload comes in before bmu is taken: while a client sends it
	// slowly, its session stays idle, and the link it parked free to go
	// to another session.
	c := &command{hdr: hdr, n: n}
	if n <= maxWholeCommand && n < mysql.MaxPayloadLen {
		c.payload = ss.buf(n)
		if _, err := io.ReadFull(ss.cr, c.payload); err != nil {
			return err
		}
		c.code = c.payload[0]
	} else {
		first, err := ss.cr.Peek(1)
		if err != nil {
			return err
		}
		c.code = first[0]
	}
	ss.bmu.Lock()
	defer ss.offerParked() // after the unlock: deferred calls run last first
	defer ss.bmu.Unlock()
	ss.bytesIn += int64(4 + n)
	err := ss.command(c)
	ss.afterCommand(c)
	return err
}

// buf returns the session's command buffer, grown to n bytes.
func (ss *session) buf(n int) []byte {
	if cap(ss.cmdBuf) < n {
		ss.cmdBuf = make([]byte, n, max(n, 2*cap(ss.cmdBuf)))
	}
	return ss.cmdBuf[:n]
}

// awaitCommand waits for the next command's header. A pinned session
// waits at most its project's pinned idle timeout.
func (ss *session) awaitCommand() ([4]byte, error) {
	var hdr [4]byte
	if ss.cw.Buffered() > 0 {
		if err := ss.cw.Flush(); err != nil {
			return hdr, err
		}
	}
	deadline := ss.pinned != "" && ss.pinTimeout > 0
	if deadline {
		ss.conn.SetReadDeadline(time.Now().Add(ss.pinTimeout))
		ss.deadlineSet = true
	} else if ss.deadlineSet {
		ss.conn.SetReadDeadline(time.Time{})
		ss.deadlineSet = false
	}
	var err error
	if deadline || ss.cr.Buffered() > 0 {
		_, err = io.ReadFull(ss.cr, hdr[:])
	} else if n, idle, rerr := ss.readBriefly(hdr[:]); idle {
		// The long wait, under as few frames as can be: see handle.
		err = ss.readLent(hdr[n:])
	} else {
		err = rerr
	}
	if err != nil && deadline && errors.Is(err, os.ErrDeadlineExceeded) {
		return hdr, ss.endPinned()
	}
	return hdr, err
}

// idleAfter is how long a session waits for its next command with its
// buffers; past it, it lends them out until the command comes, so that
// thousands of idle client connections cost little memory.
const idleAfter = time.Second

// readBriefly reads a command header into hdr, when nothing is buffered,
// for idleAfter at most. idle says the time ran out after n bytes.
func (ss *session) readBriefly(hdr []byte) (n int, idle bool, err error) {
	ss.conn.SetReadDeadline(time.Now().Add(idleAfter))
	n, err = io.ReadFull(ss.cr, hdr)
	ss.conn.SetReadDeadline(time.Time{})
	return n, err != nil && errors.Is(err, os.ErrDeadlineExceeded), err
}

// readLent reads the rest of an idle session's command header, its
// buffers lent out meanwhile when they hold nothing. A failed read ends
// the session, which then needs no buffers: it takes none, so that a
// pool of idle clients closing at once allocates nothing.
func (ss *session) readLent(rest []byte) error {
	lend := ss.cr.Buffered() == 0
	if lend {
		ss.lendBuffers()
	}
	_, err := io.ReadFull(ss.conn, rest)
	if lend && err == nil {
		ss.takeBuffers()
	}
	return err
}

// lendBuffers gives the session's empty buffers to the free lists.
func (ss *session) lendBuffers() {
	ss.cr.Reset(nil)
	ss.cw.Reset(nil)
	readers.put(ss.cr)
	writers.put(ss.cw)
	ss.cr, ss.cw = nil, nil
	if b := ss.respBuf; b != nil {
		respBufs.put(b)
		ss.respBuf = nil
	}
}

// takeBuffers gives the session buffers again.
func (ss *session) takeBuffers() {
	ss.cr = readers.get()
	ss.cw = writers.get()
	ss.cr.Reset(ss.conn)
	ss.cw.Reset(ss.conn)
}

// command is one command from the client: its header, its code and, when
// it was read whole, its payload (nil: it streams).
type command struct {
	hdr     [4]byte
	n       int
	code    byte
	payload []byte
	flags   sqlFlags // of a COM_QUERY, or of the statement an execute runs
	name    string   // of a text PREPARE or DEALLOCATE
	stmt    *stmt    // of a COM_STMT_* command
	ok      bool     // the response ended in success
}

// command dispatches one command.
func (ss *session) command(c *command) error {
	// A parked link is the session's again for any command, even one
	// that never attaches: a waiter must not reclaim it under the command,
	// and the boundary after it parks it once more.
	ss.unpark()
	switch c.code {
	case mysql.COM_QUIT:
		if ss.link != nil && !ss.pooled() {
			ss.link.conn.Write(append(c.hdr[:], c.payload...))
		}
		return errQuit
	case mysql.COM_STMT_CLOSE:
		if ss.planClose(c) && ss.send(c) != nil {
			ss.dropLink() // nothing to answer: the client expects no response
		}
		return nil
	}
	if err := ss.ensureAttached(); err != nil {
		return err
	}
	ss.markRunning()
	if kind, ok := ss.plan(c); ok {
		return ss.forward(c, kind)
	}
	return ss.slowCommand(c)
}

// comStmtBulkExecute is MariaDB's COM_STMT_BULK_EXECUTE.
const comStmtBulkExecute = 0xfa

// plan readies a command that goes to the backend as the client sent it
// or with ids mapped (KILL, statement ids), and returns its response's
// shape. It reports false, having changed nothing, for a command that
// needs the daemon's own work first: a KILL of another role, a DROP that
// frees space, COM_CHANGE_USER, a statement to prepare again or unknown,
// a command too large to hold. Both relay engines use it; plan never does
// I/O, so the event loop can call it.
func (ss *session) plan(c *command) (respKind, bool) {
	if c.payload == nil || ss.link == nil {
		return 0, false
	}
	switch c.code {
	case mysql.COM_CHANGE_USER, mysql.COM_QUIT, mysql.COM_STMT_CLOSE:
		return 0, false
	case mysql.COM_PROCESS_KILL:
		if ss.daemonAnswers(c.payload) {
			return 0, false
		}
	case mysql.COM_QUERY:
		if c.n <= maxInspectQuery && ss.daemonAnswers(c.payload) {
			return 0, false
		}
	case mysql.COM_STMT_EXECUTE, mysql.COM_STMT_SEND_LONG_DATA, mysql.COM_STMT_RESET, mysql.COM_STMT_FETCH, comStmtBulkExecute:
		if !ss.stmtReady(c) {
			return 0, false
		}
	}
	ss.st.calcFound = false
	switch c.code {
	case mysql.COM_QUERY:
		if c.n <= maxInspectQuery {
			if out := ss.rewriteKill(c.payload); out != nil {
				c.payload, c.n = out, len(out)
			}
		}
		c.flags, c.name = scanSQL(c.payload[1:])
	case mysql.COM_PROCESS_KILL:
		if c.n == 5 {
			if out := ss.rewriteKill(c.payload); out != nil {
				c.payload, c.n = out, len(out)
			}
		}
	case mysql.COM_STMT_EXECUTE, mysql.COM_STMT_SEND_LONG_DATA, mysql.COM_STMT_RESET, mysql.COM_STMT_FETCH, comStmtBulkExecute:
		ss.mapStmt(c)
	}
	return responseFor(c.code), true
}

// daemonAnswers reports whether a small command is one the daemon runs
// or answers itself: a KILL of another role's session or of a detached
// one, or a DROP that frees space on a full compute.
func (ss *session) daemonAnswers(p []byte) bool {
	if _, _, ok := ss.daemonKill(p); ok {
		return true
	}
	return ss.freesSpace(p)
}

// slowCommand handles what plan refused, in the goroutine engine.
func (ss *session) slowCommand(c *command) error {
	ss.st.calcFound = false
	switch c.code {
	case mysql.COM_CHANGE_USER:
		return ss.changeUser(c)
	case mysql.COM_QUERY, mysql.COM_PROCESS_KILL:
		return ss.query(c)
	case mysql.COM_STMT_PREPARE:
		ss.st.lost = "a prepared statement too long to record"
	case mysql.COM_STMT_EXECUTE, mysql.COM_STMT_SEND_LONG_DATA, mysql.COM_STMT_RESET, mysql.COM_STMT_FETCH, comStmtBulkExecute:
		if c.payload != nil {
			return ss.stmtCommand(c)
		}
	}
	return ss.forward(c, responseFor(c.code)) // too large to hold: as is
}

// query handles a COM_QUERY (or COM_PROCESS_KILL) that plan refused: a
// KILL of another role's session, which the daemon runs, or of a detached
// session, which it answers; a DROP or TRUNCATE that frees space; or one
// too large to hold, whose first bytes still give its flags.
func (ss *session) query(c *command) error {
	if c.payload != nil && c.n <= maxInspectQuery {
		if k, detached, ok := ss.daemonKill(c.payload); ok && detached {
			return ss.killDetached(k)
		} else if ok {
			return ss.killOther(k)
		}
		if ss.freesSpace(c.payload) {
			ss.allowFreeing()
		}
	}
	if c.payload != nil {
		c.flags, c.name = scanSQL(c.payload[1:])
	} else if p, err := ss.cr.Peek(min(c.n, maxScanSQL, ss.cr.Size())); err == nil {
		c.flags, c.name = scanSQL(p[1:])
	}
	return ss.forward(c, respResult)
}

// forward sends c to the backend and relays its response.
func (ss *session) forward(c *command, kind respKind) error {
	if err := ss.send(c); err != nil {
		return ss.backendLost(err, false)
	}
	if kind == respNone {
		c.ok = true
		return nil
	}
	return ss.relayResponse(c, kind)
}

// send writes c to the backend, streaming it if it was not read whole.
func (ss *session) send(c *command) error {
	l := ss.link
	if c.payload != nil {
		hdr := [4]byte{byte(c.n), byte(c.n >> 8), byte(c.n >> 16), 0}
		if _, err := l.bw.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := l.bw.Write(c.payload); err != nil {
			return err
		}
		return l.bw.Flush()
	}
	if _, err := copyFrames(l.bw, ss.cr, c.hdr, c.n); err != nil {
		return err
	}
	return l.bw.Flush()
}

// copyFrames forwards one packet (a frame of n bytes after hdr, and its
// continuation frames if n is the maximum) from r to w, and returns the
// bytes it moved.
func copyFrames(w *bufio.Writer, r *bufio.Reader, hdr [4]byte, n int) (int64, error) {
	var total int64
	for {
		w.Write(hdr[:])
		if err := copyN(w, r, n); err != nil {
			return total, err
		}
		total += int64(4 + n)
		if n < mysql.MaxPayloadLen {
			return total, nil
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return total, err
		}
		n = int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	}
}

// copyN moves n bytes from r to w through r's buffer. Peek and Discard,
// rather than io.CopyN, keep large packets free of allocations.
func copyN(w *bufio.Writer, r *bufio.Reader, n int) error {
	for n > 0 {
		k := min(n, r.Size())
		p, err := r.Peek(k)
		if err != nil {
			return err
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		r.Discard(k)
		n -= k
	}
	return nil
}

// fatal answers the client with e and ends the session.
func (ss *session) fatal(e *mysql.MyError) error {
	ss.replyErr(e)
	ss.cw.Flush()
	return e
}

// replyErr answers the current command with e. The backend has not seen
// the command, so nothing else writes to the client meanwhile.
func (ss *session) replyErr(e *mysql.MyError) {
	buf, _ := wire.AppendPacket(nil, 1, wire.ErrPayload(e))
	ss.cw.Write(buf)
	ss.bytesOut += int64(len(buf))
}

// replyOK answers the current command with an OK packet.
func (ss *session) replyOK() {
	status := uint16(0)
	if ss.autocommit() {
		status |= mysql.SERVER_STATUS_AUTOCOMMIT
	}
	if ss.st.inTrans {
		status |= wire.StatusInTrans
	}
	p := []byte{mysql.OK_HEADER, 0, 0, byte(status), byte(status >> 8), 0, 0}
	buf, _ := wire.AppendPacket(nil, 1, p)
	ss.cw.Write(buf)
	ss.bytesOut += int64(len(buf))
}

func (ss *session) autocommit() bool {
	v, ok := ss.st.vars["autocommit"]
	return !ok || v == "ON" || v == "1"
}

// afterCommand applies what a finished command did to the session's
// pins, and records its activity.
func (ss *session) afterCommand(c *command) {
	if ss.pooled() {
		ss.running.Store(0)
	}
	if c.ok && c.flags != 0 {
		ss.applyFlags(c)
	}
	if c.ok && c.code == mysql.COM_RESET_CONNECTION {
		// The backend forgot the session's variables, user variables and
		// statements; so does the proxy, or a later connection would get
		// them back. The schema stays.
		next := ss.st.nextStmtID
		ss.st.reset(ss.st.schema)
		ss.st.nextStmtID, ss.remapIDs = next, true
		if ss.link != nil {
			ss.link.forgetStmts()
		}
	}
	ss.afterStmt(c)
	if ss.st.collationStale && ss.link != nil {
		ss.readCollation()
	}
	if c.ok && ss.killsSession != 0 {
		ss.s.endKilled(ss.killsSession)
	}
	ss.killsSession = 0
	ss.updatePin()
	if ss.lease != nil {
		ss.lease.Add(ss.bytesIn-ss.leaseIn, ss.bytesOut-ss.leaseOut)
		ss.leaseIn, ss.leaseOut = ss.bytesIn, ss.bytesOut
	}
	if ss.link != nil {
		ss.link.lastUsed = time.Now()
	}
	ss.releaseAtBoundary()
}

// applyFlags records the pins a successful text query took or released.
func (ss *session) applyFlags(c *command) {
	st, f := ss.st, c.flags
	switch {
	case f&flagLockTables != 0:
		st.tableLocks = true
	case f&(flagUnlockTables|flagBegin) != 0:
		st.tableLocks = false
	}
	if f&flagCreateTemp != 0 {
		st.tempTables++
	}
	if f&flagDropTemp != 0 && st.tempTables > 0 {
		st.tempTables--
	}
	if f&flagXAStart != 0 {
		st.xa = true
	}
	if f&flagXAEnd != 0 {
		st.xa = false
	}
	if f&flagCalcFound != 0 {
		st.calcFound = true
	}
	if f&flagInsertID != 0 {
		st.insertDirty = true // read again before the session leaves its link
	}
	if f&flagNamedLock != 0 {
		ss.checkNamedLocks()
	}
	if f&flagPrepare != 0 && c.payload != nil {
		st.textStmts[c.name] = textStmt{query: string(c.payload[1:]), schema: st.schema}
	} else if f&flagPrepare != 0 {
		st.lost = "a PREPARE statement too long to record"
	}
	if f&flagDeallocate != 0 {
		delete(st.textStmts, c.name)
	}
}

// readCollation records the collation a character set change (SET NAMES
// ... COLLATE) gave the connection: MariaDB's tracker reports the
// character sets but not the collation.
func (ss *session) readCollation() {
	ss.st.collationStale = false
	rows, err := ss.link.query("SELECT @@collation_connection")
	if err != nil || len(rows) != 1 || len(rows[0]) != 1 || rows[0][0] == nil {
		ss.log.Debug("cannot read the connection's collation", "err", err)
		return
	}
	ss.st.vars["collation_connection"] = *rows[0][0]
}

// checkNamedLocks asks the backend whether the session holds GET_LOCK
// locks; where it cannot answer, a GET_LOCK pins the session for good.
func (ss *session) checkNamedLocks() {
	rows, err := ss.link.query(mdb.HeldLocksSQL)
	if err != nil || len(rows) != 1 || len(rows[0]) != 2 {
		ss.log.Debug("cannot list the session's locks; keeping it pinned", "err", err)
		ss.st.userLocks = true
		return
	}
	ss.st.userLocks = rows[0][0] != nil && *rows[0][0] != "0"
}

// updatePin keeps the pinned gauges and the compute's pinned count in
// step with the session's state.
func (ss *session) updatePin() {
	reason := ss.st.pin()
	if reason == ss.pinned {
		return
	}
	ss.s.stats.setPinned(ss.pinned, reason)
	if ss.activity != nil {
		switch {
		case ss.pinned == "":
			ss.activity.Pin(1)
		case reason == "":
			ss.activity.Pin(-1)
		}
	}
	ss.pinned = reason
}

// backendLost handles an I/O failure on the backend connection in the
// middle of a command. The command may or may not have run, so it is
// never retried: the client gets one error for it. An unpinned session
// survives and attaches again at its next command; a pinned one has lost
// its state and ends. If part of the response already reached the client,
// no error packet fits in the stream, so the session ends too.
func (ss *session) backendLost(err error, responseStarted bool) error {
	pin := ss.pinned
	ss.dropLink()
	ss.s.stats.inc(statLostMidCommand)
	ss.log.Info("backend connection lost during a command", "project", ss.project, "err", err,
		"pinned", pin, "response_started", responseStarted)
	if responseStarted {
		ss.cw.Flush()
		return err
	}
	if pin != "" {
		return ss.fatal(lostStateError(ss.project, pin))
	}
	ss.replyErr(mysql.NewError(erConnectionKilled, fmt.Sprintf(
		"serverlessd: the database of project %q stopped while this statement ran; it may or may not have taken effect. The connection stays usable.",
		clip(ss.project, 64))))
	return nil
}

// lostStateError is the one error a pinned session gets when its compute
// was lost.
func lostStateError(project, pin string) *mysql.MyError {
	return mysql.NewError(erConnectionKilled, fmt.Sprintf(
		"serverlessd: the database of project %q restarted while this session held %s, which is lost; reconnect",
		clip(project, 64), pin))
}

// endPinned ends a session that stayed pinned and idle past its project's
// pinned idle timeout: closing the backend connection rolls its
// transaction back and frees its locks.
func (ss *session) endPinned() error {
	ss.bmu.Lock()
	defer ss.bmu.Unlock()
	return ss.endPinnedLocked()
}

// endPinnedLocked is endPinned for the holder of bmu.
func (ss *session) endPinnedLocked() error {
	pin := ss.pinned
	ss.dropLink()
	ss.s.stats.inc(statPinTimeout)
	ss.log.Info("pinned session idle too long; closed", "project", ss.project, "user", ss.user,
		"pinned", pin, "pinned_idle_timeout", ss.pinTimeout)
	ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	buf, _ := wire.AppendPacket(nil, 1, wire.ErrPayload(mysql.NewError(erConnectionKilled, fmt.Sprintf(
		"serverlessd: session closed after %s idle holding %s (the project's pinned_idle_timeout); its transaction was rolled back",
		ss.pinTimeout, pin))))
	ss.cw.Write(buf)
	ss.cw.Flush()
	return errPinTimeout
}

var errPinTimeout = errors.New("pinned idle timeout")

// stmtID reads the statement id of a COM_STMT_* payload.
func stmtID(p []byte) uint32 { return binary.LittleEndian.Uint32(p[1:5]) }
