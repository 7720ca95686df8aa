package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"golang.org/x/sys/unix"
)

// loopPair puts a client socket pair and a backend socket pair on an event
// loop, as relayInLoop does, and returns the test's ends: the client and
// the backend (here a unix socket, as the local driver's).
func loopPair(t *testing.T) (client, backend io.ReadWriteCloser, c *loopConn) {
	t.Helper()
	client, proxySide := socketPair(t, "tcp")
	backend, proxyBackend := socketPair(t, "unix")
	// Small client-side buffers, so the loop meets a full client socket
	// after a few KiB.
	client.(*net.TCPConn).SetReadBuffer(16384)
	proxySide.(*net.TCPConn).SetWriteBuffer(16384)
	l, err := pickLoop()
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{s: &Server{}, log: slog.New(slog.DiscardHandler)}
	c = &loopConn{loop: l, ss: ss, lease: (&compute.Activity{}).Acquire(), done: make(chan *loopConn, 1)}
	if c.cfd, err = dupFD(proxySide); err == nil {
		c.sfd, err = dupFD(proxyBackend)
	}
	if err != nil {
		t.Fatal(err)
	}
	proxySide.Close()
	proxyBackend.Close()
	if err := l.add(c); err != nil {
		t.Fatal(err)
	}
	return client, backend, c
}

// TestLoopBackendClosesWhileClientIsSlow: a backend that writes a result
// and closes at once must have all of it reach a client that reads slowly,
// in order. The result fits in the backend's socket buffer, so the close
// follows at once, while the loop still holds bytes the client has not
// taken: a unix socket reports that close right away, unread bytes or not,
// and the loop must neither drop nor reorder them.
func TestLoopBackendClosesWhileClientIsSlow(t *testing.T) {
	client, backend, c := loopPair(t)
	want := make([]byte, 128<<10)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	go func() {
		backend.Write(want)
		backend.Close()
	}()
	time.Sleep(200 * time.Millisecond) // let the loop fill the client's socket and park
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("client got %d bytes, want %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end the session")
	}
	if c.out != int64(len(want)) {
		t.Fatalf("bytes out %d, want %d", c.out, len(want))
	}
}

// TestLoopShutdown: shutdown from another goroutine ends a session the
// loop relays, and the loop closes it.
func TestLoopShutdown(t *testing.T) {
	client, _, c := loopPair(t)
	c.shutdown()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end the session")
	}
	if n, err := client.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("client read %d, %v after shutdown", n, err)
	}
	if c.cfd != -1 || c.sfd != -1 {
		t.Fatalf("descriptors left open: %d %d", c.cfd, c.sfd)
	}
	c.finish(nil) // a second finish must not count the session out twice
	<-c.done
	l := c.loop
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.sessions.Load(); int(n) != len(l.conns) {
		t.Fatalf("the loop counts %d sessions but holds %d", n, len(l.conns))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestLeastLoaded: a new session goes to the loop with the fewest
// sessions, whatever the round-robin start, and ties follow the start.
func TestLeastLoaded(t *testing.T) {
	loops := []*eventLoop{{}, {}, {}}
	loops[0].sessions.Store(3)
	loops[1].sessions.Store(1)
	loops[2].sessions.Store(2)
	for start := range loops {
		if got := leastLoaded(loops, start); got != loops[1] {
			t.Errorf("start %d: picked the loop with %d sessions, want the one with 1", start, got.sessions.Load())
		}
	}
	loops[2].sessions.Store(1)
	if leastLoaded(loops, 2) != loops[2] || leastLoaded(loops, 0) != loops[1] {
		t.Error("a tie did not go to the first least-loaded loop from the start")
	}
}

// TestLoopSchedBatch: a running loop's thread is under SCHED_BATCH, and
// only that thread: the test's own thread keeps the default policy.
func TestLoopSchedBatch(t *testing.T) {
	client, backend, c := loopPair(t)
	// A byte relayed (backend to client: that side is not parsed) proves
	// the loop is past its setup.
	if _, err := backend.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	client.(net.Conn).SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, 1)); err != nil {
		t.Fatalf("the loop did not relay a byte: %v", err)
	}
	tid := int(c.loop.tid.Load())
	if tid == 0 {
		t.Fatal("the loop has not recorded its thread")
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatalf("sched_getattr of the loop's thread %d: %v", tid, err)
	}
	if attr.Policy != unix.SCHED_BATCH {
		t.Fatalf("the loop's thread runs under policy %d, want SCHED_BATCH (%d)", attr.Policy, unix.SCHED_BATCH)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if own, err := unix.SchedGetAttr(0, 0); err != nil || own.Policy != unix.SCHED_NORMAL {
		t.Fatalf("the test's thread: policy %v, %v; want SCHED_NORMAL", own, err)
	}
}
