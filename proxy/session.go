package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// session is one client connection, from accept to close.
type session struct {
	s      *Server
	id     uint32
	raw    net.Conn // the accepted connection
	conn   net.Conn // raw, or the *tls.Conn wrapping it after an SSLRequest
	key    string   // rate-limiter key of the source address
	log    *slog.Logger
	nonce  []byte
	seq    byte // next sequence id towards the client during the handshake
	start  time.Time
	tls    bool
	sni    string
	advCap uint32 // capabilities we advertised
	advExt uint32

	// Filled in by the handshake.
	resp      *wire.HandshakeResponse
	caps      uint32 // the client's negotiated capabilities
	extCaps   uint32
	project   string // as the client named it (name or id)
	user      string // the role, without the project prefix
	projectID string
	stage1    []byte

	// Set while the session is attached; KILL lookups and Detach read
	// them under s.mu.
	ready         bool
	computeID     string
	backendAddr   string
	backendThread uint32
	backendUser   string            // the role logged in to the backend (after COM_CHANGE_USER too)
	activity      *compute.Activity // set by acquire

	// running is, while a pooled session's command runs, its sequence
	// number (high 32 bits) and its link's backend thread; 0 between
	// commands. A KILL of the session reads it from another goroutine.
	running atomic.Uint64
	runSeq  uint32

	// The relay's own, used under bmu: the relay holds it for each
	// command, Detach to take the backend connection away between two.
	bmu          sync.Mutex
	link         *link // nil while detached; changes under cmu too
	st           *sessionState
	cr           *bufio.Reader // from the client
	cw           *bufio.Writer // to the client
	cmdBuf       []byte
	respBuf      []byte
	remapIDs     bool         // statement ids are the proxy's (after a re-attach)
	lastStmt     uint32       // the client id of the last statement prepared
	parkedIn     *backendPool // the pool its link was just parked in (offerParked)
	lastStatus   uint16       // of the last response's end
	pinned       string       // why the session is pinned, or ""
	killsSession uint32       // our id of the session a KILL CONNECTION being run ends
	pinTimeout   time.Duration
	deadlineSet  bool
	lease        *compute.Lease
	leaseCompute string
	bytesIn      int64
	bytesOut     int64
	leaseIn      int64
	leaseOut     int64

	noLoop   bool          // the event loops could not take the session
	inLoop   bool          // an event loop relays it: set before, cleared after
	pending  *pendingGrant // a grant its event loop got but could not use
	poolSet  PoolSettings  // the project's pooling, read at login
	loggedIn bool          // past the login, which always resets a pooled link: it must reach the backend as the session's role

	cmu    sync.Mutex
	closed bool
	ls     *loopSession // set while an event loop relays the session
}

// refusal ends a session with a counted, logged reason and (usually) an
// error packet for the client.
type refusal struct {
	kind  Counter
	reply *mysql.MyError // nil: just close
	cause error
	ref   string // set when reply hides cause: both carry it
}

func (r *refusal) Error() string {
	if r.cause != nil {
		return r.kind.String() + ": " + r.cause.Error()
	}
	return r.kind.String()
}

// refuse makes a refusal that answers ERR code; the SQL state is go-mysql's
// for code (mysql.MySQLState, else HY000).
func refuse(kind Counter, code uint16, msg string, cause error) *refusal {
	return &refusal{kind: kind, reply: mysql.NewError(code, msg), cause: cause}
}

// handle serves one client connection. Its frame stays small (the work
// is in the functions it calls): an idle session's goroutine waits under
// it, and the garbage collector shrinks a stack only when its frames use
// under a quarter of it.
func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer s.recoverSession()
	n := s.active.Add(1)
	defer s.active.Add(-1)
	ss := &session{s: s, raw: c, conn: c, key: limiterKey(c.RemoteAddr()), start: time.Now()}
	defer ss.close()
	if r := s.admit(ss, n); r != nil {
		ss.refused(r)
		return
	}
	defer s.sources.release(ss.key)
	s.open(ss)
	defer s.unregister(ss)
	if err := ss.run(); err != nil {
		ss.fail(err)
	}
}

// recoverSession, deferred, keeps a bug in one session from taking the
// daemon down with every other session; handle's other deferred calls,
// the close among them, still run.
func (s *Server) recoverSession() {
	if v := recover(); v != nil {
		s.log.Error("session panic; closing it", "panic", v, "stack", string(debug.Stack()))
	}
}

