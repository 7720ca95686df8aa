//go:build linux && realnode

package realnode

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// The repository's root (the daemon's main package) and its manifests,
// from this package's folder.
const (
	repoRoot       = "../../.."
	daemonNS       = "serverlessd" // deploy/kubernetes's namespace and ServiceAccount
	daemonAccount  = "serverlessd"
	resumeCycles   = 20
	projectName    = "real"
	rowsAtCreation = 3
)

// daemon is `serverlessd serve` on the host, driving the node's computes.
type daemon struct {
	kubetest.API // calls to its API, at api
	t            *testing.T
	api, proxy   string
	log          string // its output
	bin          string
	config       string
	cmd          *exec.Cmd
	exited       chan struct{}
}

// daemonKubeconfig applies deploy/kubernetes's namespace, RBAC and
// NetworkPolicy as a user would, and returns a kubeconfig of the
// serverlessd ServiceAccount with a TokenRequest token: the daemon runs
// with exactly the Role's permissions. The bridge CNI enforces no
// NetworkPolicy: the API server only validates it here. Later calls
// return the same file.
func (e *env) daemonKubeconfig(t *testing.T) string {
	if e.kubeconfig != "" {
		return e.kubeconfig
	}
	ctx := t.Context()
	cs := e.cluster.client
	for _, f := range []string{"namespace.yaml", "rbac.yaml", "networkpolicy.yaml"} {
		if err := kubetest.Apply(ctx, cs, filepath.Join(repoRoot, "deploy/kubernetes", f)); err != nil {
			t.Fatal(err)
		}
	}
	// The controller manager makes the default ServiceAccount, which Pods
	// need; make it if it has not yet.
	if err := kubetest.WaitFor(10*time.Second, 100*time.Millisecond, "default ServiceAccount", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(daemonNS).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}); err != nil {
		_, err := cs.CoreV1().ServiceAccounts(daemonNS).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	token, err := kubetest.ServiceAccountToken(ctx, cs, daemonNS, daemonAccount)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "serverlessd.kubeconfig")
	k := kubetest.Kubeconfig{Cluster: "realnode", Server: e.cluster.url, CAData: e.cluster.caPEM,
		User: daemonAccount, Token: token, Namespace: daemonNS}
	if err := k.Write(path); err != nil {
		t.Fatal(err)
	}
	e.kubeconfig = path
	return path
}

// startDaemon builds serverlessd and runs it on the host (the API server
// and the Pod IPs are reachable from here) with a PostgreSQL store and the
// kubernetes driver on the test image.
func (e *env) startDaemon(t *testing.T, kubeconfig string, opts ...func(*kubetest.DaemonConfig)) *daemon {
	bin := filepath.Join(e.dir, "serverlessd")
	t0 := time.Now()
	if _, err := kubetest.Output("go", "build", "-C", repoRoot, "-o", bin, "."); err != nil {
		t.Fatal(err)
	}
	t.Logf("serverlessd built in %s", time.Since(t0).Round(100*time.Millisecond))
	api, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := kubetest.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, api: "127.0.0.1:" + api, proxy: "127.0.0.1:" + proxy,
		log: filepath.Join(e.cluster.logDir, "serverlessd-"+t.Name()+".log")}
	d.API = kubetest.API{T: t, Base: "http://" + d.api, Logs: d.tail}
	// The driver's default CPU: mariadbd's start is CPU-bound, so a
	// smaller share slows every resume.
	cfg := kubetest.DaemonConfig{DataDir: filepath.Join(e.dir, "daemon"), API: d.api, Proxy: d.proxy,
		Kubeconfig: kubeconfig, Namespace: daemonNS, Image: mariadbImage, CPU: "500m",
		More: fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n", pgtest.Start(t))}
	for _, o := range opts {
		o(&cfg)
	}
	d.config, err = cfg.Write()
	if err != nil {
		t.Fatal(err)
	}
	d.bin = bin
	if err := d.run(); err != nil {
		t.Fatalf("%v; its log:\n%s", err, d.tail())
	}
	t.Cleanup(d.stop)
	return d
}

// run starts the daemon, its output appended to its log, and waits until
// /readyz answers 200.
func (d *daemon) run() error {
	f, err := os.OpenFile(d.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	d.cmd = exec.Command(d.bin, "--config", d.config, "serve")
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		f.Close()
		return err
	}
	exited := make(chan struct{})
	d.exited = exited
	go func() { _ = d.cmd.Wait(); f.Close(); close(exited) }()
	return kubetest.WaitDaemonReady(d.api, exited)
}

// stop sends SIGTERM and waits: computes outlive the daemon.
func (d *daemon) stop() {
	if !kubetest.Terminate(d.cmd.Process, d.exited, 60*time.Second) {
		d.t.Errorf("serverlessd did not exit on SIGTERM")
	}
}

func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	return kubetest.Tail(string(b), 6000)
}

// open returns a client of the proxy for user@project (Go's MySQL driver).
func (d *daemon) open(project, user, password string) *sql.DB {
	db, err := sql.Open("mysql", kubetest.DSN(d.proxy, project, user, password))
	if err != nil {
		d.t.Fatal(err)
	}
	return db
}

// started is the daemon's "compute started" log line: the driver's steps
// of a start, from its Start call.
type started struct{ create, running, duration time.Duration }

var startedLine = regexp.MustCompile(`msg="compute started".* create_ms=([0-9.]+) running_ms=([0-9.]+) duration_ms=([0-9.]+)`)

// lastStarted returns the last "compute started" line's figures.
func (d *daemon) lastStarted() started {
	b, _ := os.ReadFile(d.log)
	all := startedLine.FindAllStringSubmatch(string(b), -1)
	if len(all) == 0 {
		return started{}
	}
	m := all[len(all)-1]
	msf := func(s string) time.Duration {
		f, _ := strconv.ParseFloat(s, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	return started{msf(m[1]), msf(m[2]), msf(m[3])}
}

// logCount counts the daemon's log lines with msg.
func (d *daemon) logCount(msg string) int {
	b, _ := os.ReadFile(d.log)
	return strings.Count(string(b), `msg="`+msg+`"`)
}
