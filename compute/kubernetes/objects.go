package kubernetes

import (
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/store"
)

// Labels on every object the driver creates. Running and the crash monitor
// select Pods by ManagedByLabel; the id labels let an operator find a
// project's or a tenant's objects with kubectl (-l serverlessd.io/tenant-id=...).
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "serverlessd"
	ComputeLabel   = "serverlessd.io/compute-id"
	ProjectLabel   = "serverlessd.io/project-id"
	TenantLabel    = "serverlessd.io/tenant-id"
)

// keyAdminPassword is the Secret's key for the daemon's account's password.
const keyAdminPassword = "admin-password"

const (
	// AdminUser is the daemon's account in every compute, 'serverlessd_admin'@'%'.
	// It must be reachable over TCP from the daemon's Pod, hence the '%'
	// host; the NetworkPolicy of deploy/kubernetes lets only the daemon's
	// Pods reach a compute. Role names starting with "serverlessd" are
	// reserved (compute.ValidateRoleName), so no user can create or log in
	// as it, and the manager's role sync never drops it.
	AdminUser = mariadb.AdminUser
	// MySQLPort is where mariadbd listens in the Pod.
	MySQLPort     = 3306
	containerName = "mariadb"
	dataVolume    = "data"
	runVolume     = "run"
	// dataMountPath is where the volume is mounted. The datadir is its
	// subfolder datadirName (layoutAnnotation), so that what the volume's
	// filesystem keeps at its root (lost+found on ext4) is not a database.
	dataMountPath = "/var/lib/mysql"
	datadirName   = "data"
	// runMountPath holds the init file start.sh writes, in memory.
	runMountPath = "/run/serverlessd"
	// layoutAnnotation, on a PVC, names the datadir's folder on the
	// volume. Volumes made before it have their datadir at the root.
	layoutAnnotation = "serverlessd.io/datadir"
	// mysqlUID is the mysql user of the official image; running as it (and
	// not as root, then gosu) lets the Pod pass the "restricted" Pod
	// Security Standard.
	mysqlUID = 999
	// minBufferPool keeps InnoDB usable on tiny computes.
	minBufferPool = 32 << 20
)

// startScript is the container's command: see start.sh.
//
//go:embed start.sh
var startScript string

