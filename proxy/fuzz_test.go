package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// FuzzClientHandshake feeds arbitrary bytes to a session as the client's
// first packet (first, framed) followed by raw bytes (rest). Nothing may
// panic, every session must end, and no input may wake a compute: a login
// needs a reply made with the session's random nonce. The seed corpus is
// under testdata/fuzz/FuzzClientHandshake (real mariadb CLI packets).
func FuzzClientHandshake(f *testing.F) {
	native := (&wire.HandshakeResponse{Caps: rawCaps | mysql.CLIENT_CONNECT_WITH_DB, User: "shop.u",
		AuthResponse: bytes.Repeat([]byte{1}, 20), Database: "app", AuthPlugin: mysql.AUTH_NATIVE_PASSWORD}).Marshal()
	sha2 := (&wire.HandshakeResponse{Caps: rawCaps, User: "shop.u", AuthResponse: bytes.Repeat([]byte{2}, 32),
		AuthPlugin: mysql.AUTH_CACHING_SHA2_PASSWORD}).Marshal()
	other := (&wire.HandshakeResponse{Caps: rawCaps, User: "shop.u", AuthPlugin: "dialog"}).Marshal()
	f.Add(native, []byte(nil))
	f.Add(sha2, frame(3, []byte{wire.CachingSha2RequestPubKey}))
	f.Add(sha2, frame(3, bytes.Repeat([]byte{5}, 256)))
	f.Add(other, frame(3, bytes.Repeat([]byte{3}, 20)))

	dir := &testDir{projects: map[string]string{}, roles: map[string]map[string]string{}}
	dir.addProject("shop", "p-shop", map[string]string{"u": "pw"})
	waker := &testWaker{addrs: map[string]string{"p-shop": "unix:/nonexistent"}, fail: map[string]error{},
		calls: map[string]int{}, acts: map[string]*compute.Activity{}, started: map[string]bool{}}
	srv, err := New(Config{DataDir: sharedData, HandshakeTimeout: time.Second, RateLimitBurst: -1},
		dir, waker, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, rest []byte) {
		cc, sc := net.Pipe()
		done := make(chan struct{})
		srv.wg.Add(1)
		go func() { srv.handle(sc); close(done) }()
		go func() {
			cc.SetWriteDeadline(time.Now().Add(2 * time.Second))
			cc.Write(frame(1, first))
			cc.Write(rest)
			cc.Close() // the server sees EOF instead of waiting for more
		}()
		cc.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, cc)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("session did not end")
		}
		if n := waker.total.Load(); n != 0 {
			t.Fatalf("Wake called %d times", n)
		}
	})
}

func frame(seq byte, p []byte) []byte {
	b, _ := wire.AppendPacket(nil, seq, p)
	return b
}
