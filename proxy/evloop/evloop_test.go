//go:build linux

package evloop

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type recorder struct {
	events chan uint32
	ticks  chan struct{}
}

func (r *recorder) Event(side int, ev uint32) {
	if side != 1 {
		return
	}
	select { // the socket stays readable: handlers never block
	case r.events <- ev:
	default:
	}
}

func (r *recorder) Tick(time.Time) {
	select {
	case r.ticks <- struct{}{}:
	default:
	}
}

// TestLoop: a readable socket reaches its handler with its side, Do runs
// on the loop, Tick runs, and Close returns once the loop has stopped.
func TestLoop(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	r := &recorder{events: make(chan uint32, 16), ticks: make(chan struct{}, 1)}
	id, err := l.Add(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Watch(unix.EPOLL_CTL_ADD, fds[1], id, 1, unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	unix.Write(fds[0], []byte("x"))
	select {
	case ev := <-r.events:
		if ev&unix.EPOLLIN == 0 {
			t.Fatalf("events %#x", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	ran := make(chan struct{})
	if !l.Do(func() { close(ran) }) {
		t.Fatal("Do refused on an open loop")
	}
	for _, c := range []chan struct{}{ran, r.ticks} {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatal("Do or Tick did not run")
		}
	}
	if l.sessions.Load() != 1 {
		t.Fatalf("sessions %d", l.sessions.Load())
	}
	l.Remove(id)
	l.Close()
	if l.Do(func() {}) {
		t.Fatal("Do accepted on a closed loop")
	}
}

// TestFirstHandlerTicks: a loop without handlers waits with no timeout,
// and its first handler still gets ticks, with no socket event to wake
// the loop.
func TestFirstHandlerTicks(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	time.Sleep(2 * TickInterval) // the loop is waiting, without a timeout
	r := &recorder{events: make(chan uint32, 1), ticks: make(chan struct{}, 1)}
	id, err := l.Add(r)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Remove(id)
	for range 2 {
		select {
		case <-r.ticks:
		case <-time.After(4 * TickInterval):
			t.Fatal("a handler added to an idle loop gets no ticks")
		}
	}
}

// TestPickPacks: sessions go to the first loop while it is under half a
// CPU busy, then to the first one that is, then to the least busy.
func TestPickPacks(t *testing.T) {
	g := &Group{}
	for range 3 {
		l, err := New()
		if err != nil {
			t.Fatal(err)
		}
		g.loops = append(g.loops, l)
	}
	defer g.Close()
	a, b := g.loops[0], g.loops[1]
	for range 3 {
		if g.Pick() != a {
			t.Fatal("an idle group did not pack sessions onto its first loop")
		}
	}
	a.busy.Store(800)
	if g.Pick() != b {
		t.Fatal("a busy first loop got the session while the second idled")
	}
	for _, l := range g.loops {
		l.busy.Store(900)
	}
	b.busy.Store(700)
	if g.Pick() != b {
		t.Fatal("with every loop busy, the session did not go to the least busy")
	}
}

// TestBusyMeasured: a loop whose handler burns CPU reports itself busy.
func TestBusyMeasured(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Add(&recorder{events: make(chan uint32, 1), ticks: make(chan struct{}, 1)}); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(2 * time.Second)
	var spin func()
	spin = func() { // keeps the loop's thread running
		for t0 := time.Now(); time.Since(t0) < 5*time.Millisecond; {
		}
		if time.Now().Before(stop) {
			l.Do(spin)
		}
	}
	l.Do(spin)
	for time.Now().Before(stop) {
		if l.busy.Load() >= packBusy {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("a loop running flat out reported %d per mille busy", l.busy.Load())
}
