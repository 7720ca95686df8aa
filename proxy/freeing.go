package proxy

import (
	"context"

	"github.com/go-mysql-org/go-mysql/mysql"

	mdb "github.com/serverlessd/serverlessd/compute/mariadb"
)

// freeingAllower lets a DROP or TRUNCATE through a compute that is
// read-only because it reached its storage limit (compute.Manager does):
// MariaDB's read_only refuses those to tenants too, and they are the only
// way to free space.
type freeingAllower interface {
	AllowFreeing(ctx context.Context, computeID string) error
}

// freesSpace reports whether a small command (a whole COM_QUERY) is a
// DROP or TRUNCATE on a compute that is read-only for its storage. It
// costs one atomic load unless the compute is full.
func (ss *session) freesSpace(p []byte) bool {
	if ss.activity == nil || !ss.activity.StorageFull() || len(p) < 2 || p[0] != mysql.COM_QUERY {
		return false
	}
	if _, ok := ss.s.waker.(freeingAllower); !ok {
		return false
	}
	_, err := mdb.ParseFreeing(string(p[1:]))
	return err == nil
}

// allowFreeing asks the daemon to let the statement through before it is
// forwarded; MariaDB then runs it with the client's own privileges and
// answers it. A failure is logged: the statement goes on and gets
// MariaDB's read-only error.
func (ss *session) allowFreeing() {
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.BackendTimeout)
	defer cancel()
	if err := ss.s.waker.(freeingAllower).AllowFreeing(ctx, ss.computeID); err != nil {
		ss.log.Warn("cannot lift read-only for a DROP", "project", ss.project, "err", err)
		return
	}
	ss.s.counters.inc(CountSpaceFreed)
}
