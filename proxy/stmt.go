package proxy

import (
	"encoding/binary"
	"fmt"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// Prepared statements outlive the backend connection they were prepared
// on. The client knows each statement by one id for the session's life;
// each backend connection has its own ids. On the first connection they
// are the same; after a re-attach the proxy hands out its own, and every
// statement is prepared again on the new connection the first time the
// client names it.

// lastPrepared is MariaDB's statement id for "the statement just
// prepared" in a pipelined COM_STMT_PREPARE + COM_STMT_EXECUTE.
const lastPrepared = 0xffffffff

// prepared records a statement the backend prepared under id p.StmtID
// and returns the id the client gets for it.
func (ss *session) prepared(c *command, p wire.PrepareOK) uint32 {
	id := p.StmtID
	if ss.remapIDs {
		id = ss.st.nextStmtID
		ss.st.nextStmtID++
	} else if id >= ss.st.nextStmtID {
		ss.st.nextStmtID = id + 1
	}
	s := &stmt{schema: ss.st.schema, params: p.Params}
	if c.payload != nil {
		s.sql = append([]byte(nil), c.payload[1:]...)
		s.flags, _ = scanSQL(s.sql)
		s.flags &^= flagPrepare | flagDeallocate // not preparable
	}
	ss.st.stmts[id] = s
	ss.link.ids[id] = p.StmtID
	ss.link.share(s, p.StmtID)
	ss.lastStmt = id
	return id
}

// planClose handles COM_STMT_CLOSE, which has no response: it forgets
// the statement and reports whether the backend must hear of it (not
// when the statement was never prepared on the current connection, or
// there is none), with its id mapped.
func (ss *session) planClose(c *command) bool {
	if c.payload == nil || len(c.payload) < 5 {
		return false
	}
	id := ss.clientStmtID(c)
	delete(ss.st.stmts, id)
	if ss.link == nil {
		return false
	}
	b, ok := ss.link.ids[id]
	if !ok {
		return false
	}
	delete(ss.link.ids, id)
	delete(ss.link.types, id)
	ss.link.unshare(b)
	binary.LittleEndian.PutUint32(c.payload[1:5], b)
	c.ok = true
	return true
}

// stmtReady reports whether a statement command can go to the backend
// with its id mapped: the session prepared the statement, and on the
// current connection.
func (ss *session) stmtReady(c *command) bool {
	if len(c.payload) < 5 {
		return false
	}
	id := ss.clientStmtID(c)
	s := ss.st.stmts[id]
	if s == nil {
		return false
	}
	if _, ok := ss.link.ids[id]; ok {
		return true
	}
	// Prepared on this connection by the session that used it before.
	if b, ok := ss.link.shared[stmtKey(s)]; ok && s.sql != nil {
		ss.link.ids[id] = b
		return true
	}
	return false
}

// clientStmtID is the statement a command names, resolving MariaDB's
// "the statement just prepared".
func (ss *session) clientStmtID(c *command) uint32 {
	if id := stmtID(c.payload); id != lastPrepared {
		return id
	}
	return ss.lastStmt
}

// mapStmt rewrites a ready statement command for the current connection:
// its id, and the parameter types a first execute there needs.
func (ss *session) mapStmt(c *command) {
	id := ss.clientStmtID(c)
	s := ss.st.stmts[id]
	// "The statement just prepared" is named by its id too: the last
	// statement prepared on this connection may be another session's,
	// or one prepared again since.
	binary.LittleEndian.PutUint32(c.payload[1:5], ss.link.ids[id])
	switch c.code {
	case mysql.COM_STMT_EXECUTE:
		ss.bindTypes(c, id, s)
		s.cursor = false
		c.flags = s.flags
	case mysql.COM_STMT_RESET:
		s.cursor = false
	}
	c.stmt = s
}

// stmtCommand handles a statement command plan refused: one for a
// statement the session never prepared, or one to prepare again on this
// connection first.
func (ss *session) stmtCommand(c *command) error {
	if len(c.payload) < 5 {
		return ss.unknownStmt(c, 0)
	}
	id := ss.clientStmtID(c)
	s := ss.st.stmts[id]
	if s == nil {
		return ss.unknownStmt(c, id)
	}
	if _, ok := ss.link.ids[id]; !ok {
		if _, err := ss.prepareAgain(id, s); err != nil {
			if err == errStmtAnswered {
				return nil
			}
			return err
		}
	}
	ss.mapStmt(c)
	return ss.forward(c, responseFor(c.code))
}

// afterStmt records what a statement command's response did to its
// cursor.
func (ss *session) afterStmt(c *command) {
	s := c.stmt
	if s == nil {
		return
	}
	ss.st.longData = c.code == mysql.COM_STMT_SEND_LONG_DATA
	switch c.code {
	case mysql.COM_STMT_EXECUTE:
		s.cursor = c.ok && ss.lastStatus&wire.StatusCursorExists != 0
	case mysql.COM_STMT_FETCH:
		if ss.lastStatus&wire.StatusLastRowSent != 0 || !c.ok {
			s.cursor = false
		}
	}
}

// unknownStmt answers a statement command for an id the session never
// prepared, as MariaDB would; the two without a response get none.
func (ss *session) unknownStmt(c *command, id uint32) error {
	if c.code == mysql.COM_STMT_SEND_LONG_DATA {
		return nil
	}
	ss.replyErr(mysql.NewError(mysql.ER_UNKNOWN_STMT_HANDLER, fmt.Sprintf(
		"Unknown prepared statement handler (%d) given to %s", id, stmtCommandName(c.code))))
	return nil
}

func stmtCommandName(code byte) string {
	switch code {
	case mysql.COM_STMT_EXECUTE:
		return "mysqld_stmt_execute"
	case mysql.COM_STMT_FETCH:
		return "mysqld_stmt_fetch"
	case mysql.COM_STMT_RESET:
		return "mysqld_stmt_reset"
	}
	return "mysqld_stmt_bulk_execute"
}

// prepareAgain prepares a statement on the current connection, in the
// schema it was first prepared in, and returns its id there.
func (ss *session) prepareAgain(id uint32, s *stmt) (uint32, error) {
	l := ss.link
	if s.sql == nil {
		return 0, ss.fatal(mysql.NewError(mysql.ER_UNKNOWN_STMT_HANDLER,
			"serverlessd: a prepared statement could not be restored; reconnect"))
	}
	var b uint32
	err := l.inSchema(s.schema, ss.st.schema, func() error {
		var err error
		b, err = l.prepare(s.sql)
		return err
	})
	if err != nil {
		if e, ok := err.(*mysql.MyError); ok {
			ss.replyErr(e) // e.g. a table dropped since: the client sees MariaDB's error
			return 0, errStmtAnswered
		}
		return 0, ss.backendLost(err, false)
	}
	l.ids[id] = b
	l.share(s, b)
	ss.s.stats.inc(statReprepared)
	return b, nil
}

// errStmtAnswered: the command was answered with an error already.
var errStmtAnswered = fmt.Errorf("statement command answered")

// prepare prepares sql on the link and returns the statement id,
// reading the definitions that follow.
func (l *link) prepare(sql []byte) (uint32, error) {
	if err := l.writeCommand(append([]byte{mysql.COM_STMT_PREPARE}, sql...)); err != nil {
		return 0, err
	}
	p, err := l.read()
	if err != nil {
		return 0, err
	}
	if p[0] == mysql.ERR_HEADER {
		e, _ := wire.ParseErr(p)
		return 0, e
	}
	ok, err := wire.ParsePrepareOK(p)
	if err != nil {
		return 0, err
	}
	for _, n := range []uint16{ok.Params, ok.Columns} {
		k := int(n)
		if k > 0 && l.caps&mysql.CLIENT_DEPRECATE_EOF == 0 {
			k++
		}
		for range k {
			if _, err := l.read(); err != nil {
				return 0, err
			}
		}
	}
	return ok.StmtID, nil
}

// bindTypes keeps a COM_STMT_EXECUTE valid on a connection where the
// statement was never executed: a client sends its parameter types only
// on the first execute (the new-params-bound flag), so the proxy inserts
// the types it saw last.
func (ss *session) bindTypes(c *command, id uint32, s *stmt) {
	if s.params == 0 {
		return
	}
	p := c.payload
	at := 1 + 4 + 1 + 4 + (int(s.params)+7)/8 // the new-params-bound flag
	if len(p) <= at {
		return
	}
	if p[at] == 1 {
		if len(p) >= at+1+2*int(s.params) {
			s.types = append(s.types[:0], p[at+1:at+1+2*int(s.params)]...)
		}
		ss.link.types[id] = true
		return
	}
	if ss.link.types[id] || s.types == nil {
		return
	}
	out := make([]byte, 0, len(p)+len(s.types))
	out = append(out, p[:at]...)
	out = append(out, 1)
	out = append(out, s.types...)
	out = append(out, p[at+1:]...)
	c.payload, c.n = out, len(out)
	ss.link.types[id] = true
}

// maxSharedStmts bounds the statements a pooled connection keeps for the
// sessions after the one that prepared them; past it, a session taking
// the connection over resets it, which closes them all.
const maxSharedStmts = 256

func stmtKey(s *stmt) string { return s.schema + "\x00" + string(s.sql) }

// share records statement b, prepared from s on this connection.
func (l *link) share(s *stmt, b uint32) {
	if s.sql != nil {
		l.shared[stmtKey(s)] = b
	}
}

// unshare forgets statement b, closed on this connection.
func (l *link) unshare(b uint32) {
	for k, v := range l.shared {
		if v == b {
			delete(l.shared, k)
		}
	}
}

// newOwner gives the connection to another session as it is: the
// statements stay, the new session's ids map to them on first use, and
// its first execute of each binds its own parameter types.
func (l *link) newOwner(ss *session) {
	l.ids, l.types, l.owner = map[uint32]uint32{}, map[uint32]bool{}, ss
}

// forgetStmts forgets every statement after a reset closed them.
func (l *link) forgetStmts() {
	l.ids, l.types, l.shared = map[uint32]uint32{}, map[uint32]bool{}, map[string]uint32{}
}
