package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// threadKiller kills a backend thread as the daemon's account
// (compute.Manager does). Tenant roles hold no CONNECTION ADMIN, which
// would also let them past max_connections and SET GLOBAL connection
// settings; MariaDB then lets a role kill only its own threads. A KILL of
// another role's session of the same project, by the connection id the
// proxy gave it (Ctrl-C in a client does this), is run by the daemon.
type threadKiller interface {
	KillThread(ctx context.Context, computeID string, thread uint32, queryOnly bool) error
}

// statementKiller kills, as the daemon's account, the statement a
// backend thread runs while still() holds (compute.Manager does).
type statementKiller interface {
	KillStatement(ctx context.Context, computeID string, thread uint32, still func() bool) error
}

// killOrder is a KILL the daemon runs: of another role's session of the
// same project, or of a pooled session (target).
type killOrder struct {
	id        uint32 // ours
	thread    uint32
	queryOnly bool
	target    *session // a pooled session
	computeID string   // the target's
}

// daemonKill recognizes in a small command a KILL, by one of our
// connection ids, that the daemon runs (of a session logged in as another
// role of this project) or answers itself (of a detached session).
func (ss *session) daemonKill(p []byte) (k killOrder, detached, ok bool) {
	id, queryOnly, ok := killedID(p)
	if !ok {
		return killOrder{}, false, false
	}
	if k, ok := ss.killsPooled(id, queryOnly); ok {
		return k, false, true
	}
	if k, ok := ss.killsOtherRole(id, queryOnly); ok {
		return k, false, true
	}
	k, ok = ss.killsDetached(id, queryOnly)
	return k, true, ok
}

// killsOtherRole recognizes a KILL of a session logged in as another role
// of this project.
func (ss *session) killsOtherRole(id uint64, queryOnly bool) (killOrder, bool) {
	if _, ok := ss.s.waker.(threadKiller); !ok {
		return killOrder{}, false
	}
	thread, user, ok := ss.s.killTarget(ss, id)
	if !ok || user == ss.user {
		return killOrder{}, false // the backend does it, or says it cannot
	}
	return killOrder{id: uint32(id), thread: thread, queryOnly: queryOnly}, true
}

// killsPooled recognizes a KILL of another pooled session of this
// project. Its backend connection serves other sessions between its
// commands, so the KILL must never name that connection's thread: the
// daemon stops the session's statement by its query id instead.
func (ss *session) killsPooled(id uint64, queryOnly bool) (killOrder, bool) {
	if id < connIDBase || id > 1<<32-1 {
		return killOrder{}, false
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	t := ss.s.sessions[uint32(id)]
	if t == nil || t == ss || t.projectID != ss.projectID || !t.pooled() {
		return killOrder{}, false
	}
	return killOrder{id: uint32(id), queryOnly: queryOnly, target: t, computeID: t.computeID}, true
}

// killedID reads the connection id a small KILL command names.
func killedID(p []byte) (id uint64, queryOnly, ok bool) {
	if len(p) < 2 {
		return 0, false, false
	}
	switch p[0] {
	case mysql.COM_PROCESS_KILL:
		if len(p) != 5 {
			return 0, false, false
		}
		return uint64(binary.LittleEndian.Uint32(p[1:])), false, true
	case mysql.COM_QUERY:
		words, n, ok := parseKill(p[1:])
		if !ok {
			return 0, false, false
		}
		return n, strings.EqualFold(words[len(words)-1], "QUERY"), true
	}
	return 0, false, false
}

// killsDetached recognizes a KILL of a session of this project that has
// no backend connection now (its compute suspended): nothing runs there,
// and no backend knows it as its own, so the daemon answers it.
func (ss *session) killsDetached(id uint64, queryOnly bool) (killOrder, bool) {
	if id < connIDBase || id > 1<<32-1 {
		return killOrder{}, false
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	t := ss.s.sessions[uint32(id)]
	if t == nil || t == ss || t.ready || t.projectID != ss.projectID {
		return killOrder{}, false
	}
	return killOrder{id: uint32(id), queryOnly: queryOnly}, true
}

// killDetached answers a KILL of a detached session: KILL QUERY has
// nothing to stop; KILL [CONNECTION] closes the session.
func (ss *session) killDetached(k killOrder) error {
	return ss.killAnswered(k, "kill of a detached session answered by the daemon")
}

// killAnswered closes the session a KILL [CONNECTION] the daemon ran or
// answered names, counts it, and answers OK.
func (ss *session) killAnswered(k killOrder, what string) error {
	if !k.queryOnly {
		ss.s.endKilled(k.id)
	}
	ss.s.counters.inc(CountKillRewritten)
	ss.log.Info(what, "project", ss.project, "user", ss.user, "conn_id", k.id, "backend_thread", k.thread, "query_only", k.queryOnly)
	ss.replyOK()
	return nil
}

// killOther runs k for the client and answers OK or the error.
func (ss *session) killOther(k killOrder) error {
	if k.target != nil {
		return ss.killPooled(k)
	}
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.BackendTimeout)
	defer cancel()
	if err := ss.s.waker.(threadKiller).KillThread(ctx, ss.computeID, k.thread, k.queryOnly); err != nil {
		ss.replyKillErr(err)
		return nil
	}
	return ss.killAnswered(k, "kill of another role's session run by the daemon")
}

// killPooled runs a KILL of a pooled session: the statement of the command
// it runs now, if any, is stopped by its query id; KILL [CONNECTION] then
// closes the session, whose backend connection goes with it.
func (ss *session) killPooled(k killOrder) error {
	t := k.target
	if run := t.running.Load(); run != 0 {
		killer, ok := ss.s.waker.(statementKiller)
		if !ok {
			ss.replyKillErr(errors.New("this daemon's compute driver cannot stop a pooled session's statement"))
			return nil
		}
		ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.BackendTimeout)
		defer cancel()
		still := func() bool { return t.running.Load() == run }
		if err := killer.KillStatement(ctx, k.computeID, uint32(run), still); err != nil {
			ss.replyKillErr(err)
			return nil
		}
		k.thread = uint32(run)
	}
	return ss.killAnswered(k, "kill of a pooled session run by the daemon")
}

// markRunning records, for a KILL from another session, the backend
// thread a pooled session's command runs on; afterCommand clears it.
func (ss *session) markRunning() {
	if ss.pooled() && ss.link != nil {
		ss.runSeq++
		ss.running.Store(uint64(ss.runSeq)<<32 | uint64(ss.link.thread))
	}
}

// replyKillErr answers a KILL the daemon could not run.
func (ss *session) replyKillErr(err error) {
	var me *mysql.MyError
	if !errors.As(err, &me) {
		me = mysql.NewError(mysql.ER_UNKNOWN_ERROR, "serverlessd: the KILL could not be run: "+clip(err.Error(), 200))
	}
	ss.replyErr(me)
}
