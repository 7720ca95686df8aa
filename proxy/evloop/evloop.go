//go:build linux

// Package evloop runs epoll event loops, each on its own OS thread, for
// the proxy's relay. A loop waits for sockets to be ready and calls their
// handler on its thread, the way haproxy serves connections: one
// epoll_wait, then one read or write per ready socket. Compared with a
// goroutine per connection this saves, per message, the read that finds
// nothing yet (EAGAIN) and the trip through Go's poller and scheduler.
package evloop

import (
	"errors"
	"hash/fnv"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Handler receives the events of the sockets it was added with. It runs
// on the loop's thread and must never block.
type Handler interface {
	// Event reports epoll events on one of the handler's sockets (side 0
	// or 1, as given to Add).
	Event(side int, events uint32)
	// Tick runs about every TickInterval, for timeouts.
	Tick(now time.Time)
}

// ErrClosed is returned by calls on a closed loop.
var ErrClosed = errors.New("evloop: closed")

// Loop is one epoll instance and the goroutine, locked to its thread,
// that waits on it.
type Loop struct {
	epfd    int
	wakefd  int // an eventfd: Do writes it to get the loop's attention
	Scratch []byte

	sessions atomic.Int32
	busy     atomic.Uint32 // per mille of a CPU the loop's thread used over its last tick

	later []func() // Later's work: the loop's thread only

	mu       sync.Mutex
	handlers map[uint64]Handler
	next     uint64
	queue    []func()
	closed   bool
	done     chan struct{}
}

// wakeKey marks the eventfd's events: a handler's key has it only past
// 2^62 handlers.
const wakeKey = -1

// TickInterval is how often handlers' Tick runs.
const TickInterval = 250 * time.Millisecond

// ScratchSize is the most one read takes in: 64 KiB keeps bulk transfers
// at a few system calls per 64 KiB.
const ScratchSize = 64 << 10

// New starts a loop.
func New() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	l := &Loop{epfd: epfd, wakefd: wakefd, Scratch: make([]byte, ScratchSize),
		handlers: map[uint64]Handler{}, done: make(chan struct{})}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Pad: wakeKey} // no handler id reaches it
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	go l.run()
	return l, nil
}

// Add registers a handler with no sockets yet and returns its id.
func (l *Loop) Add(h Handler) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	l.next++
	l.handlers[l.next] = h
	if l.sessions.Add(1) == 1 {
		l.wake() // it may wait without a timeout: ticks start now
	}
	return l.next, nil
}

// wake interrupts the loop's wait.
func (l *Loop) wake() {
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

// Remove unregisters a handler; its sockets must have been taken off with
// Watch(..., 0) or closed.
func (l *Loop) Remove(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.handlers[id]; ok {
		delete(l.handlers, id)
		l.sessions.Add(-1)
	}
}

// Watch sets the events fd is registered for, side telling the handler
// which socket it is: op is unix.EPOLL_CTL_ADD, _MOD or _DEL.
func (l *Loop) Watch(op, fd int, id uint64, side int, events uint32) error {
	if op == unix.EPOLL_CTL_DEL {
		return unix.EpollCtl(l.epfd, op, fd, nil)
	}
	key := id<<1 | uint64(side&1)
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

// Do runs fn on the loop's thread, soon. It reports false if the loop is
// closed.
func (l *Loop) Do(fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, fn)
	l.mu.Unlock()
	l.wake()
	return true
}

// Later runs fn on the loop's thread once the events at hand are
// handled. Only the loop's own thread may call it: unlike Do, it takes
// no lock and wakes nothing.
func (l *Loop) Later(fn func()) { l.later = append(l.later, fn) }

// Close stops the loop once its queued work is done. Handlers still
// registered get no more events; their owners close their sockets.
func (l *Loop) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.wake()
	<-l.done
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

func (l *Loop) run() {
	defer close(l.done)
	// One thread for the loop's life. Unlocked, the goroutine moved
	// between threads at each yield, and those threads changed CPU at
	// nearly every wake-up: a cold cache and a cross-CPU wake-up on the
	// round trip's critical path each time.
	runtime.LockOSThread()
	batchPolicy()
	// The thread goes back to Go's pool when the loop closes: a locked
	// goroutine that exits takes its thread with it, and a child process
	// started from that thread with a parent-death signal (mariadbd)
	// would get the signal.
	defer runtime.UnlockOSThread()
	defer unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0)
	events := make([]unix.EpollEvent, 128)
	lastYield, lastTick := time.Now(), time.Now()
	lastCPU := threadCPU()
	for {
		// A goroutine that only makes system calls never passes through
		// the scheduler, and after 10ms of that Go's sysmon retakes its P
		// at every round, waking a thread that competes for the same
		// cores. Yielding every 5ms keeps sysmon asleep.
		if time.Since(lastYield) > 5*time.Millisecond {
			runtime.Gosched()
			lastYield = time.Now()
		}
		// A loop without handlers has nothing to tick: it sleeps until
		// woken, so that an idle daemon's threads stay asleep. Add wakes
		// it for its first handler.
		timeout := -1
		if l.sessions.Load() > 0 {
			timeout = int(TickInterval / time.Millisecond)
		} else {
			l.busy.Store(0)
		}
		l.runLater() // what the last round's events, queue and ticks left
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			slog.Error("relay event loop: epoll_wait failed", "component", "proxy", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Pad == wakeKey {
				var b [8]byte
				unix.Read(l.wakefd, b[:])
				continue
			}
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if h := l.handler(key >> 1); h != nil {
				h.Event(int(key&1), ev.Events)
			}
		}
		if !l.runQueue() {
			return
		}
		if now := time.Now(); now.Sub(lastTick) >= TickInterval {
			cpu := threadCPU()
			l.busy.Store(uint32(1000 * (cpu - lastCPU) / now.Sub(lastTick)))
			lastTick, lastCPU = now, cpu
			for _, h := range l.all() {
				h.Tick(now)
			}
		}
	}
}

