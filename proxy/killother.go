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

// killOrder is a KILL of another role's session of the same project.
type killOrder struct {
	id        uint32 // ours
	thread    uint32
	queryOnly bool
}

// daemonKill recognizes in a small command a KILL, by one of our
// connection ids, that the daemon runs (of a session logged in as another
// role of this project) or answers itself (of a detached session).
func (ss *session) daemonKill(p []byte) (k killOrder, detached, ok bool) {
	id, queryOnly, ok := killedID(p)
	if !ok {
		return killOrder{}, false, false
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
// no backend connection now (its compute suspended), or holds none
// between commands (pooled): nothing runs there, and no backend knows it
// as its own, so the daemon answers it.
func (ss *session) killsDetached(id uint64, queryOnly bool) (killOrder, bool) {
	if id < connIDBase || id > 1<<32-1 {
		return killOrder{}, false
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	t := ss.s.sessions[uint32(id)]
	if t == nil || t == ss || (t.ready && !t.idlePooled()) || t.projectID != ss.projectID {
		return killOrder{}, false
	}
	return killOrder{id: uint32(id), queryOnly: queryOnly}, true
}

// killDetached answers a KILL of a detached session: KILL QUERY has
// nothing to stop; KILL [CONNECTION] closes the session.
func (ss *session) killDetached(k killOrder) error {
	if !k.queryOnly {
		ss.s.endKilled(k.id)
	}
	ss.s.counters.inc(CountKillRewritten)
	ss.log.Info("kill of a detached session answered by the daemon", "project", ss.project, "conn_id", k.id, "query_only", k.queryOnly)
	ss.replyOK()
	return nil
}

// killOther runs k for the client and answers OK or the error.
func (ss *session) killOther(k killOrder) error {
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.BackendTimeout)
	defer cancel()
	err := ss.s.waker.(threadKiller).KillThread(ctx, ss.computeID, k.thread, k.queryOnly)
	if err != nil {
		var me *mysql.MyError
		if !errors.As(err, &me) {
			me = mysql.NewError(mysql.ER_UNKNOWN_ERROR, "serverlessd: the KILL could not be run: "+clip(err.Error(), 200))
		}
		ss.replyErr(me)
		return nil
	}
	ss.s.counters.inc(CountKillRewritten)
	ss.log.Info("kill of another role's session run by the daemon", "project", ss.project, "user", ss.user,
		"backend_thread", k.thread, "query_only", k.queryOnly)
	if !k.queryOnly {
		ss.s.endKilled(k.id)
	}
	ss.replyOK()
	return nil
}
