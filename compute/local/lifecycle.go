package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// Start runs the compute's mariadbd, or finds the one that already runs,
// and returns once the admin account can log in over the socket.
func (d *Driver) Start(ctx context.Context, c *store.Compute) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return "", err
	}
	sz, err := sizingFor(c.Spec)
	if err != nil {
		return "", err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if inst := d.current(c.ID, l); inst != nil {
		done, err := d.reuse(ctx, inst, l)
		if err != nil {
			return "", err
		}
		if done {
			return l.address(), nil
		}
	}
	if !l.provisioned() {
		return "", fmt.Errorf("compute %s: %w", c.ID, compute.ErrNotProvisioned)
	}
	if err := d.startNew(ctx, c.ID, l, sz); err != nil {
		return "", err
	}
	return l.address(), nil
}

// reuse handles a Start on a compute whose mariadbd runs already: never a
// second mariadbd on one datadir. It reports done when inst serves; when
// inst is stopping, it waits for the exit so that the caller starts afresh.
func (d *Driver) reuse(ctx context.Context, inst *instance, l layout) (done bool, err error) {
	d.mu.Lock()
	stopping, ready := inst.stopping, inst.ready
	d.mu.Unlock()
	if stopping {
		select {
		case <-inst.done:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if ready && !inst.adopted {
		return true, nil
	}
	// An adopted mariadbd may still be starting (its daemon died mid-start),
	// or be shutting down (its daemon was stopping it): then start afresh.
	if err := d.waitReady(ctx, inst, l); err != nil {
		select {
		case <-inst.done:
			return false, nil
		default:
			return false, err
		}
	}
	return true, nil
}

// startNew launches mariadbd and waits until it serves. On failure or
// cancellation the half-started process is stopped in the background.
func (d *Driver) startNew(ctx context.Context, id string, l layout, sz sizing) error {
	t0 := time.Now()
	inst, err := d.launch(l, sz)
	if err != nil {
		return fmt.Errorf("start compute %s: %w", id, err)
	}
	if err := d.waitReady(ctx, inst, l); err != nil {
		d.terminate(inst)
		return fmt.Errorf("start compute %s: %w", id, err)
	}
	d.mu.Lock()
	inst.ready = true
	exited := inst.exited
	d.mu.Unlock()
	if exited { // died between the login and now: the exit handler was not told
		<-inst.done
		return fmt.Errorf("start compute %s: %w", id, inst.exitErr)
	}
	d.log.Info("compute started", "compute", id, "pid", inst.pid, "duration", time.Since(t0))
	return nil
}

// Stop shuts the compute's mariadbd down gracefully (SIGTERM: InnoDB flushes
// and dumps its buffer pool list), with SIGKILL past the stop timeout. It
// returns when the process has exited, or with ctx's error while the stop
// carries on in the background.
func (d *Driver) Stop(ctx context.Context, c *store.Compute) error {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return err
	}
	unlock, err := d.lock(ctx, c.ID)
	if err != nil {
		return err
	}
	defer unlock()
	return d.stopLocked(ctx, c.ID, l)
}

// stopLocked stops the compute; the caller holds its lock.
func (d *Driver) stopLocked(ctx context.Context, id string, l layout) error {
	inst := d.current(id, l)
	if inst == nil {
		return nil
	}
	d.terminate(inst)
	select {
	case <-inst.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop compute %s: %w", id, ctx.Err())
	}
}

// terminate sends SIGTERM once and, in the background, SIGKILL if the
// process outlives the stop timeout. Marking it stopping first keeps its
// exit from being reported as a crash.
func (d *Driver) terminate(inst *instance) {
	d.mu.Lock()
	first := !inst.stopping
	inst.stopping = true
	d.mu.Unlock()
	if !first {
		return
	}
	t0 := time.Now()
	if err := inst.proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		d.log.Warn("cannot signal mariadbd", "compute", inst.id, "pid", inst.pid, "err", err)
	}
	go func() {
		timer := time.NewTimer(d.opts.StopTimeout)
		defer timer.Stop()
		select {
		case <-inst.done:
			d.log.Info("compute stopped", "compute", inst.id, "pid", inst.pid, "duration", time.Since(t0))
		case <-timer.C:
			d.log.Warn("mariadbd did not stop in time: sending SIGKILL", "compute", inst.id, "pid", inst.pid,
				"timeout", d.opts.StopTimeout)
			_ = inst.proc.Kill()
			<-inst.done
			d.log.Info("compute killed", "compute", inst.id, "pid", inst.pid, "duration", time.Since(t0))
		}
	}()
}

