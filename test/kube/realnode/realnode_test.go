//go:build linux && realnode

package realnode

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

const testNamespace = "realnode"

// fail ends the test with the node's logs.
func (e *env) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	logs := ""
	if e.node != nil {
		logs = e.node.logs()
	}
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		b, _ := os.ReadFile(filepath.Join(e.cluster.logDir, name+".log"))
		logs += fmt.Sprintf("--- %s\n%s\n", name, kubetest.Tail(string(b), 2000))
	}
	t.Fatalf(format+"\n%s", append(args, logs)...)
}

func TestRealNodeRunsMariaDB(t *testing.T) {
	e := startEnv(t)
	ctx := t.Context()
	cs := e.cluster.client

	// The namespace's default ServiceAccount comes from the controller
	// manager: Pods cannot be created before it exists.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.WaitFor(30*time.Second, 200*time.Millisecond, "default ServiceAccount", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(testNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}); err != nil {
		e.fail(t, "%v", err)
	}

	t.Run("APIServerFromPod", func(t *testing.T) { e.apiServerFromPod(t) })

	claim := e.hostPathClaim(t)
	// First start: the datadir is empty and the Pod initializes it.
	first := e.runMariaDB(t, "mariadb-1", claim, true)
	// Second start on the same, initialized, datadir.
	second := e.runMariaDB(t, "mariadb-2", claim, false)
	t.Logf("pod create -> greeting: first start %s, second start %s", first.Round(time.Millisecond), second.Round(time.Millisecond))
}

