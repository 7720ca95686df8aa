package wire

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net"
	"reflect"
	"slices"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
)

func TestPacketFraming(t *testing.T) {
	for _, n := range []int{0, 1, 250, mysql.MaxPayloadLen - 1, mysql.MaxPayloadLen, mysql.MaxPayloadLen + 10} {
		payload := bytes.Repeat([]byte{0xab}, n)
		var buf bytes.Buffer
		next, err := WritePacket(&buf, 3, payload)
		if err != nil {
			t.Fatal(err)
		}
		frames := n/mysql.MaxPayloadLen + 1
		if int(next) != 3+frames {
			t.Fatalf("n=%d: next seq %d, want %d", n, next, 3+frames)
		}
		seq, got, err := ReadPacket(&buf, 1<<25)
		if err != nil || !bytes.Equal(got, payload) || int(seq) != 3+frames-1 || buf.Len() != 0 {
			t.Fatalf("n=%d: seq %d len %d err %v left %d", n, seq, len(got), err, buf.Len())
		}
	}
}

func TestReadPacketLimits(t *testing.T) {
	// The limit is checked from the header, before reading or allocating.
	_, _, err := ReadPacket(bytes.NewReader([]byte{0xff, 0xff, 0x0f, 0}), 1024)
	if !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("want ErrPacketTooLarge, got %v", err)
	}
	_, _, err = ReadPacket(bytes.NewReader([]byte{5, 0, 0, 0, 1, 2}), 1024)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("want ErrUnexpectedEOF, got %v", err)
	}
	// Exactly one packet is consumed: the next bytes stay in the reader.
	r := bytes.NewReader([]byte{1, 0, 0, 0, 9, 0x16, 0x03})
	if _, p, err := ReadPacket(r, 1024); err != nil || !bytes.Equal(p, []byte{9}) || r.Len() != 2 {
		t.Fatalf("read beyond the packet: %v %v left %d", p, err, r.Len())
	}
}

func TestNativeAuth(t *testing.T) {
	nonce := NewNonce()
	for _, c := range nonce {
		if c == 0 || c == '$' || c < 33 || c > 126 {
			t.Fatalf("bad nonce byte %q", c)
		}
	}
	pw := []byte("secret")
	stage1 := Stage1(pw)
	stage2 := mysql.NativePasswordHash(pw)
	reply := NativeScramble(nonce, stage1)
	// From stage1 we compute what go-mysql computes from the cleartext.
	if !bytes.Equal(reply, mysql.CalcNativePassword(nonce, pw)) || !mysql.CompareNativePassword(reply, stage2, nonce) {
		t.Fatal("NativeScramble differs from go-mysql's")
	}
	got := RecoverStage1(nonce, reply, stage2)
	if !bytes.Equal(got, stage1) || !VerifyStage1(got, stage2) {
		t.Fatal("stage1 not recovered")
	}
	wrong := NativeScramble(nonce, Stage1([]byte("other")))
	if VerifyStage1(RecoverStage1(nonce, wrong, stage2), stage2) {
		t.Fatal("wrong password verified")
	}
	if VerifyStage1(RecoverStage1(nonce, []byte{1, 2, 3}, stage2), stage2) {
		t.Fatal("short reply verified")
	}
	// MariaDB's PASSWORD('secret').
	if h := mysql.EncodePasswordHex(stage2); h != "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7" {
		t.Fatalf("hash %s", h)
	}
	if s2, err := ParseNativeHash(mysql.EncodePasswordHex(stage2)); err != nil || !bytes.Equal(s2, stage2) {
		t.Fatal("ParseNativeHash")
	}
	for _, bad := range []string{"", "*", "14E65567ABDB5135D0CFD9A70B3032C179A49EE7", "*14E65567ABDB5135D0CFD9A70B3032C179A49EEZ"} {
		if _, err := ParseNativeHash(bad); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
}

func TestSha2RSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	nonce := NewNonce()
	enc, err := mysql.EncryptPassword("a long password, longer than the nonce", nonce, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := DecryptSha2Password(key, nonce, enc)
	if err != nil || string(pw) != "a long password, longer than the nonce" {
		t.Fatalf("%q %v", pw, err)
	}
}

func TestGreetingRoundTrip(t *testing.T) {
	g := &Greeting{ServerVersion: "5.5.5-10.11.19-MariaDB", ConnID: 1_000_000_001, Nonce: NewNonce(),
		Caps: 0x81fff7fe, ExtCaps: MariaDBCacheMetadata, Charset: 45, Status: 2, AuthPlugin: mysql.AUTH_NATIVE_PASSWORD}
	got, err := ParseGreeting(g.Marshal())
	if err != nil || !reflect.DeepEqual(got, g) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := ParseGreeting(ErrPayload(mysql.NewError(mysql.ER_CON_COUNT_ERROR, "Too many connections"))); err == nil {
		t.Fatal("ERR greeting accepted")
	} else if se := (*mysql.MyError)(nil); !errors.As(err, &se) || se.Code != 1040 || se.State != "08004" {
		t.Fatalf("ERR greeting: %v", err)
	}
}

func TestHandshakeResponseRoundTrip(t *testing.T) {
	for _, h := range []*HandshakeResponse{
		{Caps: mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_CONNECT_WITH_DB | mysql.CLIENT_CONNECT_ATTRS,
			MaxPacket: 1 << 24, Charset: 45, User: "shop.u", AuthResponse: bytes.Repeat([]byte{7}, 20),
			Database: "app", AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, Attrs: []byte("\x03_os\x05Linux"), HasAttrs: true},
		{Caps: ClientMySQL | mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | mysql.CLIENT_PLUGIN_AUTH,
			User: "x", AuthResponse: bytes.Repeat([]byte{1}, 300), AuthPlugin: mysql.AUTH_CACHING_SHA2_PASSWORD},
		{Caps: mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SSL, ExtCaps: MariaDBProgress, Charset: 8, SSLRequest: true},
		{Caps: mysql.CLIENT_PROTOCOL_41, User: "old", AuthResponse: []byte("abc")},
	} {
		got, err := ParseHandshakeResponse(h.Marshal())
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Fatalf("\n got %+v, %v\nwant %+v", got, err, h)
		}
	}
}

