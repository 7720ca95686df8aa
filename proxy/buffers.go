package proxy

import (
	"bufio"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// A session's buffers (client reader and writer, response buffer: 16 KiB
// each) are lent to free lists while it idles and taken back for its next
// command, so that thousands of idle client connections cost little
// memory. The lists are bounded: a sync.Pool would keep every buffer of a
// wave of sessions that went idle together until two garbage collections
// later, and an idle daemon collects only every two minutes. Past the
// bound a buffer is dropped, and once enough has been dropped the memory
// goes back to the operating system (trimmer).
const freeListLen = 256

var (
	trim     = &trimmer{after: 16 << 20, settle: time.Second, every: 10 * time.Second, free: debug.FreeOSMemory}
	readers  = newFreeList(func() *bufio.Reader { return bufio.NewReaderSize(nil, clientBufSize) }, clientBufSize, trim)
	writers  = newFreeList(func() *bufio.Writer { return bufio.NewWriterSize(nil, respBufSize) }, respBufSize, trim)
	respBufs = newFreeList(func() []byte { return make([]byte, respBufSize) }, respBufSize, trim)
)

// freeList is a bounded list of spare buffers of one kind.
type freeList[T any] struct {
	spare chan T
	alloc func() T
	size  int // bytes of one buffer
	trim  *trimmer
}

func newFreeList[T any](alloc func() T, size int, trim *trimmer) *freeList[T] {
	return &freeList[T]{spare: make(chan T, freeListLen), alloc: alloc, size: size, trim: trim}
}

// get returns a spare buffer, or a new one.
func (f *freeList[T]) get() T {
	select {
	case b := <-f.spare:
		return b
	default:
		return f.alloc()
	}
}

// put keeps b as a spare, or drops it when the list is full.
func (f *freeList[T]) put(b T) {
	select {
	case f.spare <- b:
	default:
		f.trim.dropped(f.size)
	}
}

// trimmer returns dropped buffers' memory to the operating system: once
// after bytes have been dropped, settle later (a wave of sessions going
// idle drops theirs over a few seconds), and at most once per every. A
// trim is a garbage collection and a scavenge, tens of milliseconds of
// CPU; the runtime's own would hold the memory for minutes.
type trimmer struct {
	after         int64
	settle, every time.Duration
	free          func()

	pending   atomic.Int64
	scheduled atomic.Bool
	last      atomic.Int64 // unix nanoseconds of the last trim
}

func (t *trimmer) dropped(n int) {
	if t.pending.Add(int64(n)) < t.after || !t.scheduled.CompareAndSwap(false, true) {
		return
	}
	wait := t.settle
	if next := time.Until(time.Unix(0, t.last.Load()).Add(t.every)); next > wait {
		wait = next
	}
	time.AfterFunc(wait, func() {
		t.pending.Store(0)
		t.free()
		t.last.Store(time.Now().UnixNano())
		t.scheduled.Store(false)
		// Drops during the trim could not schedule the next one.
		t.dropped(0)
	})
}
