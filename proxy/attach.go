package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// link is a session's connection to its compute while attached. Only the
// session's relay uses it, holding ss.bmu; close() may come from any
// goroutine.
type link struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	computeID string
	addr      string
	thread    uint32
	caps      uint32 // negotiated with the backend
	nonce     []byte
	ids       map[uint32]uint32 // client statement id -> id on this connection
	// shared finds the statements open on this connection by schema and
	// SQL, so that a pooled session taking it over uses them as they are.
	shared   map[string]uint32
	types    map[uint32]bool // statements executed here with their parameter types
	lastUsed time.Time
	dead     bool // the backend closed it (seen by an event loop)

	// Of a pooled link: its pool, its key there, the role logged in, and
	// the session that used it last (which needs no reset to use it again).
	pool   *backendPool
	key    string
	user   string
	owner  *session
	sig    string    // the state it was left in (session.stateSig)
	sticky time.Time // parked, it stays with its session until then
	// lastInsertID is LAST_INSERT_ID() as its last session left it.
	lastInsertID uint64
	// tainted: a session changed state here that the trackers did not
	// explain (a temporary table made by a prepared statement, say).
	// Only a reset clears it; until then no other session takes the
	// link as it is.
	tainted   bool
	discarded atomic.Bool

	// While an event loop holds the connection (loopHeld), sock is its
	// descriptor and conn is closed; toConn makes it a net.Conn again.
	sock     int
	loopHeld bool
	// inLoop: parked with a session an event loop relays (under the
	// pool's lock).
	inLoop bool
}

func newLink(c net.Conn, res compute.WakeResult) *link {
	return &link{
		sock: -1,
		conn: c, br: bufio.NewReaderSize(c, respBufSize), bw: bufio.NewWriterSize(c, clientBufSize),
		computeID: res.ComputeID, addr: res.Address, ids: map[uint32]uint32{}, types: map[uint32]bool{},
		shared: map[string]uint32{}, lastUsed: time.Now(),
	}
}

// idleProbe is how long a link may sit unused before the relay checks,
// without blocking, that its compute has not gone (a crash) before
// sending the next command on it.
const idleProbe = 10 * time.Millisecond

// ownQueryTimeout bounds each of the proxy's own queries on a link: the
// LAST_INSERT_ID() and user-variable reads, the state it restores.
const ownQueryTimeout = 30 * time.Second

// linkAlive tells whether l's compute still answers: a link used within
// idleProbe is taken to, and an older one is probed.
func linkAlive(l *link) bool {
	return time.Since(l.lastUsed) < idleProbe || peerAlive(l.conn, l.br)
}

// ensureAttached gives the session a live backend connection, attaching it
// again (wake, login, restore) when it has none.
// Its caller, command, has taken a parked link back already.
func (ss *session) ensureAttached() error {
	if l := ss.link; l != nil {
		if !l.dead && linkAlive(l) {
			return nil
		}
		pin := ss.pinned
		ss.dropLink()
		ss.log.Info("backend connection found closed; attaching again", "project", ss.project, "pinned", pin)
		if pin != "" {
			ss.s.stats.inc(statLostState)
			return ss.fatal(lostStateError(ss.project, pin))
		}
	}
	return ss.attach()
}

