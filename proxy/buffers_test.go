package proxy

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestFreeListBounded: a full free list drops what it is given, and the
// trimmer returns the memory once per wave of drops, not per drop.
func TestFreeListBounded(t *testing.T) {
	var trims atomic.Int32
	tr := &trimmer{after: 4 << 10, settle: 20 * time.Millisecond, every: 300 * time.Millisecond,
		free: func() { trims.Add(1) }}
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
	waitCount(t, &trims, 1, time.Second)
	// Another wave within every: one more trim, once every has passed.
	for range 10 {
		f.put(make([]byte, 1<<10))
	}
	time.Sleep(100 * time.Millisecond)
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims within the interval, want 1", n)
	}
	waitCount(t, &trims, 2, time.Second)
}

func waitCount(t *testing.T, n *atomic.Int32, want int32, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d trims after %s, want %d", n.Load(), limit, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