// runLater runs Later's work, and the work that work adds.
func (l *Loop) runLater() {
	for len(l.later) > 0 {
		q := l.later
		l.later = nil
		for _, fn := range q {
			fn()
		}
	}
}

// runQueue runs the work Do queued; false once the loop is closed.
func (l *Loop) runQueue() bool {
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	closed := l.closed
	l.mu.Unlock()
	for _, fn := range q {
		fn()
	}
	return !closed
}

func (l *Loop) handler(id uint64) Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handlers[id]
}

func (l *Loop) all() []Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Handler, 0, len(l.handlers))
	for _, h := range l.handlers {
		out = append(out, h)
	}
	return out
}

// batchPolicy puts the calling thread under SCHED_BATCH, which differs
// from the default policy in one way: a waking batch thread does not
// preempt the one running. Without it each reply mariadbd wrote woke the
// loop onto the CPU at once, to forward that one message and block again;
// as batch, the loop runs when mariadbd blocks and finds more sessions
// ready per wake-up (BENCHMARKS.md has the figures). Setting it needs no
// privilege; where it is refused (a seccomp profile) the loop runs under
// the default policy, only slower. No other thread inherits it: Go starts
// new threads from a template thread whenever the creating one is locked.
func batchPolicy() {
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_BATCH}, 0); err != nil {
		slog.Warn("relay event loop: cannot set SCHED_BATCH; running under the default policy", "component", "proxy", "err", err)
	}
}

// Group is one loop per CPU Go may use.
type Group struct {
	loops []*Loop
}

// NewGroup starts a loop per CPU.
func NewGroup() (*Group, error) {
	g := &Group{}
	for range runtime.GOMAXPROCS(0) {
		l, err := New()
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	return g, nil
}

// packBusy is the share of a CPU (per mille) past which a loop gets
// new sessions only when every loop is past it.
const packBusy = 500

// Pick returns the first loop that used less than half a CPU over its
// last tick, or else the least busy one. Packing sessions onto few loops
// lets each epoll_wait return more of them ready at once, so that a
// wake-up of the loop's thread, and a context switch of the CPU shared
// with mariadbd and the clients, relays more messages.
// Once loops pass the mark, new sessions spread over every CPU Go may
// use. A session stays on its loop until it leaves the event loops.
func (g *Group) Pick() *Loop {
	best := g.loops[0]
	for _, l := range g.loops {
		b := l.busy.Load()
		if b < packBusy {
			return l
		}
		if b < best.busy.Load() {
			best = l
		}
	}
	return best
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// For returns key's loop: always the same one, so that the sessions
// that share something keyed (a compute's backend pool) share a thread.
func (g *Group) For(key string) *Loop {
	h := fnv.New32a()
	h.Write([]byte(key))
	return g.loops[h.Sum32()%uint32(len(g.loops))]
}

// Close stops every loop.
func (g *Group) Close() {
	for _, l := range g.loops {
		l.Close()
	}
}