// attach wakes the compute and logs in again as the session's user,
// then restores the session's state. A failure to wake answers the
// command with an error and leaves the session detached, to try again at
// its next command; a refused login (the role was dropped) ends it.
func (ss *session) attach() error {
	t0 := time.Now()
	res, err := ss.wake()
	if err != nil {
		ss.s.stats.reattachFailed("wake")
		return ss.answerRefusal(err, false)
	}
	l, _, fresh, err := ss.login(res)
	if err != nil {
		var r *refusal
		fatal := errors.As(err, &r) && r.kind == CountBackendRefused
		reason := map[bool]string{true: "login_refused", false: "backend"}[fatal]
		if errors.As(err, &r) && r.kind == CountPoolTimeout {
			reason = "pool_timeout"
		}
		ss.s.stats.reattachFailed(reason)
		return ss.answerRefusal(err, fatal)
	}
	if !fresh {
		return ss.setLinkOrClose(l)
	}
	if err := ss.restore(l); err != nil {
		l.discard()
		ss.s.stats.reattachFailed("restore")
		ss.log.Warn("restoring session state failed", "project", ss.project, "err", err)
		return ss.fatal(mysql.NewError(mysql.ER_UNKNOWN_ERROR, fmt.Sprintf(
			"serverlessd: the session's state could not be restored on the database of project %q: %s; reconnect",
			clip(ss.project, 64), clip(err.Error(), 200))))
	}
	if err := ss.setLinkOrClose(l); err != nil {
		return err
	}
	if ss.pooled() && !res.ColdStart {
		return nil // a borrow, as every transaction does: not worth a line
	}
	ss.s.stats.reattached(res.ColdStart, time.Since(t0))
	ss.log.Info("session attached again", "project", ss.project, "user", ss.user, "compute", res.ComputeID,
		"cold_start", res.ColdStart, "duration", time.Since(t0))
	return nil
}

// login gets the session a backend connection to res's compute, with the
// session's schema: its own login, or one from the pool. ok is the
// backend's answer to a login or reset (nil for a pooled connection taken
// as it was); fresh tells whether the connection lacks the session's
// state.
func (ss *session) login(res compute.WakeResult) (l *link, ok []byte, fresh bool, err error) {
	if ss.pooled() {
		return ss.borrowLink(res)
	}
	l, ok, err = ss.backendLogin(res, ss.st.schema)
	return l, ok, true, err
}

func (ss *session) setLinkOrClose(l *link) error {
	if !ss.setLink(l) {
		return net.ErrClosed
	}
	return nil
}

// setInsertID sets the connection's LAST_INSERT_ID().
func (l *link) setInsertID(v uint64) error {
	_, err := l.query(setInsertIDSQL(v))
	return err
}

func setInsertIDSQL(v uint64) string { return "DO LAST_INSERT_ID(" + strconv.FormatUint(v, 10) + ")" }

// answerRefusal answers the command with a refusal's error. fatal ends
// the session.
func (ss *session) answerRefusal(err error, fatal bool) error {
	var r *refusal
	if !errors.As(err, &r) {
		return err
	}
	ss.log.Info("attaching the session failed", "project", ss.project, "reason", r.kind.String(), "err", r.cause, "ref", r.ref)
	reply := r.reply
	if reply == nil {
		reply = mysql.NewError(mysql.ER_UNKNOWN_ERROR, "serverlessd: the database could not be reached; try again")
	}
	if fatal {
		return ss.fatal(reply)
	}
	ss.replyErr(reply)
	return nil
}

// restore gives a new backend connection the session's state: its
// variables and user variables in one SET, the characteristics of its
// next transaction, and its text prepared statements. Statements prepared
// with COM_STMT_PREPARE are prepared again on first use.
func (ss *session) restore(l *link) error {
	st := ss.st
	if q := st.restoreSQL(); q != "" {
		if _, err := l.query(q); err != nil {
			return fmt.Errorf("restoring variables: %w", err)
		}
	}
	if st.trxNext != "" {
		for _, q := range strings.Split(st.trxNext, ";") {
			if q = strings.TrimSpace(q); q != "" && !strings.HasPrefix(strings.ToUpper(q), "START") {
				if _, err := l.query(q); err != nil {
					return fmt.Errorf("restoring transaction characteristics: %w", err)
				}
			}
		}
	}
	if st.lastInsertID != 0 {
		if err := l.setInsertID(st.lastInsertID); err != nil {
			return fmt.Errorf("restoring LAST_INSERT_ID(): %w", err)
		}
	}
	for name, ts := range st.textStmts {
		if err := l.inSchema(ts.schema, st.schema, func() error { _, err := l.query(ts.query); return err }); err != nil {
			return fmt.Errorf("preparing %s again: %w", name, err)
		}
	}
	return nil
}

