//go:build linux

package proxy

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The relay's event loops move the bytes of plain (non-TLS) sessions the
// way haproxy does: one epoll_wait, then one read and one write per ready
// socket. A goroutine per direction costs more per round trip: after
// each message Go's net.Conn reads again to find the socket empty
// (EAGAIN), parks the goroutine, and the runtime wakes it through its
// poller and scheduler. On a 2-core machine running the database too,
// those extra reads and wake-ups made the relay slower than haproxy; see
// BENCHMARKS.md.
//
// The loops are shared by every Server and started on first use, like
// Go's own network poller; they hold no resources of their own once
// their sessions end.
var (
	loopsOnce sync.Once
	loops     []*eventLoop
	loopsErr  error
	loopNext  atomic.Uint32
)

// pickLoop returns the event loop with the fewest sessions for a new one,
// so that long-lived sessions piling up on one loop do not leave the next
// busy session sharing its thread while another loop idles (haproxy also
// hands a connection to its least loaded thread). Ties go round robin.
func pickLoop() (*eventLoop, error) {
	loopsOnce.Do(func() {
		for range loopCount() {
			l, err := newEventLoop()
			if err != nil {
				loopsErr = err
				return
			}
			loops = append(loops, l)
			go l.run()
		}
	})
	if loopsErr != nil {
		return nil, loopsErr
	}
	return leastLoaded(loops, int(loopNext.Add(1)%uint32(len(loops)))), nil
}

// leastLoaded returns the loop with the fewest sessions, looking from
// start on, so that ties go to the first one found from there.
func leastLoaded(loops []*eventLoop, start int) *eventLoop {
	best := loops[start]
	for i := 1; i < len(loops); i++ {
		if l := loops[(start+i)%len(loops)]; l.sessions.Load() < best.sessions.Load() {
			best = l
		}
	}
	return best
}

// loopCount is one loop per CPU Go may use, as haproxy runs one thread per
// core.
func loopCount() int { return runtime.GOMAXPROCS(0) }

// eventLoop owns one epoll instance and the sessions registered on it.
// Only its own goroutine reads, writes or closes those sessions' sockets.
type eventLoop struct {
	epfd    int
	tid     atomic.Int32 // the loop's thread, once run has started
	scratch []byte       // each read lands here; only bytes a peer cannot take yet are copied out

	sessions atomic.Int32 // len(conns), read without the lock by pickLoop

	mu     sync.Mutex
	conns  map[uint64]*loopConn
	nextID uint64
}

// scratchSize is the most one read takes in. 64 KiB keeps bulk transfers
// (results, LOAD DATA) at a few syscalls per 64 KiB.
const scratchSize = 64 << 10

func newEventLoop() (*eventLoop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &eventLoop{epfd: fd, scratch: make([]byte, scratchSize), conns: map[uint64]*loopConn{}}, nil
}

// Each socket's epoll data is its session's id shifted left by one, with
// the low bit telling which side it is.
const (
	sideClient = 0
	sideServer = 1
)

func (l *eventLoop) run() {
	// One thread for the loop's life. Unlocked, the goroutine moved
	// between two threads at each yield below, and those threads changed
	// CPU at nearly every wake-up: 16,000 migrations a second against
	// haproxy's 150 (oltp_read_write at 1 thread), each a cold cache and
	// a cross-CPU wake-up on the round trip's critical path. Locked, the
	// kernel keeps the loop where it ran: 630 a second, and that cell
	// went from 0.98 of haproxy to 1.05 (BenchmarkRelays).
	runtime.LockOSThread()
	l.tid.Store(int32(unix.Gettid()))
	batchPolicy()
	events := make([]unix.EpollEvent, 128)
	lastYield := time.Now()
	for {
		// A goroutine that only makes system calls never passes through
		// the scheduler, and after 10ms of that Go's sysmon takes its P
		// at every one of its 20µs rounds: measured, 6,000 wake-ups a
		// second of a thread that competes for the same two cores.
		// Yielding every 5ms keeps sysmon asleep.
		if time.Since(lastYield) > 5*time.Millisecond {
			runtime.Gosched()
			lastYield = time.Now()
		}
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Only a bug can get here (a bad epfd or buffer): say so
			// and keep going rather than stop every session.
			slog.Error("relay event loop: epoll_wait failed", "component", "proxy", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, ev := range events[:n] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if c := l.lookup(key >> 1); c != nil {
				c.handle(int(key&1), ev.Events)
			}
		}
	}
}

// batchPolicy puts the calling thread under SCHED_BATCH, which differs
// from the default policy in one way: a waking batch thread does not
// preempt the one running. Without it, each reply mariadbd wrote woke the
// loop onto the CPU at once, to forward that one message and block again;
// as batch, the loop runs when mariadbd blocks and finds more sessions
// ready per wake-up. Measured against the default policy in one run
// (BenchmarkRelays, sysbench):
//   - relay CPU per read_write transaction 16% lower at 4 threads and
//     23% lower at 16;
//   - serverlessd/haproxy read_write/4 1.03 against 0.94, point_select/16
//     0.93 against 0.88; the 1-thread cells level;
//   - with two CPU-bound processes beside it, point_select/1 ran 2.5
//     times faster and its p95 latency fell from 0.07 to 0.04 ms.
//
// Setting it needs no privilege. Where it is refused (a seccomp profile),
// the loop runs under the default policy, only slower. No other thread
// inherits it: Go starts new threads through a template thread whenever
// the creating one is locked (runtime.newm), and mariadbd is started from
// other goroutines, so never from this thread.
func batchPolicy() {
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_BATCH}, 0); err != nil {
		slog.Warn("relay event loop: cannot set SCHED_BATCH; running under the default policy", "component", "proxy", "err", err)
	}
}

func (l *eventLoop) lookup(id uint64) *loopConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[id]
}

// add registers both sockets of c for reading. It holds l.mu throughout,
// so the loop cannot handle (and maybe close) c before both are in.
func (l *eventLoop) add(c *loopConn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	c.id = l.nextID
	c.cev, c.sev = unix.EPOLLIN, unix.EPOLLIN
	err := l.ctl(unix.EPOLL_CTL_ADD, c.cfd, c.id, sideClient, c.cev)
	if err == nil {
		if err = l.ctl(unix.EPOLL_CTL_ADD, c.sfd, c.id, sideServer, c.sev); err != nil {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.cfd, nil)
		}
	}
	if err == nil {
		l.conns[c.id] = c
		l.sessions.Add(1)
	}
	return err
}

// remove unregisters c; its sockets stay open.
func (l *eventLoop) remove(c *loopConn) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.cfd, nil)
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.sfd, nil)
	l.mu.Lock()
	if _, ok := l.conns[c.id]; ok {
		delete(l.conns, c.id)
		l.sessions.Add(-1)
	}
	l.mu.Unlock()
}

func (l *eventLoop) ctl(op, fd int, id uint64, side int, events uint32) error {
	key := id<<1 | uint64(side)
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}
