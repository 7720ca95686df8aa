package wire

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestPacketFraming(t *testing.T) {
	for _, n := range []int{0, 1, 250, MaxPayload - 1, MaxPayload, MaxPayload + 10} {
		payload := bytes.Repeat([]byte{0xab}, n)
		var buf bytes.Buffer
		next, err := WritePacket(&buf, 3, payload)
		if err != nil {
			t.Fatal(err)
		}
		frames := n/MaxPayload + 1
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
	stage2 := Stage2(stage1)
	reply := NativeScramble(nonce, stage1)
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
	if h := NativeHash("secret"); h != "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7" {
		t.Fatalf("hash %s", h)
	}
	if s2, err := ParseNativeHash(NativeHash("secret")); err != nil || !bytes.Equal(s2, stage2) {
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
	enc, err := EncryptSha2Password(&key.PublicKey, nonce, []byte("a long password, longer than the nonce"))
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
		Caps: 0x81fff7fe, ExtCaps: MariaDBCacheMetadata, Charset: 45, Status: 2, AuthPlugin: PluginNative}
	got, err := ParseGreeting(g.Marshal())
	if err != nil || !reflect.DeepEqual(got, g) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := ParseGreeting(ErrPayload(1040, "08004", "Too many connections")); err == nil {
		t.Fatal("ERR greeting accepted")
	} else if se := (*ServerError)(nil); !errors.As(err, &se) || se.Code != 1040 {
		t.Fatalf("ERR greeting: %v", err)
	}
}

func TestHandshakeResponseRoundTrip(t *testing.T) {
	for _, h := range []*HandshakeResponse{
		{Caps: ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectWithDB | ClientConnectAttrs,
			MaxPacket: 1 << 24, Charset: 45, User: "shop.u", AuthResponse: bytes.Repeat([]byte{7}, 20),
			Database: "app", AuthPlugin: PluginNative, Attrs: []byte("\x03_os\x05Linux"), HasAttrs: true},
		{Caps: ClientMySQL | ClientProtocol41 | ClientPluginAuthLenencData | ClientPluginAuth,
			User: "x", AuthResponse: bytes.Repeat([]byte{1}, 300), AuthPlugin: PluginCachingSha2},
		{Caps: ClientProtocol41 | ClientSSL, ExtCaps: MariaDBProgress, Charset: 8, SSLRequest: true},
		{Caps: ClientProtocol41, User: "old", AuthResponse: []byte("abc")},
	} {
		got, err := ParseHandshakeResponse(h.Marshal())
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Fatalf("\n got %+v, %v\nwant %+v", got, err, h)
		}
	}
}

func TestChangeUserRoundTrip(t *testing.T) {
	caps := ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectAttrs | ClientPluginAuthLenencData
	c := &ChangeUser{User: "shop.v", AuthResponse: bytes.Repeat([]byte{9}, 20), Database: "app",
		Charset: 45, HasCharset: true, AuthPlugin: PluginNative, HasPlugin: true, Attrs: []byte("\x01a\x01b"), HasAttrs: true}
	got, err := ParseChangeUser(c.Marshal(caps), caps)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestAuthSwitch(t *testing.T) {
	nonce := NewNonce()
	plugin, data, err := ParseAuthSwitch(AuthSwitchPayload(PluginNative, nonce))
	if err != nil || plugin != PluginNative || !bytes.Equal(data, nonce) {
		t.Fatalf("%q %q %v", plugin, data, err)
	}
}

func TestErrPacket(t *testing.T) {
	e, err := ParseErr(ErrPayload(1045, "28000", "Access denied"))
	if err != nil || e.Code != 1045 || e.State != "28000" || e.Message != "Access denied" {
		t.Fatalf("%+v %v", e, err)
	}
}

func TestCapNames(t *testing.T) {
	if got := CapNames(ClientSSL | ClientQueryAttributes); !reflect.DeepEqual(got, []string{"CLIENT_SSL", "CLIENT_QUERY_ATTRIBUTES"}) {
		t.Fatal(got)
	}
	if got := ExtCapNames(MariaDBCacheMetadata | 1<<10); !reflect.DeepEqual(got, []string{"MARIADB_CLIENT_CACHE_METADATA", "MARIADB_CLIENT_BIT_42"}) {
		t.Fatal(got)
	}
}
