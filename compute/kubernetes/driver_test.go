package kubernetes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestObjectName(t *testing.T) {
	for _, tc := range []struct {
		id, want string
		ok       bool
	}{
		{"cmp_0a1b2c", "serverlessd-cmp-0a1b2c", true},
		{"cmp-x", "serverlessd-cmp-x", true},
		{"CMP_X", "", false},
		{"../x", "", false},
		{"", "", false},
		{strings.Repeat("a", 42), "", false},
	} {
		got, err := objectName(tc.id)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("objectName(%q) = %q, %v; want %q, ok=%v", tc.id, got, err, tc.want, tc.ok)
		}
	}
}

func TestProvisionCreatesSecretAndPVC(t *testing.T) {
	d, cs, rec := newTestDriver(t)
	ctx := ctxT(t)
	c := testCompute()
	c.Spec.Storage = "2Gi"
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	name, _ := objectName(c.ID)
	pvc, err := cs.CoreV1().PersistentVolumeClaims(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("pvc size = %s, want the spec's 2Gi", got.String())
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" {
		t.Errorf("storage class = %v, want fast", pvc.Spec.StorageClassName)
	}
	checkLabels(t, pvc.Labels, c)
	sec, err := cs.CoreV1().Secrets(testNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, sec.Labels, c)
	pw := string(sec.Data[keyAdminPassword])
	if len(pw) < 32 {
		t.Errorf("weak admin password %q", pw)
	}
	if pvc.Annotations[layoutAnnotation] != datadirName {
		t.Errorf("pvc annotations = %v, want the datadir in a folder", pvc.Annotations)
	}
	if !strings.Contains(events(rec), "Provisioned") {
		t.Error("no Provisioned event")
	}
	// Idempotent, and the first password is kept.
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	again, _ := cs.CoreV1().Secrets(testNS).Get(ctx, name, metav1.GetOptions{})
	if string(again.Data[keyAdminPassword]) != pw {
		t.Error("a second Provision replaced the admin password")
	}
}

func TestProvisionDefaultSizeAndBadSpec(t *testing.T) {
	d, cs, _ := newTestDriver(t)
	ctx := ctxT(t)
	c := testCompute()
	if err := d.Provision(ctx, c); err != nil {
		t.Fatal(err)
	}
	n, err := d.StorageBytes(ctx, c)
	if err != nil || n != 5<<30 {
		t.Errorf("StorageBytes = %d, %v; want the default 5Gi", n, err)
	}
	bad := testCompute()
	bad.Spec.Resources.Memory = "lots"
	if err := d.Provision(ctx, bad); err == nil {
		t.Error("Provision accepted memory \"lots\"")
	}
	name, _ := objectName(bad.ID)
	if _, err := cs.CoreV1().Secrets(testNS).Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Error("a rejected spec left a secret behind")
	}
	if _, err := d.StorageBytes(ctx, bad); !errors.Is(err, compute.ErrNotProvisioned) {
		t.Errorf("StorageBytes of an unprovisioned compute: %v, want ErrNotProvisioned", err)
	}
}

