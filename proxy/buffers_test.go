package proxy

import (
	"sync"
	"testing"
	"time"
)

// TestFreeListBounded: a full free list drops what it is given, and the
// trimmer returns the memory once per wave of drops, at most once per
// its interval.
func TestFreeListBounded(t *testing.T) {
	var mu sync.Mutex
	var trims []time.Time
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(trims) }
	const every = 300 * time.Millisecond
	tr := &trimmer{after: 4 << 10, settle: 20 * time.Millisecond, every: every,
		free: func() { mu.Lock(); trims = append(trims, time.Now()); mu.Unlock() }}
	f := newFreeList(func() []byte { return make([]byte, 1<<10) }, 1<<10, tr)
	bufs := make([][]byte, freeListLen+10)
	for i := range bufs {
		bufs[i] = f.get()
	}
	for _, b := range bufs {
		f.put(b)
	}
	if n := len(f.spare); n != freeListLen {
		t.Fatalf("%d spare buffers, want the bound %d", n, freeListLen)
	}
	if b := f.get(); len(b) != 1<<10 {
		t.Fatalf("a spare buffer of %d bytes", len(b))
	}
	waitFor(t, 5*time.Second, func() bool { return count() == 1 })
	// A second wave: one more trim, no sooner than every after the first.
	for range 10 {
		f.put(make([]byte, 1<<10))
	}
	waitFor(t, 5*time.Second, func() bool { return count() == 2 })
	mu.Lock()
	defer mu.Unlock()
	if gap := trims[1].Sub(trims[0]); gap < every-10*time.Millisecond {
		t.Fatalf("trims %s apart, want at least %s", gap, every)
	}
}
