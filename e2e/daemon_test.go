// Package e2e drives a real `serverlessd serve`, built from this tree, the
// way a user would: the CLI, curl-like HTTP calls and real MySQL clients.
package e2e

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/serverlessd/serverlessd/compute/local/localtest"
	"github.com/serverlessd/serverlessd/server/openapitest"
)

// binary is the serverlessd built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "serverlessd-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "serverlessd")
	build := exec.Command("go", "build", "-o", binary, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build serverlessd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running `serverlessd serve`.
type daemon struct {
	t       testing.TB
	dataDir string
	api     string // host:port
	proxy   string // host:port
	cmd     *exec.Cmd
	log     *syncBuffer
	exited  chan struct{} // closed when the process has exited
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startDaemon runs serve on dataDir (a new temp dir when empty) and waits
// until /readyz answers. freePort's addresses can be taken by another
// process before the daemon binds them: it then starts again on new ones.
func startDaemon(t testing.TB, dataDir string, extraEnv ...string) *daemon {
	t.Helper()
	if dataDir == "" {
		dataDir = localtest.Dir(t)
	}
	for attempt := 1; ; attempt++ {
		d, err := launch(t, dataDir, extraEnv)
		if err == nil {
			return d
		}
		if !strings.Contains(d.log.String(), "address already in use") || attempt == 3 {
			t.Fatalf("%v; its log:\n%s", err, d.log)
		}
		t.Logf("serverlessd start %d: a port was taken meanwhile; starting again", attempt)
	}
}

// launch starts serve on new ports and waits until /readyz answers.
func launch(t testing.TB, dataDir string, extraEnv []string) (*daemon, error) {
	d := &daemon{t: t, dataDir: dataDir, api: freePort(t), proxy: freePort(t), log: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(binary, "serve", "--data-dir", dataDir, "--api-listen", d.api, "--proxy-listen", d.proxy)
	d.cmd.Env = append(os.Environ(), extraEnv...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() { d.stop(syscall.SIGTERM) })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + d.api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			return d, errors.New("serverlessd exited during start-up")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A goroutine dump shows where it is stuck.
	_ = d.cmd.Process.Signal(syscall.SIGQUIT)
	time.Sleep(time.Second)
	return d, errors.New("serverlessd did not become ready")
}

// stop sends sig and waits for the daemon to exit.
func (d *daemon) stop(sig syscall.Signal) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(90 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("serverlessd did not exit on %v; its log:\n%s", sig, d.log)
	}
}

// cli runs a serverlessd client command against this daemon.
func (d *daemon) cli(args ...string) (string, error) {
	cmd := exec.Command(binary, append([]string{"--api", d.api}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *daemon) mustCLI(args ...string) string {
	d.t.Helper()
	out, err := d.cli(args...)
	if err != nil {
		d.t.Fatalf("serverlessd %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, d.log)
	}
	return out
}

// cliJSON runs a client command with -o json and decodes its output.
func (d *daemon) cliJSON(v any, args ...string) {
	d.t.Helper()
	out := d.mustCLI(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("serverlessd %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// getJSON calls the API.
func (d *daemon) getJSON(path string, v any) int {
	d.t.Helper()
	resp, err := http.Get("http://" + d.api + path)
	if err != nil {
		d.t.Fatal(err)
	}
	return decodeReply(d.t, resp, v)
}

// decodeReply decodes an API reply into v and returns its status. The
// reply must conform to the API's OpenAPI document.
func decodeReply(t testing.TB, resp *http.Response, v any) int {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := openapitest.CheckResponse(resp, raw); err != nil {
		t.Error(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s %s: %v: %.300s", resp.Request.Method, resp.Request.URL.Path, err, raw)
	}
	return resp.StatusCode
}

// openDB opens a go-sql-driver pool to the proxy as user, on database db
// ("" for none); it is closed when the test ends.
func (d *daemon) openDB(t testing.TB, user, pw, db string) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, pw, "tcp", d.proxy, db
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := sql.OpenDB(connector)
	t.Cleanup(func() { pool.Close() })
	return pool
}

// mariadbdPIDs lists the mariadbd processes whose command line names dir.
func mariadbdPIDs(t testing.TB, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if strings.HasSuffix(args[0], "mariadbd") && strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