func TestPodSpec(t *testing.T) {
	d, _, _ := newTestDriver(t)
	c := testCompute()
	c.Spec = store.ComputeSpec{Image: "mariadb:11.4.5", Resources: store.Resources{Memory: "256Mi"}}
	name, _ := objectName(c.ID)
	pvc, err := d.pvcFor(c, name)
	if err != nil {
		t.Fatal(err)
	}
	pvc.UID = "pvc-uid"
	pod, err := d.podFor(c, name, pvc)
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, pod.Labels, c)
	if o := metav1.GetControllerOf(pod); o == nil || o.Kind != "PersistentVolumeClaim" || o.UID != "pvc-uid" {
		t.Errorf("controller = %+v, want the pvc", o)
	}
	ct := pod.Spec.Containers[0]
	if ct.Image != "mariadb:11.4.5" {
		t.Errorf("image = %s, want the spec's", ct.Image)
	}
	// The CPU limit is the driver's burst, the memory limit the request.
	checkResources(t, ct, "250m", "1", "256Mi")
	if !contains(ct.Args, "--innodb-buffer-pool-size=134217728") {
		t.Errorf("args %v: want half the memory as buffer pool", ct.Args)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g != 90 {
		t.Errorf("grace period = %v, want the stop timeout (90)", g)
	}
	if p := ct.ReadinessProbe; p == nil || p.TCPSocket == nil || p.TCPSocket.Port.IntValue() != 3306 {
		t.Errorf("readiness probe = %+v, want tcp 3306", p)
	}
	checkVolumes(t, pod, name)
	checkEnv(t, ct, name, "/var/lib/mysql/data")
	// A volume made before the datadir moved to a folder keeps it at its root.
	delete(pvc.Annotations, layoutAnnotation)
	old, _ := d.podFor(c, name, pvc)
	checkEnv(t, old.Spec.Containers[0], name, "/var/lib/mysql")
	if pod.Spec.NodeSelector["disk"] != "ssd" || len(pod.Spec.Tolerations) != 3 || pod.Spec.Tolerations[0].Key != "db" {
		t.Errorf("placement: selector %v, tolerations %v", pod.Spec.NodeSelector, pod.Spec.Tolerations)
	}
	for _, tol := range pod.Spec.Tolerations[1:] {
		if tol.Effect != corev1.TaintEffectNoExecute || tol.TolerationSeconds == nil || *tol.TolerationSeconds > 30 {
			t.Errorf("toleration %+v: want a short NoExecute toleration of lost nodes", tol)
		}
	}
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || *sc.FSGroup != mysqlUID {
		t.Errorf("pod security context = %+v", sc)
	}
	if *pod.Spec.AutomountServiceAccountToken {
		t.Error("the database pod mounts a service account token")
	}
}

// checkResources checks a container's CPU request and limit and its
// memory, whose request and limit are the same.
func checkResources(t *testing.T, ct corev1.Container, cpu, cpuLimit, mem string) {
	t.Helper()
	want := []struct {
		what string
		list corev1.ResourceList
		name corev1.ResourceName
		q    string
	}{
		{"cpu request", ct.Resources.Requests, corev1.ResourceCPU, cpu},
		{"cpu limit", ct.Resources.Limits, corev1.ResourceCPU, cpuLimit},
		{"memory request", ct.Resources.Requests, corev1.ResourceMemory, mem},
		{"memory limit", ct.Resources.Limits, corev1.ResourceMemory, mem},
	}
	for _, w := range want {
		if q := w.list[w.name]; q.Cmp(resource.MustParse(w.q)) != 0 {
			t.Errorf("%s = %s, want %s", w.what, q.String(), w.q)
		}
	}
}

// TestCPULimit: a compute's CPU limit is the larger of its request and
// the driver's CPULimit; "0" makes it the request.
func TestCPULimit(t *testing.T) {
	for _, tc := range []struct{ limit, cpu, want string }{
		{"", "250m", DefaultCPULimit},
		{"2", "500m", "2"},
		{"1", "1500m", "1500m"},
		{"0", "250m", "250m"},
	} {
		d, _, _ := newTestDriver(t)
		if tc.limit != "" {
			d.opts.CPULimit = tc.limit
		}
		c := testCompute()
		c.Spec.Resources.CPU = tc.cpu
		pod, err := d.podFor(c, "x", &corev1.PersistentVolumeClaim{})
		if err != nil {
			t.Fatal(err)
		}
		checkResources(t, pod.Spec.Containers[0], tc.cpu, tc.want, "512Mi")
	}
	for _, bad := range []string{"a lot", "-1"} {
		_, err := New(Options{Client: fake.NewClientset(), CPULimit: bad})
		if err == nil || !strings.Contains(err.Error(), "cpu_limit") {
			t.Errorf("New with cpu_limit %q: %v, want an error naming cpu_limit", bad, err)
		}
	}
}

func TestPodDefaults(t *testing.T) {
	d, _, _ := newTestDriver(t)
	c := testCompute()
	pod, err := d.podFor(c, "x", &corev1.PersistentVolumeClaim{})
	if err != nil {
		t.Fatal(err)
	}
	ct := pod.Spec.Containers[0]
	if ct.Image != DefaultImage {
		t.Errorf("image = %s, want the driver's %s", ct.Image, DefaultImage)
	}
	if q := ct.Resources.Limits[corev1.ResourceMemory]; q.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("memory = %s, want the driver's 512Mi", q.String())
	}
	tiny := testCompute()
	tiny.Spec.Resources.Memory = "40Mi"
	pod, _ = d.podFor(tiny, "y", &corev1.PersistentVolumeClaim{})
	if !contains(pod.Spec.Containers[0].Args, "--innodb-buffer-pool-size=33554432") {
		t.Errorf("args %v: want the 32 MiB floor", pod.Spec.Containers[0].Args)
	}
}

