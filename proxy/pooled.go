package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// pooled reports whether the session borrows its backend connection per
// transaction (the project's pool mode "transaction").
func (ss *session) pooled() bool { return ss.poolSet.Transaction }

// poolKey groups the links a session can use: the relay passes responses
// on as the backend wrote them, so a link must have been negotiated for
// the same client capabilities. User, schema, character set and
// attributes are set by the reset.
func (ss *session) poolKey() string {
	return strconv.FormatUint(uint64(ss.caps), 16) + "/" + strconv.FormatUint(uint64(ss.extCaps), 16)
}

// poolWait is how long the session waits for a backend connection.
func (ss *session) poolWait() time.Duration {
	if ss.poolSet.Wait > 0 {
		return ss.poolSet.Wait
	}
	return defaultPoolWait
}

// loadPoolSettings reads the project's pool settings at login; a failed
// lookup keeps session mode, which needs no settings.
func (ss *session) loadPoolSettings() {
	pp, ok := ss.s.dir.(ProjectPooling)
	if !ok {
		return
	}
	set, err := pp.ProjectPooling(ss.s.baseCtx, ss.projectID)
	if err != nil {
		ss.log.Warn("project pool settings unknown; using session mode", "project_id", ss.projectID, "err", err)
		return
	}
	ss.poolSet = set
	if set.Transaction {
		// Statement ids are the proxy's from the start: statements move
		// between backend connections.
		ss.remapIDs = true
		ss.st.nextStmtID = 1
	}
}

// borrowLink gets the session a backend connection of res's compute from
// its pool, logged in as the session's user with the session's schema:
// a new login, a link reset for this session (COM_CHANGE_USER), or the
// link the session itself used last, untouched. fresh tells the first
// two, whose session state must be restored; ok is the backend's answer
// to their login, nil for the third.
func (ss *session) borrowLink(res compute.WakeResult) (l *link, ok []byte, fresh bool, err error) {
	key := ss.poolKey()
	p, g := ss.takePending(res.ComputeID)
	for p == nil {
		p = ss.s.pools.get(res.ComputeID, poolSize(ss.poolSet, res.MaxClients))
		g, err = p.borrow(ss.s.baseCtx, ss, key, ss.poolWait())
		if errors.Is(err, errPoolDropped) { // dropped: its compute stopped a moment ago
			p = nil
		}
	}
	if err != nil {
		return nil, nil, false, ss.poolRefusal(p, err)
	}
	l = g.l
	if l != nil && l.toConn() != nil {
		l.dead = true
	}
	var rerr error
	if g.from != nil {
		// Taken from an idle session whose LAST_INSERT_ID() is still on
		// the connection; that session waits for it on its bmu.
		rerr = g.from.readInsertIDOn(l)
		l.lastInsertID = g.from.st.lastInsertID
		g.from.bmu.Unlock()
	}
	if l != nil && (rerr != nil || l.key != key || l.dead || !linkAlive(l)) {
		l.conn.Close() // its slot is ours: open one of our own in its place
		l = nil
	}
	if l == nil {
		l, ok, err = ss.backendLogin(res, ss.st.schema)
		if err != nil {
			p.closed(nil)
			return nil, nil, false, err
		}
		l.pool, l.key, l.user, l.owner = p, key, ss.user, ss
		return l, ok, true, nil
	}
	if l.owner == ss && l.user == ss.user {
		return l, nil, false, nil
	}
	if ss.loggedIn && !l.tainted && l.sig != "" && l.sig == ss.stateSig() {
		// Left by a session in the same state: nothing to reset but
		// LAST_INSERT_ID().
		if l.lastInsertID != ss.st.lastInsertID {
			if err := l.setInsertID(ss.st.lastInsertID); err != nil {
				l.discard()
				return nil, nil, false, ss.unreachable(err)
			}
		}
		l.newOwner(ss)
		ss.s.stats.inc(statPoolMatched)
		return l, nil, false, nil
	}
	if ok, err = ss.resetLink(l); err != nil {
		l.discard()
		return nil, nil, false, err
	}
	l.owner = ss
	return l, ok, true, nil
}