// refused answers a session that admission refused.
func (ss *session) refused(r *refusal) {
	ss.log = ss.s.log.With("remote", ss.raw.RemoteAddr().String())
	ss.fail(r)
}

// open gives an admitted session its id and registers it.
func (s *Server) open(ss *session) {
	ss.id = s.allocID()
	ss.nonce = wire.NewNonce()
	ss.log = s.log.With("conn", ss.id, "remote", ss.raw.RemoteAddr().String())
	s.register(ss)
}

// run drives the session: client handshake, wake and backend login
// (establish), relay (serve).
func (ss *session) run() error {
	if err := ss.clientHandshake(); err != nil {
		return err
	}
	if err := ss.admitProject(); err != nil {
		return err
	}
	defer ss.s.projects.release(ss.projectID)
	// Deferred before establish, so that it runs even if establish
	// panics; it has nothing to do for a session that got no link.
	defer ss.endSession()
	if err := ss.establish(); err != nil {
		return err
	}
	ss.serve()
	return nil
}

// establish wakes the compute, logs in to it and answers the client's
// login.
func (ss *session) establish() error {
	ss.st = newSessionState(ss.resp.Database)
	ss.loadPoolSettings()
	ss.pinTimeout = ss.s.pinnedIdleTimeout(ss.s.baseCtx, ss)
	res, l, okPayload, err := ss.connect()
	if err != nil {
		return err
	}
	if !ss.setLink(l) {
		return net.ErrClosed
	}
	ok, err := wire.ParseOK(okPayload, true)
	if err == nil {
		ss.st.observe(ok)
		if len(ok.State) > 0 && !ss.clientTracks() {
			okPayload = wire.StripState(okPayload, ok)
		}
	}
	ss.updatePin()
	if _, err := wire.WritePacket(ss.conn, ss.seq, okPayload); err != nil {
		return err
	}
	ss.loggedIn = true
	if ss.pooled() {
		ss.bmu.Lock()
		ss.releaseAtBoundary()
		ss.bmu.Unlock()
		ss.offerParked()
	}
	ss.s.counters.inc(CountLogins)
	ss.log.Info("login", "project", ss.project, "project_id", ss.projectID, "user", ss.user,
		"compute", res.ComputeID, "cold_start", res.ColdStart, "tls", ss.tls,
		"duration", time.Since(ss.start))
	return nil
}

// endSession releases what an established session holds.
func (ss *session) endSession() {
	ss.bmu.Lock()
	ss.running.Store(0) // a KILL must not reach the link's next user
	if !ss.pooled() || !ss.giveBackLink() {
		ss.dropLink()
	}
	ss.returnPending()
	ss.bmu.Unlock()
	if ss.lease != nil {
		ss.lease.Release()
	}
}

// clientTracks reports whether the client negotiated session tracking;
// the backend always does, for the proxy's own use.
func (ss *session) clientTracks() bool { return ss.caps&mysql.CLIENT_SESSION_TRACK != 0 }

// deprecateEOF reports whether result sets end without EOF packets (the
// client's choice, passed on to every backend connection).
func (ss *session) deprecateEOF() bool { return ss.caps&mysql.CLIENT_DEPRECATE_EOF != 0 }

// fail counts, logs and answers a failed session. Plain I/O errors are
// classified by what they mean during a handshake.
func (ss *session) fail(err error) {
	var r *refusal
	if !errors.As(err, &r) {
		r = classify(err)
	}
	ss.s.counters.inc(r.kind)
	level := slog.LevelInfo
	switch r.kind {
	case CountWakeFailed, CountBackendFailed, CountCapabilityMismatch:
		level = slog.LevelWarn
	case CountHandshakeAborted:
		level = slog.LevelDebug // health checks and port scans: not a refusal
	}
	attrs := []any{"reason", r.kind.String(), "user", ss.userForLog(), "err", r.cause}
	if r.ref != "" {
		attrs = append(attrs, "ref", r.ref)
	}
	ss.log.Log(context.Background(), level, "connection refused", attrs...)
	if r.reply != nil {
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		wire.WritePacket(ss.conn, ss.seq, wire.ErrPayload(r.reply))
	}
}