// setLink installs l as the session's backend, or closes it if the
// session was closed meanwhile (Shutdown), so it never leaks.
func (ss *session) setLink(l *link) bool {
	ss.cmu.Lock()
	if ss.closed {
		ss.cmu.Unlock()
		l.discard()
		return false
	}
	ss.link = l
	ss.cmu.Unlock()
	ss.s.mu.Lock()
	ss.ready, ss.computeID, ss.backendAddr, ss.backendThread, ss.backendUser = true, l.computeID, l.addr, l.thread, ss.user
	ss.s.mu.Unlock()
	ss.switchLease(l.computeID)
	ss.s.stats.attach(+1)
	return true
}

// dropLink closes the session's backend connection; the session stays
// open, detached.
func (ss *session) dropLink() {
	if l := ss.takeLink(); l != nil {
		ss.dropTaken(l)
	}
}

// dropTaken closes l, the link just taken from the session, and forgets
// what the session held on it.
func (ss *session) dropTaken(l *link) {
	l.discard()
	// Pinned state lives on the connection and is gone with it. (Detach
	// never gets here with a pinned session, so the relay's unlocked read
	// of ss.pinned while it waits for a command races with nothing.)
	if ss.pinned != "" {
		if ss.activity != nil {
			ss.activity.Pin(-1)
		}
		ss.s.stats.setPinned(ss.pinned, "")
		ss.pinned = ""
	}
	ss.st.inTrans, ss.st.xa, ss.st.userLocks, ss.st.tableLocks, ss.st.tempTables = false, false, false, false, 0
	if ss.st.insertDirty { // lost before it was read: a new connection starts at 0
		ss.st.lastInsertID, ss.st.insertDirty = 0, false
	}
	for _, s := range ss.st.stmts {
		s.cursor = false
	}
}

// takeLink detaches the session from its link, if it has one, and
// returns it.
func (ss *session) takeLink() *link { return ss.take(false) }

// takeOpenLink is takeLink for a link to pass on to another session: nil,
// leaving the link, once the session was closed (a KILL, a shutdown),
// whose close may have closed the link's socket too.
func (ss *session) takeOpenLink() *link { return ss.take(true) }

func (ss *session) take(open bool) *link {
	ss.cmu.Lock()
	l := ss.link
	if open && ss.closed {
		l = nil
	} else {
		ss.link = nil
	}
	ss.cmu.Unlock()
	if l == nil {
		return nil
	}
	ss.unready()
	return l
}

// unready records that the session lost its link.
func (ss *session) unready() {
	ss.s.mu.Lock()
	ss.ready = false
	ss.s.mu.Unlock()
	ss.s.stats.attach(-1)
}

// switchLease moves the session's activity lease to computeID (a project
// whose compute was deleted and created again has a new one).
func (ss *session) switchLease(computeID string) {
	if ss.lease != nil && ss.leaseCompute == computeID {
		return
	}
	if ss.lease != nil {
		ss.lease.Release()
	}
	ss.lease = ss.acquire(computeID)
	ss.leaseCompute = computeID
}

// detach ends the session's backend connection before a planned stop of
// its compute, first snapshotting its user variables. A pinned session
// is left attached: its state cannot move, and it learns of the stop at
// its next command.
func (ss *session) detach() bool {
	if ss.link == nil || ss.pinned != "" {
		return false
	}
	if ss.st.unexplained || ss.st.userVars != "" {
		if err := ss.snapshotUserVars(); err != nil {
			ss.log.Warn("cannot save the session's user variables; they are lost at this suspend", "project", ss.project, "err", err)
		}
	}
	if err := ss.readInsertID(); err != nil {
		ss.log.Warn("cannot read the session's LAST_INSERT_ID(); it is lost at this suspend", "project", ss.project, "err", err)
	}
	ss.dropLink()
	ss.s.stats.inc(statDetached)
	return true
}

// readInsertID reads LAST_INSERT_ID() after an insert reported an id, so
// that the session's next connection gets it back.
func (ss *session) readInsertID() error { return ss.readInsertIDOn(ss.link) }

