// Package kubernetes is the compute driver that runs each compute as a Pod
// with a PersistentVolumeClaim and a Secret, through client-go. Its model is
// CloudNativePG's hibernation: a suspend deletes the Pod and keeps the PVC
// (the data) and the Secret (the admin password); a resume creates the Pod
// again on the same PVC. All three objects of a compute share one name,
// "serverlessd-<compute id>", and carry the labels in labelsFor.
//
// The driver needs, in its namespace: pods get/list/watch/create/delete,
// persistentvolumeclaims get/create/delete, secrets get/create/delete and
// events create/patch (deploy/kubernetes/rbac.yaml).
package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// Defaults for the Options left empty.
const (
	DefaultNamespace   = "serverlessd"
	DefaultImage       = "mariadb:10.11.10"
	DefaultStorageSize = "10Gi"
	DefaultCPU         = "500m"
	// DefaultCPULimit lets a compute burst to a whole core: mariadbd's
	// start is CPU-bound, and a resume under a 500m limit is slower.
	DefaultCPULimit    = "1"
	DefaultMemory      = "1Gi"
	DefaultStopTimeout = 60 * time.Second
	// DefaultDialTimeout bounds the wait, after the Pod is Ready, for its
	// IP to accept a connection from the daemon (a CNI may lag behind the
	// kubelet's probe).
	DefaultDialTimeout = 30 * time.Second
)

// Options configure a Driver.
type Options struct {
	// Client talks to the API server.
	Client kubernetes.Interface
	// EventClient records Events; nil uses Client. A separate client keeps
	// Events out of the lifecycle calls' rate limit.
	EventClient  kubernetes.Interface
	Namespace    string
	Image        string
	StorageClass string // empty: the cluster's default StorageClass
	StorageSize  string
	CPU          string
	// CPULimit is the least CPU limit of a Pod: a compute's limit is the
	// larger of it and the compute's CPU request. "0" keeps limits equal
	// to requests (the Guaranteed QoS class).
	CPULimit     string
	Memory       string
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// StopTimeout becomes the Pod's terminationGracePeriodSeconds.
	StopTimeout time.Duration
	DialTimeout time.Duration
	Logger      *slog.Logger
	// Recorder receives Events; nil records them to the API server.
	Recorder record.EventRecorder
	// Binlog turns mariadbd's binary log on, for point-in-time restore.
	Binlog bool
	// AgentImage holds the serverlessd binary, for backup agents' Pods
	// (RunAgent): the daemon's own image.
	AgentImage string
	// AgentEnv is the agents' environment (the backup target), and
	// AgentSecret a Secret whose keys are added to it, if it exists (the
	// target's credentials).
	AgentEnv    map[string]string
	AgentSecret string
}

// Driver runs computes as Pods. It implements compute.Driver and is safe for
// concurrent use. Close stops its watch and event recording.
type Driver struct {
	opts Options
	cli  kubernetes.Interface
	log  *slog.Logger
	rec  record.EventRecorder

	stop      context.CancelFunc
	watches   sync.WaitGroup
	broadcast record.EventBroadcaster // nil when Options.Recorder was given

	mu     sync.Mutex
	admin  map[string]compute.Credentials // by compute id: Busy asks on every scheduler tick
	active map[string]activePod           // running Pods by compute id, watched for crashes
	onExit func(computeID string, err error)
	// nodes caches the cluster's nodes once watchNodes has started;
	// nodesSynced reports when it is filled.
	nodes           cache.Store
	nodesSynced     func() bool
	nodeWatchFailed bool
}

// activePod is the Pod an active compute runs on.
type activePod struct {
	uid  types.UID
	node string
}

var _ compute.Driver = (*Driver)(nil)

// New checks the options and starts the Pod watch that detects crashes.
func New(opts Options) (*Driver, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	d := &Driver{
		opts:   opts,
		cli:    opts.Client,
		log:    opts.Logger.With("component", "kubernetes", "namespace", opts.Namespace),
		rec:    opts.Recorder,
		admin:  map[string]compute.Credentials{},
		active: map[string]activePod{},
	}
	if d.rec == nil {
		ec := opts.EventClient
		if ec == nil {
			ec = opts.Client
		}
		d.broadcast = record.NewBroadcaster()
		d.broadcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: ec.CoreV1().Events(opts.Namespace)})
		d.rec = d.broadcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "serverlessd"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	d.watches.Add(2)
	go func() { defer d.watches.Done(); d.monitor(ctx) }()
	go func() { defer d.watches.Done(); d.watchNodes(ctx) }()
	return d, nil
}

