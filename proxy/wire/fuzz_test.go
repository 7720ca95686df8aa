package wire

import (
	"bytes"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// FuzzParseHandshakeResponse: no input panics, and whatever parses
// re-encodes to something that parses to the same fields. The seed corpus
// (testdata/fuzz) holds real packets from the mariadb 10.11 CLI.
func FuzzParseHandshakeResponse(f *testing.F) {
	f.Add((&HandshakeResponse{Caps: mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_CONNECT_WITH_DB |
		mysql.CLIENT_CONNECT_ATTRS | mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, User: "shop.u", AuthResponse: bytes.Repeat([]byte{1}, 20),
		Database: "app", AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, Attrs: []byte("\x01a\x01b"), HasAttrs: true}).Marshal())
	f.Add((&HandshakeResponse{Caps: mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH,
		User: "u", AuthResponse: bytes.Repeat([]byte{2}, 32), AuthPlugin: mysql.AUTH_CACHING_SHA2_PASSWORD}).Marshal())
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := ParseHandshakeResponse(p)
		if err != nil {
			return
		}
		if h.SSLRequest {
			return
		}
		h2, err := ParseHandshakeResponse(h.Marshal())
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		if h2.User != h.User || !bytes.Equal(h2.AuthResponse, h.AuthResponse) || h2.Database != h.Database ||
			h2.AuthPlugin != h.AuthPlugin || !bytes.Equal(h2.Attrs, h.Attrs) || h2.Caps != h.Caps {
			t.Fatalf("round trip changed the response:\n%+v\n%+v", h, h2)
		}
	})
}

// FuzzParseChangeUser: COM_CHANGE_USER is parsed after login, from
// authenticated clients, but must not panic either.
func FuzzParseChangeUser(f *testing.F) {
	caps := mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_CONNECT_ATTRS
	f.Add((&ChangeUser{User: "shop.v", AuthResponse: bytes.Repeat([]byte{9}, 20), Database: "app",
		Charset: 45, HasCharset: true, AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, HasPlugin: true}).Marshal(caps), caps)
	f.Fuzz(func(t *testing.T, p []byte, caps uint32) {
		ParseChangeUser(p, caps)
	})
}

// FuzzParseGreeting: backends are trusted, but a wrong address could point
// the proxy at anything.
func FuzzParseGreeting(f *testing.F) {
	f.Add((&Greeting{ServerVersion: "5.5.5-10.11.19-MariaDB", Nonce: NewNonce(), Caps: 0x81fff7fe,
		AuthPlugin: mysql.AUTH_NATIVE_PASSWORD}).Marshal())
	f.Fuzz(func(t *testing.T, p []byte) {
		ParseGreeting(p)
		ParseAuthSwitch(p)
		ParseErr(p)
	})
}
