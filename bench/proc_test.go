package bench

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProcMigrations moves this test's thread from one CPU to another and
// back and expects the count to rise. On a one-CPU machine there is
// nowhere to move, and the count must still read.
func TestProcMigrations(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)
	before, err := ProcMigrations(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return
	}
	for _, cpu := range []int{cpus[0], cpus[1], cpus[0]} {
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched() // let the kernel move the thread now
	}
	after, err := ProcMigrations(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before+2 {
		t.Fatalf("migrations went from %d to %d after two forced moves", before, after)
	}
}