// normalize applies defaults and parses the quantities once, so that a typo
// in the config fails at start-up rather than at the first compute.
func (o *Options) normalize() error {
	if o.Client == nil {
		return fmt.Errorf("kubernetes driver: Client is required")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, DefaultNamespace)
	def(&o.Image, DefaultImage)
	def(&o.StorageSize, DefaultStorageSize)
	def(&o.CPU, DefaultCPU)
	def(&o.CPULimit, DefaultCPULimit)
	def(&o.Memory, DefaultMemory)
	for key, v := range map[string]string{"storage_size": o.StorageSize, "cpu": o.CPU, "cpu_limit": o.CPULimit, "memory": o.Memory} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("kubernetes driver: %s %q: %w", key, v, err)
		}
		if q.Sign() < 0 {
			return fmt.Errorf("kubernetes driver: %s %q: must not be negative", key, v)
		}
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Close stops the crash watch and flushes pending Events. Computes keep
// running: they outlive the daemon.
func (d *Driver) Close() {
	d.stop()
	d.watches.Wait()
	if d.broadcast != nil {
		d.broadcast.Shutdown()
	}
}

// Name is the driver's config name.
func (d *Driver) Name() string { return "kubernetes" }

// NodeLocal is false: a compute's Pod and PVC are reachable from every
// daemon of the cluster and outlive any one of them.
func (d *Driver) NodeLocal() bool { return false }

// BoundsStorage is true: a compute's PVC is its storage size, and
// StorageBytes reports that size, not its use.
func (d *Driver) BoundsStorage() bool { return true }

// SetExitHandler registers fn, called on its own goroutine when the Pod of an
// active compute fails or is deleted by someone else than this driver.
func (d *Driver) SetExitHandler(fn func(computeID string, err error)) {
	d.mu.Lock()
	d.onExit = fn
	d.mu.Unlock()
}

// Admin returns the daemon's admin credentials for the compute, read once
// from its Secret.
func (d *Driver) Admin(ctx context.Context, c *store.Compute) (compute.Credentials, error) {
	d.mu.Lock()
	cred, ok := d.admin[c.ID]
	d.mu.Unlock()
	if ok {
		return cred, nil
	}
	name, err := objectName(c.ID)
	if err != nil {
		return compute.Credentials{}, err
	}
	s, err := d.cli.CoreV1().Secrets(d.opts.Namespace).Get(ctx, name, getOpts)
	if err != nil {
		return compute.Credentials{}, fmt.Errorf("compute %s: read admin secret: %w", c.ID, notProvisioned(err))
	}
	pw := string(s.Data[keyAdminPassword])
	if pw == "" {
		return compute.Credentials{}, fmt.Errorf("compute %s: secret %s has no %s", c.ID, name, keyAdminPassword)
	}
	cred = compute.Credentials{User: AdminUser, Password: pw}
	d.mu.Lock()
	d.admin[c.ID] = cred
	d.mu.Unlock()
	return cred, nil
}

// event records a Kubernetes Event on the compute's PVC: it is the one
// object that lives as long as the compute, so `kubectl describe pvc` shows
// its history across suspends.
func (d *Driver) event(name, typ, reason, format string, args ...any) {
	ref := &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: d.opts.Namespace, Name: name}
	d.rec.Eventf(ref, typ, reason, format, args...)
}

// setActive marks a Pod as a running compute the crash and node watches
// must report.
func (d *Driver) setActive(computeID string, pod *corev1.Pod) {
	d.mu.Lock()
	d.active[computeID] = activePod{uid: pod.UID, node: pod.Spec.NodeName}
	d.mu.Unlock()
}

// clearActive stops watching a compute for crashes (it is being stopped).
func (d *Driver) clearActive(computeID string) {
	d.mu.Lock()
	delete(d.active, computeID)
	d.mu.Unlock()
}

// Version is the MariaDB version of the default image, from its tag
// ("mariadb:10.11.10" gives "10.11.10-MariaDB"), for the proxy's greeting
// before any compute runs. It is empty when the tag does not say (a digest,
// or a name like "latest").
func (d *Driver) Version() string {
	return imageVersion(d.opts.Image)
}

func imageVersion(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return ""
	}
	tag, _, _ := strings.Cut(image[i+1:], "-")
	if !versionTag.MatchString(tag) {
		return ""
	}
	return tag + "-MariaDB"
}

// versionTag matches a full major.minor.patch tag.
var versionTag = regexp.MustCompile(`^\d+\.\d+\.\d+$`)
