//go:build linux && realnode

package realnode

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"syscall"
	"testing"
)

// bridgeGateway is the CNI bridge's address: the Pods' gateway, and the
// host as Pods see it.
const bridgeGateway = "10.244.0.1"

// forwardPostgres makes the test's PostgreSQL (pgtest: 127.0.0.1 only)
// reachable from Pods, by a TCP forwarder on the bridge's address, and
// returns the DSN rewritten to it. The forwarder binds with IP_FREEBIND:
// the bridge gets its address with the first Pod's network, which may
// come after. Connections arrive at PostgreSQL from 127.0.0.1, where it
// asks for the password as from anywhere else.
func forwardPostgres(t *testing.T, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = forward(t, bridgeGateway, u.Host)
	return u.String()
}

// forward listens on host (any port) and forwards each connection to
// target, until the test ends; it returns the listener's address.
func forward(t *testing.T, host, target string) string {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_FREEBIND, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go pipe(c, target)
		}
	}()
	return ln.Addr().String()
}

// pipe copies both ways between c and a new connection to target, and
// closes both when either side ends.
func pipe(c net.Conn, target string) {
	defer c.Close()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}