// validID keeps compute ids to what store.NewID makes, so that the derived
// object names are valid DNS labels and label values.
var validID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,40}$`)

// objectName is the name of a compute's Pod, PVC and Secret: one name, so
// `kubectl get pod,pvc,secret serverlessd-cmp-...` shows all three.
func objectName(computeID string) (string, error) {
	if !validID.MatchString(computeID) {
		return "", fmt.Errorf("kubernetes driver: invalid compute id %q", computeID)
	}
	return "serverlessd-" + strings.ReplaceAll(computeID, "_", "-"), nil
}

// labelsFor are the labels of every object of compute c.
func labelsFor(c *store.Compute) map[string]string {
	l := map[string]string{
		ManagedByLabel:           ManagedByValue,
		"app.kubernetes.io/name": "mariadb",
		ComputeLabel:             c.ID,
	}
	if c.ProjectID != "" {
		l[ProjectLabel] = c.ProjectID
	}
	if c.TenantID != "" {
		l[TenantLabel] = c.TenantID
	}
	return l
}

// newPassword returns 32 random URL-safe characters (192 bits).
func newPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// secretFor builds the compute's Secret: the password of the daemon's
// account, which the compute's start script gives the account at every
// start. Its owner is the compute's PVC, so it goes with the volume.
func secretFor(c *store.Compute, name, namespace string, owner *corev1.PersistentVolumeClaim) *corev1.Secret {
	immutable := true
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labelsFor(c),
			OwnerReferences: ownedBy(owner)},
		Type: corev1.SecretTypeOpaque,
		// Immutable: the password never changes, and kubelets need not
		// watch it.
		Immutable: &immutable,
		Data:      map[string][]byte{keyAdminPassword: []byte(newPassword())},
	}
}

// ownedBy makes the compute's PVC the owner of its Pod and Secret: the
// volume is the compute, what `kubectl drain` needs to see a controller of
// the Pod (it evicts it; the next login starts it elsewhere), and the
// garbage collector removes both with the volume. Deleting an owned object
// does not touch its owner, so a suspend keeps the data.
func ownedBy(pvc *corev1.PersistentVolumeClaim) []metav1.OwnerReference {
	if pvc == nil || pvc.UID == "" {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: pvc.Name, UID: pvc.UID,
		Controller: ptr(true), BlockOwnerDeletion: ptr(false)}}
}

// datadir is where the compute's datadir is in the container, from the
// layout its volume was made with.
func datadir(pvc *corev1.PersistentVolumeClaim) string {
	if sub := pvc.Annotations[layoutAnnotation]; sub != "" {
		return dataMountPath + "/" + sub
	}
	return dataMountPath
}

// pvcFor builds the compute's data volume claim.
func (d *Driver) pvcFor(c *store.Compute, name string) (*corev1.PersistentVolumeClaim, error) {
	size := c.Spec.Storage
	if size == "" {
		size = d.opts.StorageSize
	}
	q, err := resource.ParseQuantity(size)
	if err != nil {
		return nil, fmt.Errorf("compute %s: storage %q: %w", c.ID, size, err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.opts.Namespace, Labels: labelsFor(c),
			Annotations: map[string]string{layoutAnnotation: datadirName}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: q},
			},
		},
	}
	if d.opts.StorageClass != "" {
		sc := d.opts.StorageClass
		pvc.Spec.StorageClassName = &sc
	}
	return pvc, nil
}

// resourcesFor returns the compute's requests and limits (spec, else the
// driver's defaults) and the InnoDB buffer pool that fits the memory. The
// memory limit is the request: under it mariadbd is never OOM-killed for
// what it was promised. The CPU limit may be higher (CPULimit), a burst
// for mariadbd's start that costs the node nothing it reserved.
func (d *Driver) resourcesFor(c *store.Compute) (corev1.ResourceRequirements, int64, error) {
	cpu, mem := c.Spec.Resources.CPU, c.Spec.Resources.Memory
	if cpu == "" {
		cpu = d.opts.CPU
	}
	if mem == "" {
		mem = d.opts.Memory
	}
	var none corev1.ResourceRequirements
	cq, err := resource.ParseQuantity(cpu)
	if err != nil {
		return none, 0, fmt.Errorf("compute %s: cpu %q: %w", c.ID, cpu, err)
	}
	mq, err := resource.ParseQuantity(mem)
	if err != nil {
		return none, 0, fmt.Errorf("compute %s: memory %q: %w", c.ID, mem, err)
	}
	climit := cq
	if burst := resource.MustParse(d.opts.CPULimit); burst.Cmp(cq) > 0 {
		climit = burst // checked by Options.normalize
	}
	// Half the memory for the buffer pool leaves room for per-connection
	// buffers and the rest of mariadbd under the memory limit (an OOM kill
	// is a crash).
	pool := max(mq.Value()/2/(1<<20)*(1<<20), minBufferPool)
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: cq, corev1.ResourceMemory: mq},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: climit, corev1.ResourceMemory: mq},
	}, pool, nil
}

// podFor builds the compute's Pod on its volume claim pvc.
func (d *Driver) podFor(c *store.Compute, name string, pvc *corev1.PersistentVolumeClaim) (*corev1.Pod, error) {
	res, pool, err := d.resourcesFor(c)
	if err != nil {
		return nil, err
	}
	image := c.Spec.Image
	if image == "" {
		image = d.opts.Image
	}
	grace := int64(d.opts.StopTimeout.Seconds())
	no := false
	uid, fsChange := int64(mysqlUID), corev1.FSGroupChangeOnRootMismatch
	runSize := resource.MustParse("1Mi")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.opts.Namespace, Labels: labelsFor(c),
			OwnerReferences: ownedBy(pvc)},
		Spec: corev1.PodSpec{
			// Always: kubelet restarts a crashed mariadbd in place, and
			// the Pod keeps its IP, so the address in the store stays right.
			RestartPolicy: corev1.RestartPolicyAlways,
			// mariadbd needs this long to flush InnoDB on SIGTERM; past it
			// kubelet kills it (crash recovery at the next start).
			TerminationGracePeriodSeconds: &grace,
			// The database never talks to the API server, and service
			// environment variables only slow the start.
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			NodeSelector:                 d.opts.NodeSelector,
			Tolerations:                  d.tolerations(),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr(true), RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
				// A resume must not wait on a recursive chown of the volume.
				FSGroupChangePolicy: &fsChange,
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{d.containerFor(name, image, datadir(pvc), res, pool)},
			Volumes: []corev1.Volume{
				{Name: dataVolume, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name},
				}},
				{Name: runVolume, VolumeSource: corev1.VolumeSource{
					EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &runSize},
				}},
			},
		},
	}
	return pod, nil
}

// containerFor builds the mariadb container: start.sh as its command,
// mariadbd's options as its arguments.
func (d *Driver) containerFor(secret, image, datadir string, res corev1.ResourceRequirements, pool int64) corev1.Container {
	return corev1.Container{
		Name:            containerName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"/bin/sh", "-c", startScript, "serverlessd-start"},
		Args: append([]string{
			fmt.Sprintf("--innodb-buffer-pool-size=%d", pool),
			// Users are '%' accounts: reverse DNS of each client would only
			// add latency to every login.
			"--skip-name-resolve",
			// The readiness probe and the driver's check connect without
			// logging in, which the host cache counts as connect errors: past
			// max_connect_errors it would block the node's or the daemon's
			// IP. With no host cache nothing is ever blocked (the proxy
			// rate-limits logins in front).
			"--host-cache-size=0",
			// Fast start-up: a 1M temporary tablespace (the default 12M is
			// written out at every start), grown 8M at a time.
			"--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
			"--innodb-autoextend-increment=8",
			// Tables live in the datadir, never in a folder a tenant names.
			"--skip-symbolic-links",
			// As the local driver's computes: what users expect of a modern
			// MariaDB, whichever driver runs it.
			"--character-set-server=utf8mb4",
			"--collation-server=utf8mb4_general_ci",
		}, append(sessionArgs(), d.binlogArgs()...)...),
		Ports: []corev1.ContainerPort{{Name: "mysql", ContainerPort: MySQLPort, Protocol: corev1.ProtocolTCP}},
		Env: []corev1.EnvVar{
			{Name: "SERVERLESSD_DATADIR", Value: datadir},
			{Name: "SERVERLESSD_VOLUME", Value: dataMountPath},
			{Name: "SERVERLESSD_ADMIN_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: keyAdminPassword,
			}}},
			{Name: "SERVERLESSD_INIT_SQL", Value: initSQL()},
			{Name: "SERVERLESSD_RUN_DIR", Value: runMountPath},
			{Name: "MALLOC_ARENA_MAX", Value: mariadb.MallocArenaMax},
		},
		// The memory limit is the request, so the kubelet evicts a compute
		// under node pressure only after Pods that use more than they
		// asked for. With CPULimit "0" the CPU's is too, and the Pod is of
		// the Guaranteed QoS class, the last a node's OOM killer picks.
		Resources: res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: dataVolume, MountPath: dataMountPath},
			{Name: runVolume, MountPath: runMountPath},
		},
		// For Kubernetes' own use (Service endpoints, kubectl, rollouts):
		// the driver does not wait for it, it polls a login itself as soon
		// as the container runs. mariadbd opens its port only once InnoDB
		// has recovered and the init file has run, so a TCP check is a
		// true readiness test, and costs kubelet no exec.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(MySQLPort)}},
			PeriodSeconds:    1,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: 3,
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// initSQL is the init file start.sh writes at every start, @PASSWORD@
// standing for the admin password: the daemon's account, then the rows
// that keep tenants out of the mysql and sys schemas (the local driver has
// them in its template datadir; here install-db makes the datadir), read
// at once.
func initSQL() string {
	return string(mariadb.InitSQLWithPassword("%", "@PASSWORD@")) + mariadb.SchemaGuardSQL + ";\nFLUSH PRIVILEGES;\n"
}

func ptr[T any](v T) *T { return &v }

// lostNodeToleration is how long a compute's Pod stays bound to a node that
// is not Ready or unreachable before the node controller evicts it.
// Kubernetes' default, 300 s, would keep a project down for five minutes
// when the driver cannot watch nodes itself; a database Pod has nothing to
// wait for on a dead node, since its next start is a resume on any node.
const lostNodeToleration = 10

// tolerations are the configured ones plus short ones for lost nodes,
// unless the configuration has its own for those taints.
func (d *Driver) tolerations() []corev1.Toleration {
	out := slices.Clone(d.opts.Tolerations)
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		if slices.ContainsFunc(out, func(t corev1.Toleration) bool { return t.Key == key }) {
			continue
		}
		out = append(out, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(lostNodeToleration))})
	}
	return out
}

// binlogArgs turn the binary log on when backups are, as the local
// driver's my.cnf does: ROW events in the datadir, synced at every commit
// like the redo log, so that a committed transaction is in both. The
// backup agent ships closed files after each suspend.
func (d *Driver) binlogArgs() []string {
	if !d.opts.Binlog {
		return []string{"--skip-log-bin"}
	}
	return []string{"--log-bin=binlog", "--binlog-format=ROW", "--sync-binlog=1", "--server-id=1",
		"--max-binlog-size=67108864"}
}

// sessionArgs are mariadb.SessionOptions as command-line options.
func sessionArgs() []string {
	args := make([]string, len(mariadb.SessionOptions))
	for i, o := range mariadb.SessionOptions {
		args[i] = "--" + o
	}
	return args
}
