//go:build unix

package proxy

import (
	"bufio"
	"net"
	"syscall"
)

// peerAlive reports, without blocking, whether the backend is still
// there and silent between commands: no EOF, no error, no unexpected
// bytes (MariaDB writes an error before closing a connection it kills).
func peerAlive(c net.Conn, br *bufio.Reader) bool {
	if br.Buffered() > 0 {
		return false
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK) || n < 0 && err == syscall.EINTR
		return true
	})
	return err == nil && alive
}
