package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// clientHandshake greets the client, upgrades to TLS on request, reads its
// login and authenticates it against the Directory. It touches no compute.
func (ss *session) clientHandshake() error {
	ctx, cancel := context.WithDeadline(ss.s.baseCtx, ss.start.Add(ss.s.cfg.HandshakeTimeout))
	defer cancel()
	ss.raw.SetDeadline(ss.start.Add(ss.s.cfg.HandshakeTimeout))
	if err := ss.greet(); err != nil {
		return err
	}
	resp, err := ss.readLogin(ctx)
	if err != nil {
		return err
	}
	ss.resp = resp
	if resp.Caps&refused != 0 {
		return refuse(CountCapabilityMismatch, mysql.ER_NOT_SUPPORTED_YET,
			"serverlessd does not support "+strings.Join(wire.CapNames(resp.Caps&refused), ", ")+"; connect without compression", nil)
	}
	if ss.s.cfg.RequireTLS && !ss.tls {
		return refuse(CountTLSRequired, wire.ErSecureTransportRequired,
			"Connections using insecure transport are prohibited: this server requires TLS (connect with --ssl)", nil)
	}
	// Like MariaDB, the capabilities we did not advertise are ignored.
	ss.caps = negotiated(resp.Caps, ss.advCap)
	ss.extCaps = resp.ExtCaps & ss.advExt
	return ss.authenticate(ctx, resp)
}

func (ss *session) greet() error {
	p := ss.s.profile.Load()
	g := &wire.Greeting{
		ServerVersion: p.version, ConnID: ss.id, Nonce: ss.nonce,
		Caps: advertisedCaps(p.caps), ExtCaps: p.extCaps & carryableExtCaps,
		Charset: p.charset, Status: mysql.SERVER_STATUS_AUTOCOMMIT, AuthPlugin: mysql.AUTH_NATIVE_PASSWORD,
	}
	ss.advCap, ss.advExt = g.Caps, g.ExtCaps
	_, err := wire.WritePacket(ss.conn, 0, g.Marshal())
	ss.seq = 1
	return err
}

// readPacket reads one handshake packet from the client, bounded by
// MaxHandshakePacket, and advances the reply sequence.
func (ss *session) readPacket() ([]byte, error) {
	seq, p, err := wire.ReadPacket(ss.conn, ss.s.cfg.MaxHandshakePacket)
	if err != nil {
		return nil, err
	}
	ss.seq = seq + 1
	return p, nil
}

func (ss *session) writePacket(p []byte) error {
	next, err := wire.WritePacket(ss.conn, ss.seq, p)
	ss.seq = next
	return err
}

// readLogin reads the HandshakeResponse, upgrading to TLS first when the
// client sends an SSLRequest.
func (ss *session) readLogin(ctx context.Context) (*wire.HandshakeResponse, error) {
	p, err := ss.readPacket()
	if err != nil {
		return nil, err
	}
	resp, err := wire.ParseHandshakeResponse(p)
	if err != nil || !resp.SSLRequest {
		return resp, err
	}
	if err := ss.upgradeTLS(ctx); err != nil {
		return nil, err
	}
	if p, err = ss.readPacket(); err != nil {
		return nil, err
	}
	if resp, err = wire.ParseHandshakeResponse(p); err != nil {
		return nil, err
	}
	if resp.SSLRequest {
		return nil, fmt.Errorf("%w: second SSLRequest", wire.ErrMalformed)
	}
	return resp, nil
}

func (ss *session) upgradeTLS(ctx context.Context) error {
	tc := tls.Server(ss.raw, ss.s.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return &refusal{kind: CountTLSFailed, cause: err}
	}
	ss.conn = tc
	ss.tls = true
	ss.sni = tc.ConnectionState().ServerName
	return nil
}

// route splits the login into project and role. With SNI routing the
// project comes from the server name "<project>.<domain>" and a repeated
// "<project>." prefix on the user is tolerated; otherwise the user name is
// "<project>.<role>", split at the FIRST dot (role names may hold dots).
func (ss *session) route(user string) (project, role string) {
	if d := ss.s.cfg.Domain; d != "" && ss.sni != "" {
		label, ok := strings.CutSuffix(strings.ToLower(ss.sni), "."+strings.ToLower(d))
		if ok && label != "" && !strings.Contains(label, ".") {
			return label, strings.TrimPrefix(user, label+".")
		}
	}
	project, role, _ = strings.Cut(user, ".")
	return project, role
}

