package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// daemon is one running `serverlessd serve` driven over its API, as the
// e2e suite does (the helper is copied, not imported: it lives in a _test
// file there).
type daemon struct {
	bin     string
	dataDir string
	api     string // host:port
	proxy   string // host:port
	env     []string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	http    *http.Client
	// unregister drops the interrupt handler once the daemon has stopped.
	unregister func()
}

// startDaemon runs serve on dataDir with the scheduler interval given (0:
// the default, 30s) and waits until /readyz answers. Logs go to <dataDir>.log at warn level: at
// info, 500 logins a second would be measured writing log lines.
func startDaemon(bin, dataDir string, interval time.Duration) (*daemon, error) {
	return startDaemonEnv(bin, dataDir, interval)
}

// startDaemonEnv is startDaemon with extra environment variables
// ("SERVERLESSD_...=value"); they override the defaults set here, log level
// included.
func startDaemonEnv(bin, dataDir string, interval time.Duration, env ...string) (*daemon, error) {
	api, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	px, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	d := &daemon{bin: bin, dataDir: dataDir, api: api, proxy: px, logPath: dataDir + ".log",
		exited: make(chan struct{}),
		http:   &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, "serve", "--data-dir", dataDir, "--api-listen", api, "--proxy-listen", px)
	d.cmd.Env = append(os.Environ(), "SERVERLESSD_LOG_LEVEL=warn")
	if interval > 0 {
		d.cmd.Env = append(d.cmd.Env, "SERVERLESSD_SCHEDULER_INTERVAL="+interval.String())
	}
	d.cmd.Env = append(d.cmd.Env, env...) // of duplicates, exec uses the last
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	d.unregister = onInterrupt(d.stop)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("serverlessd exited during start-up; see %s", d.logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.stop()
	return nil, fmt.Errorf("serverlessd did not become ready; see %s", d.logPath)
}

// stop sends SIGTERM (the daemon suspends its computes cleanly) and waits.
func (d *daemon) stop() {
	defer d.unregister()
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(2 * time.Minute):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// apiError is a non-2xx answer from the API.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.status, strings.TrimSpace(e.body))
}

// call sends a JSON request and decodes a JSON answer into out (if not nil).
func (d *daemon) call(method, path string, in, out any) error {
	return d.callAs("", method, path, in, out)
}

// callAs is call with an API key as bearer token ("": none, an admin).
func (d *daemon) callAs(key, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+d.api+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{resp.StatusCode, string(raw)}
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// get times one GET and drains the answer (for API latency figures).
func (d *daemon) get(path string) (time.Duration, error) { return d.getAs(path, "") }

// getAs is get with an API key as bearer token ("": none, which is an
// admin on a daemon without api.tokens).
func (d *daemon) getAs(path, key string) (time.Duration, error) {
	req, err := http.NewRequest("GET", "http://"+d.api+path, nil)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	t0 := time.Now()
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	el := time.Since(t0)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return el, err
}

type project struct {
	ID       string
	Name     string
	User     string // the root role's MySQL user, as the API gives it
	Password string
	Compute  string // compute id, once created
	Socket   string // the compute's unix socket, once created
}

// ref names the project in API paths: its id, which an admin may use for a
// project of any tenant (a name finds only the default tenant's).
func (p *project) ref() string {
	if p.ID != "" {
		return p.ID
	}
	return p.Name
}

// createProject creates a project (idle timeout in seconds) in the default
// tenant and returns it with its root password.
func (d *daemon) createProject(name string, idle int) (*project, error) {
	return d.createProjectIn("", name, idle)
}

// createProjectIn creates a project in a tenant (an id or a name; "": the
// default tenant).
func (d *daemon) createProjectIn(tenant, name string, idle int) (*project, error) {
	var out struct {
		Project struct{ ID, Name string }
		Role    struct {
			Password  string
			MySQLUser string `json:"mysql_user"`
		}
	}
	in := map[string]any{"name": name, "config": map[string]any{"idle_timeout": idle}}
	if tenant != "" {
		in["tenant"] = tenant
	}
	if err := d.call("POST", "/api/v1/projects", in, &out); err != nil {
		return nil, fmt.Errorf("create project %s: %w", name, err)
	}
	return &project{ID: out.Project.ID, Name: name, User: out.Role.MySQLUser, Password: out.Role.Password}, nil
}

// createTenant creates a tenant without quotas and returns its id.
func (d *daemon) createTenant(name string) (string, error) {
	var out struct{ Tenant struct{ ID string } }
	if err := d.call("POST", "/api/v1/tenants", map[string]any{"name": name}, &out); err != nil {
		return "", fmt.Errorf("create tenant %s: %w", name, err)
	}
	return out.Tenant.ID, nil
}

type computeJSON struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Address string `json:"address"`
}

// createCompute creates the project's compute (memory "" = the default)
// and records its id and socket.
func (d *daemon) createCompute(p *project, memory string) error {
	res := map[string]any{}
	if memory != "" {
		res["memory"] = memory
	}
	return d.createComputeWith(p, res)
}

// createComputeWith creates the project's compute with these
// config.resources (memory, cpu; empty: the defaults).
func (d *daemon) createComputeWith(p *project, resources map[string]any) error {
	cfg := map[string]any{}
	if len(resources) > 0 {
		cfg["resources"] = resources
	}
	var out struct{ Compute computeJSON }
	if err := d.call("POST", "/api/v1/projects/"+p.ref()+"/compute", map[string]any{"config": cfg}, &out); err != nil {
		return fmt.Errorf("create compute of %s: %w", p.Name, err)
	}
	p.Compute = out.Compute.ID
	p.Socket = strings.TrimPrefix(out.Compute.Address, "unix:")
	return nil
}

func (d *daemon) compute(p *project) (computeJSON, error) {
	var out struct{ Compute computeJSON }
	err := d.call("GET", "/api/v1/projects/"+p.ref()+"/compute", nil, &out)
	return out.Compute, err
}

// suspend suspends the compute; it returns once mariadbd has exited.
func (d *daemon) suspend(p *project) error {
	return d.call("POST", "/api/v1/projects/"+p.ref()+"/compute/"+p.Compute+"/suspend", nil, nil)
}

func (d *daemon) resume(p *project) error {
	var out struct{ Compute computeJSON }
	if err := d.call("POST", "/api/v1/projects/"+p.ref()+"/compute/"+p.Compute+"/resume", nil, &out); err != nil {
		return err
	}
	p.Socket = strings.TrimPrefix(out.Compute.Address, "unix:")
	return nil
}

type operation struct {
	Action     string    `json:"action"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS float64   `json:"duration_ms"`
}

// operations lists the project's operations that started at or after since.
func (d *daemon) operations(p *project, since time.Time) ([]operation, error) {
	var out struct{ Operations []operation }
	if err := d.call("GET", "/api/v1/projects/"+p.ref()+"/operations?limit=1000", nil, &out); err != nil {
		return nil, err
	}
	var ops []operation
	for _, op := range out.Operations {
		if !op.StartedAt.Before(since) {
			ops = append(ops, op)
		}
	}
	return ops, nil
}

// countOps counts operations by action and reason ("" matches any reason).
func countOps(ops []operation, action, reason string) int {
	n := 0
	for _, op := range ops {
		if op.Action == action && (reason == "" || op.Reason == reason) {
			n++
		}
	}
	return n
}

// startsAndSuspends counts p's wake starts and idle suspends that began
// between since and end.
func (d *daemon) startsAndSuspends(p *project, since, end time.Time) (starts, idle int, err error) {
	ops, err := d.operations(p, since)
	if err != nil {
		return 0, 0, err
	}
	for _, op := range ops {
		if op.StartedAt.After(end) {
			continue
		}
		switch {
		case op.Action == "start" && op.Reason == "wake":
			starts++
		case op.Action == "suspend" && op.Reason == "idle":
			idle++
		}
	}
	return starts, idle, nil
}

// metrics scrapes GET /metrics into a value per series, keyed as the
// series is written there: name{label="value",...}.
func (d *daemon) metrics() (map[string]float64, error) {
	resp, err := d.http.Get("http://" + d.api + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

// sessionEvent is the key of one count of the proxy's session events
// (detached, reattach_cold, reattach_warm, ...) in metrics' answer.
func sessionEvent(event string) string {
	return `serverlessd_proxy_session_events_total{event="` + event + `"}`
}

// sumSeries adds up every series of the metric name (all its labels).
func sumSeries(m map[string]float64, name string) float64 {
	var n float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			n += v
		}
	}
	return n
}

// waitState polls until the compute is in state, or timeout.
func (d *daemon) waitState(p *project, state string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := d.compute(p)
		if err == nil && c.State == state {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("compute of %s is %q, not %q, after %s", p.Name, c.State, state, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// computeDir is the compute's folder under the data dir (local driver).
func (d *daemon) computeDir(p *project) string {
	return filepath.Join(d.dataDir, "computes", p.Compute)
}

// proxyDSN is a go-sql-driver DSN for a login through the daemon, as the
// root role's MySQL user (<name>.root in the default tenant, <id>.root in
// others).
func (d *daemon) proxyDSN(p *project, db string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?timeout=60s&readTimeout=60s", p.mysqlUser(), p.Password, d.proxy, db)
}

func (p *project) mysqlUser() string {
	if p.User != "" {
		return p.User
	}
	return p.Name + ".root"
}

// directDSN is a DSN straight to the compute's unix socket, as the same
// role (root@'%' holds the same hash inside the compute).
func directDSN(p *project, db string) string {
	return fmt.Sprintf("root:%s@unix(%s)/%s?timeout=60s", p.Password, p.Socket, db)
}

// procStatusKB reads a "VmRSS"-style field of /proc/<pid>/status, in kB.
func procStatusKB(pid int, field string) (int64, error) { return procKB(pid, "status", field) }

// procKB reads a field given in kB from /proc/<pid>/<file> (status,
// smaps_rollup).
func procKB(pid int, file, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", field, pid, file)
}

// mariadbdPID reads the compute's pid file.
func mariadbdPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "run", "mariadbd.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// withTimeout is context.WithTimeout on Background, for one operation.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// mariadbdPIDs finds the daemon's mariadbd processes: those whose command
// line names a file under its data dir (--defaults-file=<data
// dir>/computes/<id>/my.cnf). They run in sessions of their own, so the
// command line is a surer mark than the parent pid.
func (d *daemon) mariadbdPIDs() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if filepath.Base(args[0]) == "mariadbd" && strings.Contains(string(b), d.dataDir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rssKB reads VmRSS of each pid, in kB; processes gone meanwhile are
// skipped.
func rssKB(pids []int) []int64 {
	var out []int64
	for _, pid := range pids {
		if kb, err := procStatusKB(pid, "VmRSS"); err == nil {
			out = append(out, kb)
		}
	}
	return out
}

// pssSumKB adds up the proportional set size of the pids, in kB: RSS with
// each shared page (mariadbd's binary and libraries, mapped by every one)
// divided among the processes that map it, so that the sum is the memory
// they hold together. 0 where smaps_rollup is missing (before Linux 4.14).
func pssSumKB(pids []int) int64 {
	var n int64
	for _, pid := range pids {
		if kb, err := procKB(pid, "smaps_rollup", "Pss"); err == nil {
			n += kb
		}
	}
	return n
}

// suspendAll suspends the projects' active computes through the API, four
// at a time, and returns once every one is suspended.
func (d *daemon) suspendAll(ps []*project) error {
	var g errgroup.Group
	g.SetLimit(4)
	for _, p := range ps {
		g.Go(func() error {
			if c, err := d.compute(p); err == nil && c.State == "suspended" {
				return nil
			}
			if err := d.suspend(p); err != nil {
				return fmt.Errorf("suspend %s: %w", p.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// stopAndReap stops the daemon, then kills any of its mariadbd left
// running, saying so.
func (d *daemon) stopAndReap() {
	d.stop()
	if n := d.reap(); n > 0 {
		log.Printf("killed %d mariadbd the daemon left running at its stop (see %s)", n, d.logPath)
	}
}

// reap kills whatever mariadbd of the daemon is still running once it has
// stopped (its shutdown suspends computes four at a time within a deadline,
// which many computes may outlast), so that no phase leaves one behind. It
// returns how many it had to kill.
func (d *daemon) reap() int {
	pids := d.mariadbdPIDs()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}
