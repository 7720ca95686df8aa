package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// maxBackendPacket bounds packets read from a backend during login.
const maxBackendPacket = 1 << 20

// backendLogin dials the woken compute and logs in as the session's role
// with the recovered stage1, passing through the client's attributes,
// collation and capabilities, with schema as the default database. It
// returns the new connection and the backend's OK payload; a backend ERR
// (e.g. an unknown database) is relayed to the client as MariaDB's own
// error.
func (ss *session) backendLogin(res compute.WakeResult, schema string) (*link, []byte, error) {
	deadline := time.Now().Add(ss.s.cfg.BackendTimeout)
	network, addr := dialNetwork(res.Address)
	c, err := dialBackend(ss.s.baseCtx, network, addr, deadline)
	if err != nil {
		if c, res, err = ss.redial(res, err); err != nil {
			return nil, nil, ss.unreachable(err)
		}
		deadline = time.Now().Add(ss.s.cfg.BackendTimeout)
	}
	l := newLink(c, res)
	c.SetDeadline(deadline)
	ok, err := ss.loginExchange(l, schema)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	return l, ok, nil
}

// redial reports an address that did not answer to the waker, when it can
// recover (see compute.Manager.Unreachable), and dials where it says: the
// same address once its backend restarted, or a new backend.
func (ss *session) redial(res compute.WakeResult, cause error) (net.Conn, compute.WakeResult, error) {
	r, ok := ss.s.waker.(Recoverer)
	if !ok {
		return nil, res, cause
	}
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, recoverTimeout)
	defer cancel()
	next, err := r.Unreachable(ctx, res, cause)
	if err != nil {
		return nil, res, err
	}
	network, addr := dialNetwork(next.Address)
	c, err := dialBackend(ss.s.baseCtx, network, addr, time.Now().Add(ss.s.cfg.BackendTimeout))
	return c, next, err
}

// recoverTimeout bounds a recovery: a check of the backend, then a start.
const recoverTimeout = 2 * time.Minute

// dialBackend dials a compute. A unix socket whose listen backlog is full
// refuses at once with EAGAIN, where TCP would make the client wait: a
// wake storm of hundreds of logins meets that while mariadbd is still
// accepting the first ones. Such dials are retried until the deadline.
func dialBackend(ctx context.Context, network, addr string, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	wait := time.Millisecond
	for {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().Add(wait).After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// unreachable hides the cause (it names the backend's socket path or
// address) behind a reference, like a wake failure.
func (ss *session) unreachable(err error) error {
	msg := fmt.Sprintf("serverlessd: the database of project %q could not be reached; try again in a moment", clip(ss.project, 64))
	return hidden(CountBackendFailed, msg, err)
}

// loginExchange runs the backend's connection phase, framed by go-mysql's
// packet.Conn (wire.Conn), which reads nothing past the backend's OK: the
// relay then takes the connection over as it is.
func (ss *session) loginExchange(l *link, schema string) ([]byte, error) {
	bc := wire.NewConn(l.conn, maxBackendPacket)
	p, err := bc.ReadPacket()
	if err != nil {
		return nil, ss.unreachable(err)
	}
	g, err := wire.ParseGreeting(p)
	if err != nil {
		return nil, ss.backendError(err)
	}
	ss.s.learn(g)
	plan, err := planBackendCaps(ss.caps, ss.extCaps, schema != "", ss.resp.HasAttrs, g)
	if err != nil {
		msg := fmt.Sprintf("serverlessd: the compute of project %q cannot serve this client: %v", ss.project, err)
		return nil, refuse(CountCapabilityMismatch, mysql.ER_NOT_SUPPORTED_YET, msg, err)
	}
	l.thread, l.caps, l.nonce = g.ConnID, plan.caps, g.Nonce
	hr := &wire.HandshakeResponse{
		Caps: plan.caps, ExtCaps: plan.extCaps, MaxPacket: ss.resp.MaxPacket, Charset: ss.resp.Charset,
		User: ss.user, AuthResponse: wire.NativeScramble(g.Nonce, ss.stage1), Database: schema,
		AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, Attrs: ss.resp.Attrs,
	}
	if err := bc.WritePacket(hr.Marshal()); err != nil {
		return nil, ss.unreachable(err)
	}
	return ss.loginResult(bc, l)
}

// loginResult reads the backend's answer, following at most one switch to
// mysql_native_password with a fresh nonce.
func (ss *session) loginResult(bc *wire.Conn, l *link) ([]byte, error) {
	for switches := 0; ; switches++ {
		p, err := bc.ReadPacket()
		if err != nil {
			return nil, ss.unreachable(err)
		}
		if len(p) == 0 {
			return nil, ss.backendError(errors.New("empty packet"))
		}
		switch p[0] {
		case mysql.OK_HEADER:
			return p, nil
		case mysql.ERR_HEADER:
			e, err := wire.ParseErr(p)
			if err != nil {
				return nil, ss.backendError(err)
			}
			return nil, ss.backendError(e)
		case mysql.EOF_HEADER: // an AuthSwitchRequest
			plugin, nonce, err := wire.ParseAuthSwitch(p)
			if err != nil || plugin != mysql.AUTH_NATIVE_PASSWORD || len(nonce) < wire.NonceLen || switches > 0 {
				return nil, ss.unsupportedPlugin(plugin)
			}
			l.nonce = nonce[:wire.NonceLen]
			if err := bc.WritePacket(wire.NativeScramble(l.nonce, ss.stage1)); err != nil {
				return nil, ss.unreachable(err)
			}
		default:
			return nil, ss.unsupportedPlugin("(more data)")
		}
	}
}

// backendError relays a backend ERR as is, so the client sees MariaDB's own
// error (unknown database, too many connections...); anything else is a
// protocol failure.
func (ss *session) backendError(err error) error {
	var se *mysql.MyError
	if errors.As(err, &se) {
		return &refusal{kind: CountBackendRefused, reply: se, cause: se}
	}
	return ss.unreachable(err)
}

func (ss *session) unsupportedPlugin(plugin string) error {
	msg := fmt.Sprintf("serverlessd: role %q of project %q uses auth plugin %q on its compute; the proxy can only log in with mysql_native_password",
		ss.user, ss.project, plugin)
	return refuse(CountBackendFailed, mysql.ER_NOT_SUPPORTED_AUTH_MODE, msg, errors.New(msg))
}
