package kubernetes

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/serverlessd/serverlessd/store"
)

const testNS = "dbs"

// newTestDriver returns a driver on a fake clientset, with a fake recorder.
func newTestDriver(t *testing.T, objs ...runtime.Object) (*Driver, *fake.Clientset, *record.FakeRecorder) {
	t.Helper()
	cs := fake.NewClientset(append([]runtime.Object{readyNode("node-1")}, objs...)...)
	rec := record.NewFakeRecorder(100)
	d, err := New(Options{
		Client: cs, Namespace: testNS, StorageClass: "fast", StorageSize: "5Gi",
		CPU: "250m", Memory: "512Mi", StopTimeout: 90 * time.Second, DialTimeout: 2 * time.Second,
		NodeSelector: map[string]string{"disk": "ssd"},
		Tolerations:  []corev1.Toleration{{Key: "db", Operator: corev1.TolerationOpEqual, Value: "yes", Effect: corev1.TaintEffectNoSchedule}},
		Recorder:     rec,
		Logger:       testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, cs, rec
}

// readyNode is a Node whose kubelet reports Ready.
func readyNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
}

// testCompute returns a compute with a fresh id.
func testCompute() *store.Compute {
	return &store.Compute{ID: store.NewID("cmp"), ProjectID: store.NewID("prj"), TenantID: store.NewID("ten"), Driver: "kubernetes"}
}

// mysqlStub is a MySQL server on ip:3306 that lets in the daemon's account
// with the password of any compute's Secret (go-mysql's server): it stands
// for mariadbd below the seam these tests cover.
func mysqlStub(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	auth := stubAuth{cs: cs}
	srv := server.NewServer("10.11.10-MariaDB", mysql.DEFAULT_COLLATION_ID, mysql.AUTH_NATIVE_PASSWORD, nil, nil)
	for range 20 {
		ip := fmt.Sprintf("127.0.%d.%d", 100+rand.IntN(100), 2+rand.IntN(250))
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "3306"))
		if err != nil {
			continue
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					conn, err := server.NewCustomizedConn(c, srv, auth, server.EmptyHandler{})
					for err == nil {
						err = conn.HandleCommand()
					}
				}()
			}
		}()
		return ip
	}
	t.Fatal("no free loopback address for the MySQL stub")
	return ""
}

// stubAuth accepts the daemon's account with any Secret's password.
type stubAuth struct{ cs *fake.Clientset }

func (a stubAuth) GetCredential(user string) (server.Credential, bool, error) {
	if user != AdminUser {
		return server.Credential{}, false, nil
	}
	list, err := a.cs.CoreV1().Secrets(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return server.Credential{}, false, err
	}
	cred := server.Credential{AuthPluginName: mysql.AUTH_NATIVE_PASSWORD}
	for _, s := range list.Items {
		cred.Passwords = append(cred.Passwords, string(s.Data[keyAdminPassword]))
	}
	return cred, len(cred.Passwords) > 0, nil
}

func (stubAuth) OnAuthSuccess(*server.Conn) error  { return nil }
func (stubAuth) OnAuthFailure(*server.Conn, error) {}

// kubelet plays the node on the fake clientset: it marks every Pod of the
// namespace Running and Ready at ip until stopped. It updates repeatedly
// because the fake clientset's watch can miss an event that lands between
// a list and a watch.
type kubelet struct {
	cs     *fake.Clientset
	ip     string
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	status func(*corev1.Pod) // overrides the status set, when not nil
}

func startKubelet(t *testing.T, cs *fake.Clientset, ip string) *kubelet {
	k := &kubelet{cs: cs, ip: ip, stop: make(chan struct{})}
	k.wg.Add(1)
	go k.run()
	t.Cleanup(func() { close(k.stop); k.wg.Wait() })
	return k
}

func (k *kubelet) setStatus(fn func(*corev1.Pod)) {
	k.mu.Lock()
	k.status = fn
	k.mu.Unlock()
}

func (k *kubelet) run() {
	defer k.wg.Done()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-tick.C:
		}
		pods, err := k.cs.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			continue
		}
		for i := range pods.Items {
			k.update(&pods.Items[i])
		}
	}
}

func (k *kubelet) update(pod *corev1.Pod) {
	if terminal(pod) {
		return // a kubelet never revives a terminated Pod
	}
	k.mu.Lock()
	fn := k.status
	k.mu.Unlock()
	if fn != nil {
		fn(pod)
	} else {
		markReady(pod, k.ip)
	}
	_, _ = k.cs.CoreV1().Pods(testNS).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
}

// markReady sets a Pod's status as kubelet does once its probe passes.
func markReady(pod *corev1.Pod, ip string) {
	pod.Spec.NodeName = "node-1"
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

// events drains the fake recorder.
func events(rec *record.FakeRecorder) string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

// testLogger discards the driver's logs unless TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
