package proxy

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// rawClient is a minimal MySQL client built on the wire package, for the
// protocol paths real drivers do not take (caching_sha2_password, auth
// switches, COM_CHANGE_USER, COM_PROCESS_KILL, malformed packets).
type rawClient struct {
	t     testing.TB
	conn  net.Conn
	seq   byte
	greet *wire.Greeting
	caps  uint32
}

// rawCaps is a plain 4.1 client without DEPRECATE_EOF, so result sets end
// with EOF packets that read() can find.
const rawCaps = mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH |
	mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | mysql.CLIENT_LONG_FLAG | mysql.CLIENT_TRANSACTIONS | mysql.CLIENT_MULTI_RESULTS

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialRawFrom(t, addr, "")
}

// dialRawFrom connects from the local address ip ("": any). On Linux every
// 127.x.y.z is a loopback address, so tests can play several sources.
func dialRawFrom(t testing.TB, addr, ip string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawClient{t: t, conn: c}
	t.Cleanup(func() { c.Close() })
	p := rc.read()
	if rc.greet, err = wire.ParseGreeting(p); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return rc
}

func (rc *rawClient) read() []byte {
	rc.t.Helper()
	p, err := rc.tryRead()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return p
}

func (rc *rawClient) tryRead() ([]byte, error) {
	seq, p, err := wire.ReadPacket(rc.conn, 1<<24)
	rc.seq = seq + 1
	return p, err
}

func (rc *rawClient) write(p []byte) {
	rc.t.Helper()
	var err error
	if rc.seq, err = wire.WritePacket(rc.conn, rc.seq, p); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// startTLS sends an SSLRequest and upgrades.
func (rc *rawClient) startTLS(serverName string) {
	rc.t.Helper()
	rc.caps |= mysql.CLIENT_SSL
	rc.write((&wire.HandshakeResponse{Caps: rc.caps | rawCaps, Charset: 45, SSLRequest: true}).Marshal())
	tc := tls.Client(rc.conn, &tls.Config{InsecureSkipVerify: true, ServerName: serverName})
	if err := tc.Handshake(); err != nil {
		rc.t.Fatalf("tls: %v", err)
	}
	rc.conn = tc
}

// login sends a HandshakeResponse with the given plugin and auth data.
func (rc *rawClient) login(user, plugin string, auth []byte, extraCaps uint32) {
	rc.caps |= rawCaps | extraCaps
	rc.write((&wire.HandshakeResponse{Caps: rc.caps, Charset: 45, User: user, AuthResponse: auth, AuthPlugin: plugin}).Marshal())
}

// loginNative logs in with mysql_native_password and returns the reply.
func (rc *rawClient) loginNative(user, pw string) []byte {
	rc.login(user, mysql.AUTH_NATIVE_PASSWORD, mysql.CalcNativePassword(rc.greet.Nonce, []byte(pw)), 0)
	return rc.read()
}

// loginSha2 plays a MySQL 8.4 client: caching_sha2_password, then full
// authentication with cleartext over TLS or the RSA exchange.
func (rc *rawClient) loginSha2(user, pw string, pinned *rsa.PublicKey) []byte {
	rc.t.Helper()
	rc.login(user, mysql.AUTH_CACHING_SHA2_PASSWORD, mysql.CalcCachingSha2Password(rc.greet.Nonce, []byte(pw)), 0)
	p := rc.read()
	if len(p) != 2 || p[0] != mysql.MORE_DATE_HEADER || p[1] != mysql.CACHE_SHA2_FULL_AUTH {
		return p
	}
	if _, ok := rc.conn.(*tls.Conn); ok {
		rc.write(append([]byte(pw), 0))
		return rc.read()
	}
	pub := pinned
	if pub == nil {
		rc.write([]byte{wire.CachingSha2RequestPubKey})
		p = rc.read()
		block, _ := pem.Decode(p[1:])
		if block == nil {
			rc.t.Fatalf("no PEM public key in %q", p)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			rc.t.Fatal(err)
		}
		pub = k.(*rsa.PublicKey)
	}
	enc, err := mysql.EncryptPassword(pw, rc.greet.Nonce, pub)
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.write(enc)
	return rc.read()
}

// query sends COM_QUERY and returns the first column of each row, or the
// server's error.
func (rc *rawClient) query(q string) ([]string, error) {
	rc.seq = 0
	rc.write(append([]byte{mysql.COM_QUERY}, q...))
	return rc.result()
}

// result reads an OK, an ERR, or a text result set.
func (rc *rawClient) result() ([]string, error) {
	p := rc.read()
	switch p[0] {
	case mysql.OK_HEADER:
		return nil, nil
	case mysql.ERR_HEADER:
		e, _ := wire.ParseErr(p)
		return nil, e
	}
	for { // column definitions up to EOF
		if p = rc.read(); p[0] == 0xfe && len(p) < 9 {
			break
		}
	}
	var rows []string
	for {
		p = rc.read()
		switch {
		case p[0] == 0xfe && len(p) < 9:
			return rows, nil
		case p[0] == mysql.ERR_HEADER:
			e, _ := wire.ParseErr(p)
			return rows, e
		}
		rows = append(rows, firstColumn(p))
	}
}

func firstColumn(p []byte) string {
	if p[0] == 0xfb {
		return "NULL"
	}
	n := int(p[0])
	if n >= 251 || 1+n > len(p) {
		return fmt.Sprintf("(unparsed %q)", p)
	}
	return string(p[1 : 1+n])
}

// expectOK fails unless p is an OK packet.
func expectOK(t testing.TB, p []byte) {
	t.Helper()
	if len(p) == 0 || p[0] != mysql.OK_HEADER {
		if e, err := wire.ParseErr(p); err == nil {
			t.Fatalf("want OK, got %v", e)
		}
		t.Fatalf("want OK, got %q", p)
	}
}

// expectErr fails unless p is an ERR packet with code.
func expectErr(t testing.TB, p []byte, code uint16) *mysql.MyError {
	t.Helper()
	e, err := wire.ParseErr(p)
	if err != nil {
		t.Fatalf("want ERR %d, got %q", code, p)
	}
	if e.Code != code {
		t.Fatalf("want ERR %d, got %v", code, e)
	}
	return e
}

func errCode(err error) uint16 {
	var se *mysql.MyError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