func (ss *session) userForLog() string {
	if ss.resp == nil {
		return ""
	}
	return ss.resp.User
}

// classify turns a handshake I/O or parse error into a refusal.
func classify(err error) *refusal {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return &refusal{kind: CountHandshakeTimeout, cause: err}
	case errors.Is(err, wire.ErrPacketTooLarge):
		return refuse(CountPacketTooLarge, mysql.ER_NET_PACKET_TOO_LARGE,
			"Got a packet bigger than the proxy's handshake limit", err)
	case errors.Is(err, wire.ErrMalformed):
		return refuse(CountMalformed, mysql.ER_HANDSHAKE_ERROR, "Bad handshake", err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return &refusal{kind: CountHandshakeAborted, cause: err}
	default:
		var re tls.RecordHeaderError
		if errors.As(err, &re) {
			return &refusal{kind: CountTLSFailed, cause: err}
		}
		return &refusal{kind: CountHandshakeAborted, cause: err}
	}
}

// close closes both sides; it is safe from any goroutine, any number of
// times.
func (ss *session) close() {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	ss.closed = true
	if ss.ls != nil {
		ss.ls.shutdown() // the loop hands the session back, closed
		return
	}
	ss.conn.Close()
	ss.raw.Close()
	if ss.link != nil {
		ss.link.conn.Close()
	}
}

// acquire opens the compute's activity lease. A Waker without counters for
// the compute gets a private Activity, so the relay never checks for nil.
func (ss *session) acquire(computeID string) *compute.Lease {
	a := ss.s.waker.Activity(computeID)
	if a == nil {
		a = &compute.Activity{}
	}
	ss.activity = a
	return a.Acquire()
}

// warm returns the project's compute if it runs, without waiting.
func (ss *session) warm() (compute.WakeResult, bool) {
	if w, ok := ss.s.waker.(Warmer); ok {
		return w.Warm(ss.projectID)
	}
	return compute.WakeResult{}, false
}

// wake starts the project's compute. The client simply waits on its login,
// so its handshake deadline no longer applies.
func (ss *session) wake() (compute.WakeResult, error) {
	ss.raw.SetDeadline(time.Time{})
	// A pooled session wakes at every transaction: a timer and a child
	// of the shared base context each time cost more than the lookup.
	if res, ok := ss.warm(); ok {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.WakeTimeout)
	defer cancel()
	t0 := time.Now()
	res, err := ss.s.waker.Wake(ctx, ss.projectID)
	var qe *compute.QuotaError
	if errors.As(err, &qe) {
		return res, refuse(CountWakeFailed, mysql.ER_USER_LIMIT_REACHED, "serverlessd: "+qe.Msg, err)
	}
	if errors.Is(err, compute.ErrNodeFull) {
		return res, refuse(CountWakeFailed, mysql.ER_OUT_OF_RESOURCES, fmt.Sprintf(
			"serverlessd: the node is full: no room to start the database of project %q while the other databases are busy; try again in a moment", clip(ss.project, 64)), err)
	}
	if err != nil {
		return res, hidden(CountWakeFailed, wakeMessage(ss.project, err), err)
	}
	if res.ColdStart {
		ss.log.Info("woke compute", "project", ss.project, "compute", res.ComputeID, "duration", time.Since(t0))
	}
	return res, nil
}

// wakeMessage tells the client why its database did not start without
// naming internals (compute ids, socket paths, the daemon's admin user):
// only causes the client can act on get their own words.
func wakeMessage(project string, err error) string {
	if errors.Is(err, compute.ErrNoCompute) {
		return fmt.Sprintf("serverlessd: project %q has no compute; create one through the API", clip(project, 64))
	}
	return fmt.Sprintf("serverlessd: the database of project %q could not be started; try again in a moment", clip(project, 64))
}

// hidden answers a failure whose cause names internals with msg and a
// reference; fail logs the cause under the same reference.
func hidden(kind Counter, msg string, cause error) *refusal {
	ref := hex.EncodeToString(randomBytes(4))
	r := refuse(kind, mysql.ER_UNKNOWN_ERROR, msg+" (reference "+ref+")", cause)
	r.ref = ref
	return r
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// dialNetwork splits "unix:/path" from "host:port".
func dialNetwork(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}
