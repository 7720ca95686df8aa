package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// dirPrefix names the servers' directories under os.TempDir.
const dirPrefix = "serverlessd-pgtest-"

// readyTimeout bounds a start, crash recovery included.
const readyTimeout = 60 * time.Second

// start creates a cluster in a new directory and starts it.
func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, cred: cred, password: randomHex(12)}
	if s.dir, err = makeDir(cred); err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	if err := s.runOnFreePort(); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	if s.admin, err = s.adminDB(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close stops the server and removes its directory.
func (s *Server) close() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
	}
	errs = append(errs, s.halt(syscall.SIGINT, 30*time.Second), os.RemoveAll(s.dir))
	return errors.Join(errs...)
}

// binDir finds the directory of initdb and postgres: $PGTEST_BINDIR, then
// pg_config --bindir, then Debian's /usr/lib/postgresql/N/bin (newest
// first), then $PATH.
func binDir() (string, error) {
	var candidates []string
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		candidates = append(candidates, d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int { return versionOf(b) - versionOf(a) })
	candidates = append(candidates, debian...)
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	return firstBinDir(candidates)
}

// firstBinDir is the first directory that holds initdb and postgres.
func firstBinDir(candidates []string) (string, error) {
	for _, d := range candidates {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("the PostgreSQL server binaries (initdb, postgres) are not installed: " +
		"install the Debian package postgresql (make test does), or set PGTEST_BINDIR to their directory")
}

// versionOf reads N from /usr/lib/postgresql/N/bin.
func versionOf(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverUser is whom the server runs as: this process's user, or, as root,
// which PostgreSQL refuses, the user postgres that the Debian package
// creates (nobody when there is none).
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
		}
	}
	return nil, errors.New("tests run as root and PostgreSQL refuses to: " +
		"create a user postgres (the Debian package postgresql does)")
}

// makeDir creates the server's directory, owned by the server's user, with
// a janitor to remove it.
func makeDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return "", err
	}
	err = janitor(dir)
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, "sock"), 0o700)
	}
	if err == nil && cred != nil {
		err = errors.Join(chown(dir, cred), chown(filepath.Join(dir, "sock"), cred))
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("create the server directory: %w", err)
	}
	return dir, nil
}

func chown(path string, cred *syscall.Credential) error {
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

// janitors hold the write ends of the janitors' pipes, so that the garbage
// collector does not close them: the kernel does, when the process exits,
// whatever ended it.
var janitors []io.WriteCloser

// janitor removes dir after this process has exited, even by a SIGKILL or a
// test timeout, and after the server it held has gone (the parent-death
// signal stops it). It is a shell that waits for EOF on a pipe from us.
func janitor(dir string) error {
	const script = `read -r _
		pidfile="$1/data/postmaster.pid"
		for i in $(seq 100); do
			[ -f "$pidfile" ] && kill -0 "$(head -n 1 "$pidfile")" 2>/dev/null || break
			sleep 0.1
		done
		rm -rf "$1"`
	cmd := exec.Command("/bin/sh", "-c", script, "janitor", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlive a ^C to the tests
	w, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the directory's janitor: %w", err)
	}
	janitorsMu.Lock()
	janitors = append(janitors, w)
	janitorsMu.Unlock()
	return nil
}

var janitorsMu sync.Mutex

// initdb creates the cluster with a password-protected superuser. It asks
// for ICU's en-US collation (PostgreSQL 15+) and falls back to C.
func (s *Server) initdb() error {
	pwfile := s.path("pwfile")
	if err := os.WriteFile(pwfile, []byte(s.password+"\n"), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		if err := chown(pwfile, s.cred); err != nil {
			return err
		}
	}
	args := []string{"-D", s.path("data"), "-U", superuser, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync"}
	icu := []string{"--locale-provider=icu", "--icu-locale=en-US", "--locale=C.UTF-8"}
	out, err := s.command("initdb", append(args, icu...)...).CombinedOutput()
	if err != nil {
		out2, err2 := s.command("initdb", append(args, "--locale=C")...).CombinedOutput()
		if err2 != nil {
			return fmt.Errorf("initdb in %s: %v\n%s\n%s", s.dir, err2, out, out2)
		}
	}
	return s.configure()
}

// throwawaySettings trade what a throwaway server does not need for speed.
// Surviving a power loss is worthless here; commits still reach the kernel,
// so a Kill loses none of them. They go in postgresql.conf rather than on
// the command line so that a test can override them with ALTER SYSTEM (a
// benchmark of durable commits does).
const throwawaySettings = `
# pgtest: a throwaway server
fsync = off
full_page_writes = off
max_connections = 300
`

func (s *Server) configure() error {
	f, err := os.OpenFile(s.path("data/postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(throwawaySettings)
	return errors.Join(err, f.Close())
}

// command prepares one of the server binaries to run as the server's user,
// in the server's directory (PostgreSQL's tools fail in a working directory
// they cannot read), without PG* variables that would redirect them.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// runOnFreePort starts the server on a port that was free a moment ago,
// trying another if someone took it in between.
func (s *Server) runOnFreePort() error {
	var err error
	for range 3 {
		if s.port, err = freePort(); err != nil {
			return err
		}
		if err = s.run(); err == nil || !strings.Contains(s.logTail(), "already in use") {
			return err
		}
	}
	return err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// run starts the postmaster and waits until it accepts logins.
func (s *Server) run() error {
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := s.command("postgres", "-D", s.path("data"), "-k", s.path("sock"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(s.port))
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd.SysProcAttr)
	cmd.SysProcAttr.Setpgid = true // a ^C on the terminal is for the test binary
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.exited, s.pid = exited, cmd.Process.Pid
	s.mu.Unlock()
	if err := s.waitReady(exited); err != nil {
		s.halt(syscall.SIGQUIT, 10*time.Second)
		return err
	}
	return nil
}

// waitReady polls with logins until one succeeds, the postmaster exits or
// readyTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgconn.Connect(ctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			return conn.Close(context.Background())
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited at start; its log (%s) ends:\n%s", s.LogPath(), s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept logins within %s: %v; its log (%s) ends:\n%s",
				readyTimeout, err, s.LogPath(), s.logTail())
		}
	}
}

// halt signals the postmaster and waits for it to exit, killing it outright
// after wait. It does nothing when no postmaster runs.
func (s *Server) halt(sig syscall.Signal, wait time.Duration) error {
	s.mu.Lock()
	exited, pid := s.exited, s.pid
	s.mu.Unlock()
	if exited == nil || !s.running() {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal postgres (pid %d): %w", pid, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
	}
	syscall.Kill(pid, syscall.SIGKILL)
	<-exited
	return fmt.Errorf("postgres ignored %v for %s and was killed", sig, wait)
}

// running reports whether the postmaster runs.
func (s *Server) running() bool {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// logTail is the end of the server's log.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.LogPath())
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-20):], []byte("\n")))
}

// spawner starts child processes from one OS thread that never exits. Linux
// sends the parent-death signal when the thread that forked the child ends,
// not the process, and Go ends a thread when a goroutine locked to it
// returns; forking from an arbitrary goroutine could kill the server early.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd, done}
	return <-done
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