func TestChangeUserRoundTrip(t *testing.T) {
	caps := mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_CONNECT_ATTRS | mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
	c := &ChangeUser{User: "shop.v", AuthResponse: bytes.Repeat([]byte{9}, 20), Database: "app",
		Charset: 45, HasCharset: true, AuthPlugin: mysql.AUTH_NATIVE_PASSWORD, HasPlugin: true, Attrs: []byte("\x01a\x01b"), HasAttrs: true}
	got, err := ParseChangeUser(c.Marshal(caps), caps)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestAuthSwitch(t *testing.T) {
	nonce := NewNonce()
	plugin, data, err := ParseAuthSwitch(AuthSwitchPayload(mysql.AUTH_NATIVE_PASSWORD, nonce))
	if err != nil || plugin != mysql.AUTH_NATIVE_PASSWORD || !bytes.Equal(data, nonce) {
		t.Fatalf("%q %q %v", plugin, data, err)
	}
}

func TestErrPacket(t *testing.T) {
	e, err := ParseErr(ErrPayload(mysql.NewError(mysql.ER_ACCESS_DENIED_ERROR, "Access denied")))
	if err != nil || e.Code != 1045 || e.State != "28000" || e.Message != "Access denied" {
		t.Fatalf("%+v %v", e, err)
	}
}

func TestCapNames(t *testing.T) {
	all := CapNames(1<<32 - 1)
	if len(all) != 32 || all[0] != "CLIENT_MYSQL" || all[31] != "CLIENT_REMEMBER_OPTIONS" || slices.Contains(all, "") {
		t.Fatal(all)
	}
	if got := CapNames(mysql.CLIENT_SSL | mysql.CLIENT_QUERY_ATTRIBUTES); !reflect.DeepEqual(got, []string{"CLIENT_SSL", "CLIENT_QUERY_ATTRIBUTES"}) {
		t.Fatal(got)
	}
	if got := ExtCapNames(MariaDBCacheMetadata | 1<<10); !reflect.DeepEqual(got, []string{"MARIADB_CLIENT_CACHE_METADATA", "MARIADB_CLIENT_BIT_42"}) {
		t.Fatal(got)
	}
}

// TestConn: the backend side's packet.Conn framing reads no byte past a
// packet, bounds packets, follows sequence ids and keeps the I/O cause.
func TestConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	big := bytes.Repeat([]byte{7}, mysql.MaxPayloadLen+5)
	go func() {
		for _, f := range [][]byte{frame(0, []byte("greeting")), frame(2, big), []byte("raw")} {
			if _, err := b.Write(f); err != nil {
				return
			}
		}
	}()
	c := NewConn(a, 1<<25)
	if p, err := c.ReadPacket(); err != nil || string(p) != "greeting" {
		t.Fatalf("%q %v", p, err)
	}
	go io.ReadFull(b, make([]byte, 4+3)) // our packet, seq 1
	if err := c.WritePacket([]byte("hi!")); err != nil {
		t.Fatal(err)
	}
	if p, err := c.ReadPacket(); err != nil || !bytes.Equal(p, big) {
		t.Fatalf("continued packet: %d bytes, %v", len(p), err)
	}
	// Nothing was read ahead: the next bytes are still the connection's.
	rest := make([]byte, 3)
	if _, err := io.ReadFull(a, rest); err != nil || string(rest) != "raw" {
		t.Fatalf("%q %v", rest, err)
	}

	for _, tc := range []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"too-large", frame(0, make([]byte, 100)), 10, ErrPacketTooLarge},
		{"eof", nil, 10, io.EOF},
		{"half-header", []byte{5, 0}, 10, io.ErrUnexpectedEOF},
		{"half-body", []byte{5, 0, 0, 0, 1}, 10, io.ErrUnexpectedEOF},
	} {
		a, b := net.Pipe()
		go func() { b.Write(tc.in); b.Close() }()
		if _, err := NewConn(a, tc.limit).ReadPacket(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		a.Close()
	}
	a2, b2 := net.Pipe()
	defer a2.Close()
	go b2.Write(frame(3, []byte("x")))
	if _, err := NewConn(a2, 10).ReadPacket(); err == nil {
		t.Error("wrong sequence id accepted")
	}
}

func frame(seq byte, p []byte) []byte {
	b, _ := AppendPacket(nil, seq, p)
	return b
}
