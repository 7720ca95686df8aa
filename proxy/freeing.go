package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-mysql-org/go-mysql/mysql"

	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// spaceFreer runs a client's DROP or TRUNCATE on a compute that is
// read-only because it reached its storage limit (compute.Manager does).
// MariaDB's read_only refuses those to tenants too, and they are the only
// way to free space (InnoDB files do not shrink on DELETE).
type spaceFreer interface {
	FreeSpace(ctx context.Context, computeID, user string, thread uint32, query string) error
}

// freesSpace reports whether a small command (a whole COM_QUERY) is a
// DROP or TRUNCATE that the daemon must run for this session, because its
// compute is read-only for its storage. It costs one atomic load unless
// the compute is full.
func (ss *session) freesSpace(p []byte) bool {
	if ss.activity == nil || !ss.activity.StorageFull() || len(p) < 2 || p[0] != mysql.COM_QUERY {
		return false
	}
	if _, ok := ss.s.waker.(spaceFreer); !ok {
		return false
	}
	_, err := mdb.ParseFreeing(string(p[1:]))
	return err == nil
}

// freeSpace answers a freeing statement (freesSpace said so) itself: the
// backend never sees it. The client gets OK, or an error that says why.
func (ss *session) freeSpace(cr *clientReader, p []byte) error {
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.BackendTimeout)
	defer cancel()
	err := ss.s.waker.(spaceFreer).FreeSpace(ctx, ss.computeID, ss.user, ss.backendThread, string(p[1:]))
	if err == nil {
		ss.s.counters.inc(CountSpaceFreed)
		ok := []byte{mysql.OK_HEADER, 0, 0, byte(mysql.SERVER_STATUS_AUTOCOMMIT), 0, 0, 0}
		_, werr := wire.WritePacket(ss.conn, 1, ok)
		return werr
	}
	var me *mysql.MyError
	if !errors.As(err, &me) {
		me = mysql.NewError(mysql.ER_OPTION_PREVENTS_STATEMENT, fmt.Sprintf(
			"serverlessd: the database of project %q is read-only: it reached its storage limit. "+
				"This statement could not free space: %s", ss.project, clip(err.Error(), 200)))
	}
	ss.log.Info("freeing statement refused", "project", ss.project, "user", ss.user, "err", err)
	return ss.replyClient(cr, me, false)
}