// pendingGrant is what a session's event loop got from a pool but could
// not use without blocking (a slot to log in with, a link to reset): the
// session's goroutine takes it at the command's borrow.
type pendingGrant struct {
	p *backendPool
	g grant
}

// takePending returns the session's pending grant if it is of
// computeID's pool, and gives it back otherwise.
func (ss *session) takePending(computeID string) (*backendPool, grant) {
	pg := ss.pending
	if pg == nil {
		return nil, grant{}
	}
	ss.pending = nil
	if pg.p.computeID != computeID {
		pg.p.returnGrant(pg.g)
		return nil, grant{}
	}
	return pg.p, pg.g
}

// returnPending gives back a pending grant of a session that ends.
func (ss *session) returnPending() {
	if pg := ss.pending; pg != nil {
		ss.pending = nil
		pg.p.returnGrant(pg.g)
	}
}

// stateSig sums up what a link keeps of the session that used it last,
// so that another session in the same state can take it without a reset;
// "" when it keeps something no other session may see (user variables,
// text prepared statements, too many prepared statements). Statements
// prepared with COM_STMT_PREPARE stay for the next session, which may
// use them.
func (ss *session) stateSig() string {
	st := ss.st
	if len(st.textStmts) > 0 || st.userVars != "" || st.unexplained ||
		(ss.link != nil && len(ss.link.shared) > maxSharedStmts) {
		return ""
	}
	for n := range st.vars {
		if !restorable(n) { // SET timestamp, insert_id...: not in restoreSQL
			return ""
		}
	}
	return ss.user + "\x00" + st.schema + "\x00" + st.restoreSQL() + "\x00" + st.trxNext + "\x00" +
		strconv.Itoa(int(ss.resp.Charset))
}

// poolRefusal answers a session that waited its pool's whole
// pool_wait_timeout for a backend connection.
func (ss *session) poolRefusal(p *backendPool, err error) error {
	if !errors.Is(err, errPoolTimeout) {
		return &refusal{kind: CountHandshakeAborted, cause: err}
	}
	size := p.snapshot().Size
	return refuse(CountPoolTimeout, mysql.ER_CON_COUNT_ERROR, fmt.Sprintf(
		"serverlessd: all %d backend connections of project %q stayed busy for %s (its pool_size and pool_wait_timeout); try again, or raise pool_size",
		size, clip(ss.project, 64), ss.poolWait()), err)
}

// resetLink gives a link another session used to this one with
// COM_CHANGE_USER: one round trip that ends whatever the previous session
// left (variables, temporary tables, prepared statements) and logs in as
// this session's user with its schema, character set and attributes.
// It returns the backend's OK; a refusal (the role was dropped, the
// schema is gone) comes back as the backend's error.
func (ss *session) resetLink(l *link) ([]byte, error) {
	l.conn.SetDeadline(time.Now().Add(ss.s.cfg.BackendTimeout))
	defer l.conn.SetDeadline(time.Time{})
	cu := &wire.ChangeUser{
		User: ss.user, AuthResponse: wire.NativeScramble(l.nonce, ss.stage1), Database: ss.st.schema,
		Charset: uint16(ss.resp.Charset), HasCharset: true, AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, HasPlugin: true,
		Attrs: ss.resp.Attrs, HasAttrs: ss.resp.HasAttrs,
	}
	// The link's reader holds nothing between commands, so the exchange
	// can be framed on the connection itself, as a login is.
	bc := wire.NewConn(l.conn, maxBackendPacket)
	if err := bc.WritePacket(cu.Marshal(l.caps)); err != nil {
		return nil, ss.unreachable(err)
	}
	ok, err := ss.loginResult(bc, l)
	if err != nil {
		return nil, err
	}
	l.forgetStmts()
	l.user, l.tainted = ss.user, false
	ss.s.stats.inc(statPoolReset)
	return ok, nil
}