func TestNewRejectsBadQuantities(t *testing.T) {
	_, cs, _ := newTestDriver(t)
	for _, o := range []Options{{Client: cs, CPU: "two"}, {Client: cs, Memory: "1 GB"}, {Client: cs, StorageSize: "big"}, {}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted bad options", o)
		}
	}
}

func checkLabels(t *testing.T, l map[string]string, c *store.Compute) {
	t.Helper()
	if l[ManagedByLabel] != ManagedByValue || l[ComputeLabel] != c.ID || l[ProjectLabel] != c.ProjectID ||
		c.TenantID == "" || l[TenantLabel] != c.TenantID {
		t.Errorf("labels = %v", l)
	}
}

func checkVolumes(t *testing.T, pod *corev1.Pod, name string) {
	t.Helper()
	ct := pod.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range ct.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts[dataVolume] != "/var/lib/mysql" || mounts[runVolume] != "/run/serverlessd" {
		t.Errorf("mounts = %v", mounts)
	}
	for _, v := range pod.Spec.Volumes {
		switch v.Name {
		case dataVolume:
			if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != name {
				t.Errorf("data volume = %+v", v)
			}
		case runVolume:
			if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
				t.Errorf("run volume = %+v, want an emptyDir in memory", v)
			}
		}
	}
}

func checkEnv(t *testing.T, ct corev1.Container, name, datadir string) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range ct.Env {
		env[e.Name] = e
	}
	if env["SERVERLESSD_DATADIR"].Value != datadir || env["SERVERLESSD_VOLUME"].Value != "/var/lib/mysql" {
		t.Errorf("env = %+v, want the datadir %s", env, datadir)
	}
	if !strings.Contains(env["SERVERLESSD_INIT_SQL"].Value, "GRANT ALL PRIVILEGES ON *.* TO `serverlessd_admin`@`%` WITH GRANT OPTION") ||
		!strings.Contains(env["SERVERLESSD_INIT_SQL"].Value, "IDENTIFIED BY '@PASSWORD@'") {
		t.Errorf("init SQL = %q", env["SERVERLESSD_INIT_SQL"].Value)
	}
	ref := env["SERVERLESSD_ADMIN_PASSWORD"].ValueFrom
	if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != name || ref.SecretKeyRef.Key != keyAdminPassword {
		t.Errorf("admin password = %+v, want secret %s key %s", env["SERVERLESSD_ADMIN_PASSWORD"], name, keyAdminPassword)
	}
	if len(ct.Command) != 4 || ct.Command[0] != "/bin/sh" || !strings.Contains(ct.Command[2], "exec mariadbd") {
		t.Errorf("command = %q, want start.sh", ct.Command)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestImageVersion(t *testing.T) {
	for image, want := range map[string]string{
		"mariadb:10.11.10":                    "10.11.10-MariaDB",
		"registry.local:5000/mariadb:11.4.5":  "11.4.5-MariaDB",
		"mariadb:10.11.10-jammy":              "10.11.10-MariaDB",
		"mariadb:10.11":                       "",
		"mariadb:latest":                      "",
		"registry.local:5000/mariadb":         "",
		"mariadb@sha256:0123":                 "",
		"mariadb:11.4.5@sha256:0123456789abc": "11.4.5-MariaDB",
	} {
		if got := imageVersion(image); got != want {
			t.Errorf("imageVersion(%q) = %q, want %q", image, got, want)
		}
	}
}

// TestSharedNotNodeLocal: Pods are reachable from every daemon and outlive
// each, so the manager must neither pin them to a node nor stop them when a
// daemon stops.
func TestSharedNotNodeLocal(t *testing.T) {
	d, _, _ := newTestDriver(t)
	if d.NodeLocal() {
		t.Fatal("the kubernetes driver says its computes belong to one node")
	}
}