// current returns the compute's running instance: the tracked one, else one
// adopted from the pid file. The caller holds the compute's lock.
func (d *Driver) current(id string, l layout) *instance {
	if inst := d.tracked(id); inst != nil {
		return inst
	}
	return d.adopt(id, l)
}

// adopt takes over a mariadbd that an earlier daemon started, found through
// the pid file. The pid must run mariadbd with this compute's my.cnf, or the
// file is stale (the pid may since belong to anything) and is removed.
func (d *Driver) adopt(id string, l layout) *instance {
	pid, err := readPidFile(l.pidFile())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(l.pidFile())
		}
		return nil
	}
	if !d.isOurs(pid, l) {
		d.log.Info("removing stale pid file", "compute", id, "pid", pid)
		removePidFile(l.pidFile(), pid)
		return nil
	}
	// Take the handles first and check again after: both then refer to the
	// verified process even if the pid is recycled later. (FindProcess holds
	// a pidfd too, so signals never reach another process.)
	pidfd := openPidfd(pid)
	proc, err := os.FindProcess(pid)
	if err != nil || !d.isOurs(pid, l) {
		if pidfd != nil {
			pidfd.Close()
		}
		return nil
	}
	var offset int64
	if info, ok := statOK(l.logFile()); ok {
		offset = info.Size()
	}
	// An adopted mariadbd stays in the cgroup its start put it in, with
	// those limits; this driver holds no handle to it, and the next start
	// of the compute opens the group again with the spec's limits.
	inst := &instance{
		id: id, pid: pid, proc: proc, adopted: true, ready: true,
		started: time.Now(), logOffset: offset, done: make(chan struct{}),
	}
	d.track(inst)
	go d.watch(inst, l, pidfd)
	d.log.Info("adopted running mariadbd", "compute", id, "pid", pid)
	return inst
}

// isOurs reports whether pid is a live mariadbd run on this compute's
// my.cnf, from /proc/<pid>/cmdline.
func (d *Driver) isOurs(pid int, l layout) bool {
	if !alive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	switch filepath.Base(args[0]) {
	case "mariadbd", "mysqld":
	default:
		return false
	}
	want := "--defaults-file=" + l.cnf()
	for _, a := range args[1:] {
		if a == want {
			return true
		}
	}
	return false
}

// Running lists the computes whose mariadbd runs, adopting those left by an
// earlier daemon. Computes being stopped are left out.
func (d *Driver) Running(ctx context.Context) ([]compute.Instance, error) {
	entries, err := os.ReadDir(d.opts.Dir)
	if err != nil {
		return nil, err
	}
	var out []compute.Instance
	for _, e := range entries {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		inst, err := d.find(ctx, e.Name())
		if err != nil {
			return nil, err
		}
		if inst == nil {
			continue
		}
		d.mu.Lock()
		stopping := inst.stopping
		d.mu.Unlock()
		if !stopping {
			l := layout{root: filepath.Join(d.opts.Dir, e.Name())}
			out = append(out, compute.Instance{ComputeID: e.Name(), Address: l.address(), PID: inst.pid})
		}
	}
	return out, nil
}

// find is current for callers that do not hold the compute's lock: the lock
// is taken only when adoption must look at the pid file.
func (d *Driver) find(ctx context.Context, id string) (*instance, error) {
	if inst := d.tracked(id); inst != nil {
		return inst, nil
	}
	l, err := d.layoutFor(id)
	if err != nil {
		return nil, nil // not a folder this driver could have made
	}
	unlock, err := d.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return d.current(id, l), nil
}