// apiServerFromPod checks what the daemon's Pod will need: its
// ServiceAccount token mounted, and the API server reached through the
// kubernetes Service (KUBERNETES_SERVICE_HOST is its ClusterIP, which only
// kube-proxy's rules route).
func (e *env) apiServerFromPod(t *testing.T) {
	ctx := t.Context()
	cs := e.cluster.client
	script := `set -e
test -s /var/run/secrets/kubernetes.io/serviceaccount/token
grep -q CERTIFICATE /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT
echo reached $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-check", Namespace: testNamespace},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "check", Image: mariadbImage, ImagePullPolicy: corev1.PullNever,
				// bash (Essential in Debian) has /dev/tcp.
				Command: []string{"bash", "-c", script},
			}},
		},
	}
	t0 := time.Now()
	if _, err := cs.CoreV1().Pods(testNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	err := kubetest.WaitFor(90*time.Second, 200*time.Millisecond, "api-check Pod done", func() (bool, error) {
		p, err := cs.CoreV1().Pods(testNamespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, fmt.Errorf("phase %s", phase)
	})
	out := e.podLog(pod.Name)
	if err != nil || phase != corev1.PodSucceeded {
		e.fail(t, "api-check: %v, phase %s; its output:\n%s", err, phase, out)
	}
	t.Logf("a Pod reached the API server through the kubernetes Service in %s: %s",
		time.Since(t0).Round(time.Millisecond), strings.TrimSpace(out))
	e.deletePod(t, pod.Name)
}

// hostPathClaim makes a hostPath PersistentVolume, owned by the image's
// mysql user (hostPath volumes get no fsGroup), and a claim the PV
// controller binds to it. The claim outlives Pods: a second Pod finds the
// datadir the first initialized.
func (e *env) hostPathClaim(t *testing.T) string {
	ctx := t.Context()
	cs := e.cluster.client
	path := filepath.Join(e.dir, "volumes", "datadir")
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, mysqlUID, mysqlUID); err != nil {
		t.Fatal(err)
	}
	size := resource.MustParse("1Gi")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "realnode-datadir"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "realnode-hostpath",
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptrTo(corev1.HostPathDirectory)},
			},
		},
	}
	t0 := time.Now()
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The PV controller matches a new claim against the volumes it knows:
	// a claim that comes before the volume reached it waits for the
	// controller's next full sync (15s). Available means it has it.
	if err := kubetest.WaitFor(30*time.Second, 100*time.Millisecond, "volume Available", func() (bool, error) {
		v, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return v.Status.Phase == corev1.VolumeAvailable, fmt.Errorf("phase %s", v.Status.Phase)
	}); err != nil {
		e.fail(t, "%v", err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "datadir", Namespace: testNamespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptrTo("realnode-hostpath"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(testNamespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.WaitFor(60*time.Second, 100*time.Millisecond, "claim Bound", func() (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(testNamespace).Get(ctx, pvc.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return c.Status.Phase == corev1.ClaimBound, fmt.Errorf("phase %s", c.Status.Phase)
	}); err != nil {
		e.fail(t, "%v", err)
	}
	t.Logf("volume and claim made and bound by the PV controller in %s", time.Since(t0).Round(time.Millisecond))
	return pvc.Name
}

// mariadbScript initializes the datadir when it is empty (root
// authenticates by socket only) and runs the server on every address.
// --no-defaults: Debian's my.cnf points the socket at /run/mysqld, which
// only its init script makes.
//
// MariaDB answers a client whose address matches no account's host with
// an error packet (1130, "Host '10.244.0.1' is not allowed to connect")
// instead of the handshake, and a fresh datadir has only localhost
// accounts. The init file makes the one account the greeting needs: at
// host '%', locked, so nobody can log in with it (the daemon's tenants'
// accounts are at '%' too). skip-grant-tables would be the other way.
const mariadbScript = `set -e
if [ ! -d /var/lib/mysql/mysql ]; then
  echo "initializing the datadir"
  mariadb-install-db --no-defaults --datadir=/var/lib/mysql --skip-test-db \
    --auth-root-authentication-method=socket >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
fi
echo "CREATE USER IF NOT EXISTS 'realnode_probe'@'%' ACCOUNT LOCK;" >/tmp/init.sql
exec mariadbd --no-defaults --datadir=/var/lib/mysql --bind-address=0.0.0.0 --port=3306 \
  --socket=/tmp/mysqld.sock --skip-name-resolve --skip-log-bin --init-file=/tmp/init.sql`

// runMariaDB runs a mariadb Pod on the claim, as the image's mysql user,
// reads the server's greeting from the host, checks that the Pod
// initialized the datadir or not (wantInit), deletes the Pod and waits
// until it is gone. It returns the time from create to greeting.
func (e *env) runMariaDB(t *testing.T, name, claim string, wantInit bool) time.Duration {
	ctx := t.Context()
	cs := e.cluster.client
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptrTo[int64](mysqlUID), RunAsGroup: ptrTo[int64](mysqlUID), RunAsNonRoot: ptrTo(true),
			},
			TerminationGracePeriodSeconds: ptrTo[int64](30),
			Containers: []corev1.Container{{
				Name: "mariadb", Image: mariadbImage, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sh", "-c", mariadbScript},
				Ports:        []corev1.ContainerPort{{Name: "mysql", ContainerPort: 3306}},
				VolumeMounts: []corev1.VolumeMount{{Name: "datadir", MountPath: "/var/lib/mysql"}},
			}},
			Volumes: []corev1.Volume{{Name: "datadir", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	t0 := time.Now()
	if _, err := cs.CoreV1().Pods(testNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	var running time.Duration
	var greeting string
	err := kubetest.WaitFor(3*time.Minute, 50*time.Millisecond, name+" greeting", func() (bool, error) {
		if ip == "" {
			p, err := cs.CoreV1().Pods(testNamespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				return false, fmt.Errorf("pod ended: %s", p.Status.Phase)
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return false, fmt.Errorf("phase %s", p.Status.Phase)
			}
			ip, running = p.Status.PodIP, time.Since(t0)
		}
		var err error
		greeting, err = readGreeting(net.JoinHostPort(ip, "3306"))
		return err == nil, err
	})
	took := time.Since(t0)
	if err != nil {
		e.fail(t, "%v\npod log:\n%s", err, e.podLog(name))
	}
	procs := podProcesses("mariadbd")
	if len(procs) == 0 || slices.ContainsFunc(procs, func(p podProcess) bool { return p.uid != mysqlUID }) {
		e.fail(t, "%s: mariadbd processes %+v, want all of uid %d", name, procs, mysqlUID)
	}
	t.Logf("%s: Running after %s, greeting (%s) from %s after %s, mariadbd runs as uid %d", name, running.Round(time.Millisecond),
		greeting, ip, took.Round(time.Millisecond), mysqlUID)
	if log := e.podLog(name); strings.Contains(log, "initializing the datadir") != wantInit {
		e.fail(t, "%s: initialized the datadir: %v, want %v; its log:\n%s", name, !wantInit, wantInit, log)
	}
	e.deletePod(t, name)
	return took
}

// deletePod deletes a Pod and waits until the kubelet has confirmed its
// end (the object is gone).
func (e *env) deletePod(t *testing.T, name string) {
	ctx := t.Context()
	cs := e.cluster.client
	t0 := time.Now()
	if err := cs.CoreV1().Pods(testNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.WaitFor(60*time.Second, 100*time.Millisecond, name+" deleted", func() (bool, error) {
		_, err := cs.CoreV1().Pods(testNamespace).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	}); err != nil {
		e.fail(t, "%v", err)
	}
	t.Logf("%s: deleted and gone in %s", name, time.Since(t0).Round(time.Millisecond))
}

// readGreeting reads a MySQL server's first packet and checks that it is
// a protocol 10 handshake; it returns the server version it names.
func readGreeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	payload := make([]byte, n)
	if _, err := io.ReadFull(c, payload); err != nil {
		return "", err
	}
	if n == 0 || payload[0] != 10 {
		return "", fmt.Errorf("not a protocol 10 handshake: % x", payload[:min(n, 16)])
	}
	version, _, _ := strings.Cut(string(payload[1:]), "\x00")
	return version, nil
}

// podLog returns a Pod's container logs, read from the kubelet's log
// folder (the API server cannot proxy them: the kubelet accepts only
// client certificates and the API server has none).
func (e *env) podLog(name string) string { return e.podLogIn(testNamespace, name) }

// podLogIn returns the container logs of a Pod of namespace ns.
func (e *env) podLogIn(ns, name string) string {
	files, _ := filepath.Glob(filepath.Join(e.node.dir, "pod-logs", ns+"_"+name+"_*", "*", "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		b.WriteString(kubetest.Tail(string(data), 3000))
	}
	return b.String()
}
