//go:build linux && realnode

package realnode

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/serverlessd/serverlessd/store/postgres/pgtest"
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
	t          *testing.T
	api, proxy string
	log        string // its output
	bin        string
	config     string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// daemonKubeconfig applies deploy/kubernetes's namespace, RBAC and
// NetworkPolicy as a user would, and returns a kubeconfig of the
// serverlessd ServiceAccount with a TokenRequest token: the daemon runs
// with exactly the Role's permissions. The bridge CNI enforces no
// NetworkPolicy: the API server only validates it here.
func (e *env) daemonKubeconfig(t *testing.T) string {
	ctx := t.Context()
	cs := e.cluster.client
	for _, f := range []string{"namespace.yaml", "rbac.yaml", "networkpolicy.yaml"} {
		if err := e.apply(ctx, filepath.Join(repoRoot, "deploy/kubernetes", f)); err != nil {
			t.Fatal(err)
		}
	}
	// The controller manager makes the default ServiceAccount, which Pods
	// need; make it if it has not yet.
	if err := waitFor(10*time.Second, 100*time.Millisecond, "default ServiceAccount", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(daemonNS).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}); err != nil {
		_, err := cs.CoreV1().ServiceAccounts(daemonNS).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(daemonNS).CreateToken(ctx, daemonAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["realnode"] = &clientcmdapi.Cluster{Server: e.cluster.url, CertificateAuthorityData: e.cluster.caPEM}
	cfg.AuthInfos[daemonAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["realnode"] = &clientcmdapi.Context{Cluster: "realnode", AuthInfo: daemonAccount, Namespace: daemonNS}
	cfg.CurrentContext = "realnode"
	path := filepath.Join(e.dir, "serverlessd.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// apply creates the objects of a multi-document manifest: the kinds of
// deploy/kubernetes's namespace, RBAC and NetworkPolicy. (The harness's
// bootstrap_test.go does the same; test files cannot be imported.)
func (e *env) apply(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cs, opts := e.cluster.client, metav1.CreateOptions{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, opts)
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *networkingv1.NetworkPolicy:
			_, err = cs.NetworkingV1().NetworkPolicies(o.Namespace).Create(ctx, o, opts)
		default:
			err = fmt.Errorf("kind %T not handled", obj)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

// startDaemon builds serverlessd and runs it on the host (the API server
// and the Pod IPs are reachable from here) with a PostgreSQL store and the
// kubernetes driver on the test image.
func (e *env) startDaemon(t *testing.T, kubeconfig string) *daemon {
	bin := filepath.Join(e.dir, "serverlessd")
	t0 := time.Now()
	if _, err := output("go", "build", "-C", repoRoot, "-o", bin, "."); err != nil {
		t.Fatal(err)
	}
	t.Logf("serverlessd built in %s", time.Since(t0).Round(100*time.Millisecond))
	dataDir := filepath.Join(e.dir, "daemon")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	api, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, api: "127.0.0.1:" + api, proxy: "127.0.0.1:" + proxy,
		log: filepath.Join(e.cluster.logDir, "serverlessd-"+t.Name()+".log")}
	cfg := fmt.Sprintf(`data_dir: %s
api:
  listen: %s
proxy:
  listen: %s
store:
  driver: postgres
  dsn: %q
compute:
  driver: kubernetes
  stop_timeout: 30s
  default_memory: 256Mi
kubernetes:
  kubeconfig: %s
  namespace: %s
  image: %s
  storage_size: 1Gi
  # The driver's default CPU (requests = limits): mariadbd's start is
  # CPU-bound, so a smaller share slows every resume.
  cpu: 500m
  memory: 256Mi
log:
  level: debug
`, dataDir, d.api, d.proxy, pgtest.Start(t), kubeconfig, daemonNS, mariadbImage)
	d.config = filepath.Join(dataDir, "config.yaml")
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
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
	return waitFor(60*time.Second, 20*time.Millisecond, "serverlessd /readyz", func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("exited")
		default:
		}
		resp, err := http.Get("http://" + d.api + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %s", resp.Status)
	})
}

// stop sends SIGTERM and waits: computes outlive the daemon.
func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("serverlessd did not exit on SIGTERM")
	}
}

func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	return tail(string(b), 6000)
}

// call makes an API call and decodes the JSON answer into out.
func (d *daemon) call(method, path, body string, want int, out any) {
	d.t.Helper()
	req, _ := http.NewRequest(method, "http://"+d.api+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		d.t.Fatalf("%s %s: %d %s, want %d; daemon log:\n%s", method, path, resp.StatusCode, raw, want, d.tail())
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			d.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

// open returns a client of the proxy for user@project (Go's MySQL driver).
func (d *daemon) open(project, user, password string) *sql.DB {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = project+"."+user, password, "tcp", d.proxy
	cfg.Timeout = 2 * time.Minute
	db, err := sql.Open("mysql", cfg.FormatDSN())
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
