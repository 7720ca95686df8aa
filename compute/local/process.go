package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/serverlessd/serverlessd/compute/local/cgroup"
	"github.com/serverlessd/serverlessd/compute/mariadb"
)

// instance is one running mariadbd, started by this driver or adopted from
// an earlier daemon. ready, stopping and exited are guarded by Driver.mu.
type instance struct {
	id        string
	pid       int
	proc      *os.Process // pidfd-backed: signals never reach a recycled pid
	cmd       *exec.Cmd   // nil when adopted
	adopted   bool
	started   time.Time
	logOffset int64         // error log size at launch: where this run's lines begin
	done      chan struct{} // closed once the process has exited
	exitErr   error         // why it exited; set before done is closed
	cgroup    *cgroup.Group // nil without cgroups

	ready    bool // Start saw it serve; an exit from now on is a crash
	stopping bool // a Stop asked it to exit; its exit is no crash
	exited   bool
}

// launch starts mariadbd for the compute, in its cgroup, and tracks it. It
// does not wait for readiness.
func (d *Driver) launch(l layout, sz sizing) (*instance, error) {
	uid, err := d.computeUID(l)
	if err != nil {
		return nil, err
	}
	// my.cnf is the daemon's and only readable by the compute.
	if err := writeConfig(l.cnf(), renderConfig(l, sz.mem, sz.storage, d.opts.Binlog), 0o644); err != nil {
		return nil, err
	}
	if err := writeInitFile(l); err != nil {
		return nil, err
	}
	if err := os.Chmod(l.run(), 0o700); err != nil {
		return nil, err
	}
	cmd, offset, err := d.spawn(l, uid)
	if err != nil {
		return nil, err
	}
	inst := &instance{
		id: filepath.Base(l.root), pid: cmd.Process.Pid, proc: cmd.Process, cmd: cmd,
		started: time.Now(), logOffset: offset, done: make(chan struct{}),
	}
	// The child cannot be reaped before we Wait, so its pid is stable here.
	pidfd := openPidfd(inst.pid)
	if inst.cgroup, err = d.confine(inst.id, inst.pid, sz.cgroup); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if pidfd != nil {
			pidfd.Close()
		}
		return nil, err
	}
	d.pin(inst, sz.cgroup.CPUMilli)
	d.track(inst)
	// Write the pid file at once: mariadbd writes the same one only once it
	// listens, ~100 ms later, and a daemon killed in between must still find
	// this process and never start a second mariadbd on the datadir.
	if err := writePidFile(l.pidFile(), inst.pid); err != nil {
		d.log.Warn("cannot write pid file", "compute", inst.id, "err", err)
	}
	if uid >= 0 { // mariadbd rewrites the file once it listens
		_ = os.Lchown(l.pidFile(), uid, uid)
	}
	go d.watch(inst, l, pidfd)
	return inst, nil
}

// pin gives a compute with a CPU limit its own cores (cpuPlacer). A
// failure only loses the placement: the cgroup still bounds its CPU time.
func (d *Driver) pin(inst *instance, milli int64) {
	cpus := d.cpus.place(inst.id, milli)
	if cpus == nil {
		return
	}
	if err := pinCPUs(inst.pid, cpus); err != nil {
		d.cpus.release(inst.id)
		d.log.Warn("cannot give the compute its own CPUs; it runs on all of them", "compute", inst.id, "cpus", cpus, "err", err)
	}
}

// spawn execs mariadbd on the compute's my.cnf, as uid when it is not -1,
// its output appended to the compute's log, and returns the log's size
// before the start.
func (d *Driver) spawn(l layout, uid int) (*exec.Cmd, int64, error) {
	logFile, offset, err := openLog(l.logFile())
	if err != nil {
		return nil, 0, err
	}
	defer logFile.Close() // the child has its own copy
	if uid >= 0 {
		// mariadbd reopens its error log itself; the init file is its to read.
		for _, p := range []string{l.logFile(), l.initSQL()} {
			if err := os.Lchown(p, uid, uid); err != nil {
				return nil, 0, err
			}
		}
	}

	args := []string{"--defaults-file=" + l.cnf()} // must come first
	if d.user != "" {
		args = append(args, "--user="+d.user)
	}
	cmd := exec.Command(d.mariadbd, args...)
	cmd.Dir = l.root
	cmd.Env = computeEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: a signal to the daemon's process group, or the
	// daemon's death (even by kill -9), leaves mariadbd running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if uid >= 0 {
		// Never root: no supplementary groups, the compute's own uid and gid.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", d.mariadbd, err)
	}
	return cmd, offset, nil
}

