package proxy

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

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
const rawCaps = wire.ClientProtocol41 | wire.ClientSecureConnection | wire.ClientPluginAuth |
	wire.ClientPluginAuthLenencData | wire.ClientLongFlag | wire.ClientTransactions | wire.ClientMultiResults

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
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
	rc.caps |= wire.ClientSSL
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
	rc.login(user, wire.PluginNative, wire.NativeScramble(rc.greet.Nonce, wire.Stage1([]byte(pw))), 0)
	return rc.read()
}

// sha2Scramble is what a MySQL 8 client sends first for caching_sha2_password.
func sha2Scramble(pw string, nonce []byte) []byte {
	h1 := sha256.Sum256([]byte(pw))
	h2 := sha256.Sum256(h1[:])
	h := sha256.New()
	h.Write(h2[:])
	h.Write(nonce)
	h3 := h.Sum(nil)
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3
}

// loginSha2 plays a MySQL 8.4 client: caching_sha2_password, then full
// authentication with cleartext over TLS or the RSA exchange.
func (rc *rawClient) loginSha2(user, pw string, pinned *rsa.PublicKey) []byte {
	rc.t.Helper()
	rc.login(user, wire.PluginCachingSha2, sha2Scramble(pw, rc.greet.Nonce), 0)
	p := rc.read()
	if len(p) != 2 || p[0] != wire.AuthMoreHeader || p[1] != wire.CachingSha2PerformFullAuth {
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
	enc, err := wire.EncryptSha2Password(pub, rc.greet.Nonce, []byte(pw))
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
	rc.write(append([]byte{wire.ComQuery}, q...))
	return rc.result()
}

// result reads an OK, an ERR, or a text result set.
func (rc *rawClient) result() ([]string, error) {
	p := rc.read()
	switch p[0] {
	case wire.OKHeader:
		return nil, nil
	case wire.ErrHeader:
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
		case p[0] == wire.ErrHeader:
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
	if len(p) == 0 || p[0] != wire.OKHeader {
		if e, err := wire.ParseErr(p); err == nil {
			t.Fatalf("want OK, got %v", e)
		}
		t.Fatalf("want OK, got %q", p)
	}
}

// expectErr fails unless p is an ERR packet with code.
func expectErr(t testing.TB, p []byte, code uint16) *wire.ServerError {
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
	var se *wire.ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