// readInsertIDOn is readInsertID on l, the session's connection until a
// moment ago. A failure leaves the value unknown, and 0.
func (ss *session) readInsertIDOn(l *link) error {
	if !ss.st.insertDirty {
		return nil
	}
	v, err := insertIDFrom(l.query(readInsertIDSQL))
	ss.st.lastInsertID, ss.st.insertDirty = v, false
	return err
}

const readInsertIDSQL = "SELECT LAST_INSERT_ID()"

// insertIDFrom reads the answer to readInsertIDSQL.
func insertIDFrom(rows [][]*string, err error) (uint64, error) {
	if err == nil && (len(rows) != 1 || len(rows[0]) != 1 || rows[0][0] == nil) {
		err = errors.New("LAST_INSERT_ID(): unexpected answer")
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(*rows[0][0], 10, 64)
}

// snapshotUserVars saves the session's user variables as SET assignments.
func (ss *session) snapshotUserVars() error {
	rows, err := ss.link.query(mdb.UserVariablesSQL)
	if err != nil {
		return err
	}
	var parts []string
	for _, r := range rows {
		if len(r) != 4 || r[0] == nil {
			continue
		}
		parts = append(parts, "@"+quoteIdent(*r[0])+"="+userValue(r[1], r[2], r[3]))
	}
	ss.st.userVars = strings.Join(parts, ", ")
	ss.st.unexplained = false
	ss.link.tainted = true // the snapshot explains user variables only
	return nil
}

// userValue renders a user variable's value for SET with its type: a
// string keeps its character set through a hex literal.
func userValue(value, typ, charset *string) string {
	if value == nil {
		return "NULL"
	}
	switch deref(typ) {
	case "DECIMAL":
		if isNumber(*value) {
			return trimZeros(*value)
		}
	case "INT", "REAL":
		if isNumber(*value) || strings.ContainsAny(*value, "eE") {
			return *value
		}
	}
	cs := deref(charset)
	if cs == "" || !isIdent(cs) {
		cs = "binary"
	}
	return fmt.Sprintf("_%s X'%X'", cs, *value)
}

// trimZeros drops the trailing zeros information_schema pads a DECIMAL
// user variable with (1.5 reads 1.5000...), keeping one after the point.
func trimZeros(v string) string {
	if !strings.Contains(v, ".") {
		return v
	}
	v = strings.TrimRight(v, "0")
	if strings.HasSuffix(v, ".") {
		v += "0"
	}
	return v
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func isIdent(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) || s[i] >= 0x80 {
			return false
		}
	}
	return s != ""
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// Detach detaches every unpinned session attached to a compute about to
// stop, and returns how many it detached. A session in the middle of a
// command is waited for until ctx ends.
func (s *Server) Detach(ctx context.Context, computeID string) int {
	s.mu.Lock()
	var list []*session
	for _, ss := range s.sessions {
		if ss.computeID == computeID && ss.ready {
			list = append(list, ss)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, ss := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ss.detachFor(ctx, computeID) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.closePool(computeID)
	return n
}

// detachFor detaches the session from computeID between two commands:
// at once when its goroutine is idle, through its event loop when one
// relays it, or after the command in progress.
func (ss *session) detachFor(ctx context.Context, computeID string) bool {
	for {
		if ss.bmu.TryLock() {
			defer ss.bmu.Unlock()
			return ss.link != nil && ss.link.computeID == computeID && ss.detach()
		}
		ss.cmu.Lock()
		ls := ss.ls
		ss.cmu.Unlock()
		if ls != nil {
			req := &detachReq{done: make(chan detachResult, 1)}
			if ls.askDetach(req) {
				select {
				case r := <-req.done:
					if r != detachRetry {
						return r == detachDone
					}
				case <-ctx.Done():
					return false
				}
			}
		}
		select {
		case <-ctx.Done():
			ss.log.Warn("session busy through the suspend; it will reconnect at its next command", "project", ss.project)
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// detachReq is a Detach waiting on a session in an event loop.
type detachReq struct{ done chan detachResult }

type detachResult int

const (
	detachRetry   detachResult = iota // the session left the loop first: try again
	detachDone                        // detached
	detachRefused                     // pinned, or not on that compute
)

func detachOutcome(ok bool) detachResult {
	if ok {
		return detachDone
	}
	return detachRefused
}

// query runs sql on the link and returns its rows (text values, nil for
// NULL). It is for the proxy's own statements between client commands.
func (l *link) query(sql string) ([][]*string, error) {
	// A backend that stops answering must not hold the session (and a
	// borrower waiting on it) forever.
	l.conn.SetDeadline(time.Now().Add(ownQueryTimeout))
	defer l.conn.SetDeadline(time.Time{})
	if err := l.writeCommand(append([]byte{mysql.COM_QUERY}, sql...)); err != nil {
		return nil, err
	}
	return readResult(l.read, l.caps)
}

// readResult reads the answer to a text query, packet by packet from
// read, and returns its rows (text values, nil for NULL).
func readResult(read func() ([]byte, error), caps uint32) ([][]*string, error) {
	var rows [][]*string
	for {
		p, err := read()
		if err != nil {
			return nil, err
		}
		switch p[0] {
		case mysql.OK_HEADER:
			ok, err := wire.ParseOK(p, true)
			if err != nil || ok.Status&wire.StatusMoreResults == 0 {
				return rows, err
			}
			continue
		case mysql.ERR_HEADER:
			e, err := wire.ParseErr(p)
			if err != nil {
				return nil, err
			}
			return nil, e
		}
		more, err := readRows(read, caps, p, &rows)
		if err != nil || !more {
			return rows, err
		}
	}
}

// readRows reads a text result set after its column count packet p.
func readRows(read func() ([]byte, error), caps uint32, p []byte, rows *[][]*string) (more bool, err error) {
	cols, _, err := wire.LenencInt(p)
	if err != nil {
		return false, err
	}
	skip := int(cols)
	if caps&mysql.CLIENT_DEPRECATE_EOF == 0 {
		skip++
	}
	for range skip {
		if _, err := read(); err != nil {
			return false, err
		}
	}
	for {
		p, err := read()
		if err != nil {
			return false, err
		}
		if p[0] == mysql.ERR_HEADER {
			e, _ := wire.ParseErr(p)
			return false, e
		}
		if wire.IsResultEnd(p, caps&mysql.CLIENT_DEPRECATE_EOF != 0) {
			end, _ := wire.EndStatus(p)
			return end.Status&wire.StatusMoreResults != 0, nil
		}
		row, err := wire.TextRow(p, int(cols))
		if err != nil {
			return false, err
		}
		*rows = append(*rows, row)
	}
}

func (l *link) writeCommand(payload []byte) error {
	if _, err := wire.WritePacket(l.bw, 0, payload); err != nil {
		return err
	}
	return l.bw.Flush()
}

// read reads one whole packet for the proxy's own exchanges.
func (l *link) read() ([]byte, error) {
	_, p, err := wire.ReadPacket(l.br, maxBackendPacket)
	if err == nil && len(p) == 0 {
		err = errors.New("empty packet from the backend")
	}
	return p, err
}

// inSchema runs fn with schema as the default database, going back to
// current afterwards.
func (l *link) inSchema(schema, current string, fn func() error) error {
	if schema == current || schema == "" {
		return fn()
	}
	if err := l.initDB(schema); err != nil {
		return err
	}
	err := fn()
	if current != "" {
		if e := l.initDB(current); e != nil && err == nil {
			err = e
		}
	}
	return err
}

func (l *link) initDB(schema string) error {
	if err := l.writeCommand(append([]byte{mysql.COM_INIT_DB}, schema...)); err != nil {
		return err
	}
	p, err := l.read()
	if err != nil {
		return err
	}
	if p[0] == mysql.ERR_HEADER {
		e, _ := wire.ParseErr(p)
		return e
	}
	return nil
}