// authenticate reads the client's proof of its password and checks it
// against the stored hash, keeping stage1 = SHA1(password) for the backend
// login.
func (ss *session) authenticate(ctx context.Context, resp *wire.HandshakeResponse) error {
	ss.project, ss.user = ss.route(resp.User)
	creds, err := ss.exchange(resp)
	if err != nil {
		return err
	}
	stage1, projectID, err := ss.checkPassword(ctx, passwordCheck{login: resp.User, project: ss.project, role: ss.user, creds: creds})
	if err != nil {
		return err
	}
	ss.projectID, ss.stage1 = projectID, stage1
	return nil
}

// lookup returns the role's stage2, or the dummy one and an error.
func (ss *session) lookup(ctx context.Context, project, user string) (stage2 []byte, projectID string, err error) {
	if project == "" || user == "" {
		return ss.s.dummyStage2, "", fmt.Errorf("user name %q has no <project>.<user> form", project+"."+user)
	}
	projectID, hash, err := ss.s.dir.LookupRole(ctx, project, user)
	if err != nil {
		return ss.s.dummyStage2, "", err
	}
	if stage2, err = wire.ParseNativeHash(hash); err != nil {
		// A role without a native password hash (e.g. none at all) cannot
		// log in through the proxy: it has nothing to check the reply against.
		return ss.s.dummyStage2, "", fmt.Errorf("role %q of project %q: %w", user, project, err)
	}
	return stage2, projectID, nil
}

func (ss *session) accessDenied(user string, usedPassword bool) *mysql.MyError {
	yes := "NO"
	if usedPassword {
		yes = "YES"
	}
	host, _, err := net.SplitHostPort(ss.raw.RemoteAddr().String())
	if err != nil {
		host = "unknown"
	}
	return mysql.NewError(mysql.ER_ACCESS_DENIED_ERROR,
		fmt.Sprintf("Access denied for user '%s'@'%s' (using password: %s)", clip(user, 64), host, yes))
}

// exchange runs the client's auth plugin up to its proof of the password.
// It only talks to the client: the check itself (checkPassword) comes
// after, so that no rate-limit token is held across client round trips.
func (ss *session) exchange(resp *wire.HandshakeResponse) (credentials, error) {
	reply := resp.AuthResponse
	switch {
	case resp.Caps&mysql.CLIENT_PLUGIN_AUTH == 0, resp.AuthPlugin == mysql.AUTH_NATIVE_PASSWORD, resp.AuthPlugin == "":
	case resp.AuthPlugin == mysql.AUTH_CACHING_SHA2_PASSWORD:
		return ss.sha2FullAuth()
	default:
		// Any other plugin: ask for mysql_native_password with the same nonce.
		if err := ss.writePacket(wire.AuthSwitchPayload(mysql.AUTH_NATIVE_PASSWORD, ss.nonce)); err != nil {
			return credentials{}, err
		}
		var err error
		if reply, err = ss.readPacket(); err != nil {
			return credentials{}, err
		}
	}
	return credentials{scramble: reply}, nil
}

// sha2FullAuth answers a caching_sha2_password client with "perform full
// authentication": over TLS it sends the cleartext, otherwise it encrypts
// it with our RSA key (asking for the key first unless it has it pinned).
// The proxy has no SHA-256 cache to offer, so there is no fast path.
func (ss *session) sha2FullAuth() (credentials, error) {
	// MORE_DATE_HEADER is go-mysql's name for the AuthMoreData byte (0x01).
	if err := ss.writePacket([]byte{mysql.MORE_DATE_HEADER, mysql.CACHE_SHA2_FULL_AUTH}); err != nil {
		return credentials{}, err
	}
	p, err := ss.readPacket()
	if err != nil {
		return credentials{}, err
	}
	if ss.tls {
		return credentials{sha2: p}, nil
	}
	if len(p) == 1 && p[0] == wire.CachingSha2RequestPubKey {
		if err := ss.writePacket(append([]byte{mysql.MORE_DATE_HEADER}, ss.s.rsaPub...)); err != nil {
			return credentials{}, err
		}
		if p, err = ss.readPacket(); err != nil {
			return credentials{}, err
		}
	}
	return credentials{sha2: p, encrypted: true}, nil
}