// releaseAtBoundary parks the session's link with its pool once nothing
// pins it there: at the end of a transaction, or of a statement in
// autocommit. A waiting session gets it at once instead.
func (ss *session) releaseAtBoundary() {
	l := ss.link
	if !ss.pooled() || ss.inLoop || l == nil || l.pool == nil || ss.pinned != "" || l.br.Buffered() > 0 {
		return // an event loop parks the link once the client has the answer
	}
	// User variables move with the session: snapshot them while the link
	// is still this session's. LAST_INSERT_ID() is read only if the link
	// leaves: by park for a waiter, by whoever takes it otherwise.
	if ss.st.unexplained {
		if err := ss.snapshotUserVars(); err != nil {
			ss.linkLostAfter(err)
			return
		}
	}
	ss.markBoundary(l)
	for {
		kept, mustRead := l.pool.park(ss, l)
		if !mustRead {
			if kept {
				ss.parkedIn = l.pool
			} else {
				ss.takeLink() // the waiter's now
			}
			return
		}
		if err := ss.readInsertID(); err != nil {
			ss.linkLostAfter(err)
			return
		}
	}
}

// markBoundary notes when l was last used, and how long it stays with
// the session.
func (ss *session) markBoundary(l *link) {
	l.lastUsed = time.Now()
	l.sticky = time.Time{}
	if ss.st.affected > 0 {
		// ROW_COUNT() is the connection's: a statement that changed rows
		// keeps it for the session's next command, if that comes soon.
		l.sticky = l.lastUsed.Add(time.Duration(ss.s.rowCountGrace.Load()))
	}
}

// offerParked serves the waiters of the pool the session just parked its
// link in, once the session's bmu is free: a borrower that came between
// the park and the unlock could not reclaim the link, and nothing else
// would serve it before another link moves.
func (ss *session) offerParked() {
	if p := ss.parkedIn; p != nil {
		ss.parkedIn = nil
		p.serveWaiters()
	}
}

// linkLostAfter drops a link that failed the proxy's own query after a
// command; the session attaches again at its next one.
func (ss *session) linkLostAfter(err error) {
	ss.log.Info("backend connection lost after a command", "project", ss.project, "err", err)
	ss.dropLink()
}

// unpark takes the session's parked link back for its next command.
func (ss *session) unpark() {
	if l := ss.link; l != nil && l.pool != nil {
		l.pool.unpark(l)
	}
}

// giveBackLink returns the link of a session that ends to its pool, when
// the link is clean enough for the next session's reset; otherwise it
// closes it (rolling back what it held).
func (ss *session) giveBackLink() bool {
	l := ss.link
	if l == nil || l.pool == nil || ss.pinned != "" || l.dead || l.br.Buffered() > 0 {
		return false
	}
	if ss.readInsertID() != nil {
		return false
	}
	l.sig, l.lastInsertID = ss.stateSig(), ss.st.lastInsertID
	if ss.takeOpenLink() == nil {
		return false
	}
	l.owner = nil // let the session be collected
	l.pool.giveBack(l)
	return true
}

// discard closes a link and frees its place in its pool, once.
func (l *link) discard() {
	l.conn.Close()
	l.closeSock()
	if l.pool != nil && !l.discarded.Swap(true) {
		l.pool.closed(l)
	}
}

// closePool closes the free links of a compute about to stop (Detach
// has taken the parked ones from their sessions), and forgets the pool
// once nothing is left in it.
func (s *Server) closePool(computeID string) {
	if p := s.pools.lookup(computeID); p != nil {
		p.closeIdle(time.Time{})
		if s.pools.dropEmpty(p) && s.cfg.OnPoolGone != nil {
			s.cfg.OnPoolGone(computeID)
		}
	}
}