// writeConfig writes my.cnf if its content changed. Creating a file is the
// costliest step of a start on some filesystems (~1 ms here), and resumes
// almost always render the same file.
func writeConfig(path string, cnf []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, cnf) {
		return os.Chmod(path, perm)
	}
	return writeFileAtomic(path, cnf, perm)
}

// openLog opens the compute's log for appending, rotating it once it is
// large, and returns its current size.
func openLog(path string) (*os.File, int64, error) {
	const maxLog = 16 << 20
	if info, ok := statOK(path); ok && info.Size() > maxLog {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, info.Size(), nil
}

func statOK(path string) (os.FileInfo, bool) {
	info, err := os.Stat(path)
	return info, err == nil
}

func (d *Driver) track(inst *instance) {
	d.mu.Lock()
	d.procs[inst.id] = inst
	d.mu.Unlock()
}

// tracked returns the compute's live instance, if this driver knows one.
func (d *Driver) tracked(id string) *instance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.procs[id]
}

// watch waits for the process to exit, then records it. pidfd, opened
// while the process was known to be the right one, may be nil.
func (d *Driver) watch(inst *instance, l layout, pidfd *os.File) {
	var err error
	waitExit(inst.pid, pidfd)
	if inst.cmd != nil {
		err = inst.cmd.Wait() // reaps the child; returns at once after waitExit
	}
	d.exited(inst, l, err)
}

// exited untracks an instance whose process has ended and reports a crash
// to the exit handler.
func (d *Driver) exited(inst *instance, l layout, waitErr error) {
	if waitErr == nil {
		waitErr = errors.New("exited")
	}
	removePidFile(l.pidFile(), inst.pid)
	d.mu.Lock()
	if d.procs[inst.id] == inst {
		delete(d.procs, inst.id)
	}
	inst.exited = true
	crash := inst.ready && !inst.stopping
	handler := d.onExit
	d.mu.Unlock()
	inst.exitErr = fmt.Errorf("mariadbd (pid %d) %v: %s", inst.pid, waitErr, logTail(l.logFile(), inst.logOffset))
	d.release(inst.id, inst.cgroup)
	d.cpus.release(inst.id)
	close(inst.done)
	if !crash {
		return
	}
	d.log.Error("compute exited unexpectedly", "compute", inst.id, "pid", inst.pid, "uptime", time.Since(inst.started), "err", waitErr)
	if handler != nil {
		handler(inst.id, inst.exitErr)
	}
}

// writePidFile writes the pid file without following a link: run/ is the
// compute's uid's, and a link planted there must not make root write
// elsewhere.
func writePidFile(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(strconv.Itoa(pid) + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// removePidFile removes a pid file that still names pid: mariadbd removes
// its own only on a clean shutdown.
func removePidFile(path string, pid int) {
	if got, err := readPidFile(path); err == nil && got == pid {
		_ = os.Remove(path)
	}
}

// readPidFile reads a pid file that must be a small regular file: not a
// link, nor a FIFO that would block the daemon (run/ is the compute's).
func readPidFile(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return 0, fmt.Errorf("pid file %s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// logTail returns the last lines mariadbd wrote to its log since offset.
func logTail(path string, offset int64) string {
	const maxTail = 4 << 10
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size()-offset > maxTail {
		offset = info.Size() - maxTail
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, maxTail))
	if len(bytes.TrimSpace(b)) == 0 {
		return "(log is empty)"
	}
	return "log tail:\n" + lastLines(b, 20)
}

// waitExit blocks until the process has exited (for a child: until it is a
// zombie, ready to be reaped). Waiting on a pidfd parks the goroutine on the
// netpoller instead of holding an OS thread per compute, and works for
// adopted processes, which are not our children.
func waitExit(pid int, pidfd *os.File) {
	if pidfd == nil {
		pollExit(pid)
		return
	}
	defer pidfd.Close()
	rc, err := pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			// A pidfd polls readable once the process has exited.
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, perr := unix.Poll(fds, 0)
			return n > 0 || (perr != nil && perr != unix.EINTR)
		})
	}
	if err != nil {
		pollExit(pid)
	}
}

// pollExit is waitExit's fallback where pidfds are unavailable (Linux < 5.3
// or a sandbox). It checks the pid a few times a second.
func pollExit(pid int) {
	for alive(pid) {
		time.Sleep(200 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

// computeEnv is mariadbd's environment: the locale, time zone and PATH of
// the daemon's, never the rest (it may hold the API tokens or object
// store keys), and glibc's malloc capped at a few arenas (see
// mariadb.MallocArenaMax).
func computeEnv(daemon []string) []string {
	env := []string{"MALLOC_ARENA_MAX=" + mariadb.MallocArenaMax}
	for _, kv := range daemon {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "TZ" || k == "LANG" || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}
