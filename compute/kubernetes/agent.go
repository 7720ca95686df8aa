package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/store"
)

// A backup agent is a Pod on a compute's claim that runs `serverlessd
// agent run`: the backup work that must read or write the volume
// (shipping binary logs, snapshots, restores). Its init container copies
// the serverlessd binary out of AgentImage into a shared folder, and its
// container runs that binary in the compute's image, which has the
// mariadbd and mariadb-binlog a restore replays with.
const (
	// agentBinary is where the daemon's image holds the binary.
	agentBinary = "/usr/local/bin/serverlessd"
	// agentMountPath is the folder the two containers share (the binary,
	// and temporary files).
	agentMountPath = "/agent"
	agentVolume    = "agent"
	agentContainer = "agent"
	agentName      = "serverlessd-backup-agent"
	agentManagedBy = "serverlessd-backup"
	// agentMaxRuntime bounds an agent (seconds): the kubelet fails its Pod
	// past it, and the job with it.
	agentMaxRuntime = 6 * 60 * 60
)

// ErrNoAgentImage means backups need kubernetes.agent_image.
var ErrNoAgentImage = errors.New("no image for the backup agent: set kubernetes.agent_image to the serverlessd image")

// AgentImage is the image backup agents copy the binary from ("": none).
func (d *Driver) AgentImage() string { return d.opts.AgentImage }

// RunAgent runs a backup agent with job (JSON) of the given kind on
// compute c's claim and returns its report, once its Pod has ended; the
// Pod is then deleted. It is backup.RunAgent.
//
// An agent whose kind needs the compute stopped throughout (exclusive)
// and the compute's own Pod never run together, though another daemon may
// start the compute meanwhile: each creates its Pod, then looks for the
// other, and the agent gives up (an error) while the compute waits for it
// to end (yieldToAgents). Any other agent gives way to a start.
func (d *Driver) RunAgent(ctx context.Context, c *store.Compute, kind string, job []byte) ([]byte, error) {
	if d.opts.AgentImage == "" {
		return nil, ErrNoAgentImage
	}
	name, err := objectName(c.ID)
	if err != nil {
		return nil, err
	}
	pvc, err := d.cli.CoreV1().PersistentVolumeClaims(d.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("backup agent for compute %s: volume claim: %w", c.ID, err)
	}
	if datadir(pvc) == dataMountPath {
		return nil, fmt.Errorf("backup agent for compute %s: its volume keeps the datadir at its root (made by an older serverlessd); the agent needs it in %s/", c.ID, datadirName)
	}
	spec := d.agentPod(c, pvc, kind, job)
	// Beside the compute's Pod, if it runs: the claim may be attachable
	// to one node at a time, and a hot backup reads the datadir as
	// mariadbd writes it.
	if running, err := d.cli.CoreV1().Pods(d.opts.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil &&
		running.DeletionTimestamp == nil && running.Spec.NodeName != "" {
		spec.Spec.NodeName = running.Spec.NodeName
	}
	pod, err := d.cli.CoreV1().Pods(d.opts.Namespace).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("backup agent for compute %s: create its pod: %w", c.ID, err)
	}
	log := d.log.With("compute", c.ID, "project", c.ProjectID, "pod", pod.Name, "job", kind)
	t0 := time.Now()
	defer d.deleteAgent(pod.Name, log)
	if exclusiveAgent(kind) && d.computePodLive(ctx, name) {
		return nil, fmt.Errorf("backup agent for compute %s: %w", c.ID, ErrComputeStarted)
	}
	pod, err = d.waitEnded(ctx, pod.Name)
	if err != nil {
		return nil, fmt.Errorf("backup agent for compute %s: %w", c.ID, err)
	}
	log.Info("backup agent ended", "phase", pod.Status.Phase, "duration", time.Since(t0))
	return agentReport(pod)
}

// waitEnded waits until the Pod has succeeded or failed, failing early as
// a compute's Pod would: deleted, a fatal waiting reason, no node for it.
func (d *Driver) waitEnded(ctx context.Context, name string) (*corev1.Pod, error) {
	var ended, last *corev1.Pod
	err := d.waitPod(ctx, name, func(pod *corev1.Pod) (bool, error) {
		if pod == nil {
			return false, errPodGone
		}
		last = pod
		if terminal(pod) {
			ended = pod
			return true, nil
		}
		return false, d.podTrouble(pod)
	})
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("pod %s did not end (%s): %w", name, describe(last), ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", name, err)
	}
	return ended, nil
}

// agentReport is the agent's report, from its container's termination
// message, or the error it ended with.
func agentReport(pod *corev1.Pod) ([]byte, error) {
	for _, cs := range slices.Concat(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses) {
		t := cs.State.Terminated
		if t == nil || (cs.Name != agentContainer && t.ExitCode == 0) {
			continue
		}
		if t.ExitCode == 0 {
			return []byte(t.Message), nil
		}
		msg := strings.TrimPrefix(strings.TrimSpace(t.Message), "error: ")
		return nil, fmt.Errorf("pod %s: container %s failed (exit code %d): %s", pod.Name, cs.Name, t.ExitCode, msg)
	}
	return nil, fmt.Errorf("pod %s %s: %s %s", pod.Name, pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
}

// deleteAgent deletes an ended agent's Pod, whatever the caller's context.
func (d *Driver) deleteAgent(name string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zero := int64(0)
	err := d.cli.CoreV1().Pods(d.opts.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil {
		log.Warn("could not delete the backup agent's pod; delete it by hand", "err", err)
	}
}

// ErrComputeStarted means a compute started while an agent that needs it
// stopped was about to work on its volume: the job did not run.
var ErrComputeStarted = errors.New("the compute started meanwhile (a login on another daemon); the job did not run: retry")

// agentJobLabel carries an agent's kind of job.
const agentJobLabel = "serverlessd.io/agent-job"

// exclusiveAgent reports whether an agent of kind needs the compute
// stopped from its start to its end: those that write the volume, or
// keep its data for a restore. A snapshot after a suspend gives way to a
// wake (the snapshot is abandoned); a hot backup runs beside the compute.
func exclusiveAgent(kind string) bool { return kind != "suspended" && kind != "hot" }

// computePodLive reports whether the compute's own Pod exists and is not
// going.
func (d *Driver) computePodLive(ctx context.Context, name string) bool {
	pod, err := d.cli.CoreV1().Pods(d.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	return err == nil && pod.DeletionTimestamp == nil
}

// yieldToAgents is Start's side of RunAgent's exclusion, once it has
// created the compute's Pod: a snapshot agent on the claim is deleted (its
// snapshot would be of a running compute); while an exclusive one works,
// the compute's Pod is deleted, and created again once the agent ends.
func (d *Driver) yieldToAgents(ctx context.Context, c *store.Compute, name string, pvc *corev1.PersistentVolumeClaim, pod *corev1.Pod) (*corev1.Pod, error) {
	pods := d.cli.CoreV1().Pods(d.opts.Namespace)
	sel := metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + agentManagedBy + "," + ComputeLabel + "=" + c.ID}
	for {
		list, err := pods.List(ctx, sel)
		if err != nil {
			return nil, fmt.Errorf("list backup agents: %w", err)
		}
		busy := ""
		for _, a := range list.Items {
			switch {
			case terminal(&a) || a.DeletionTimestamp != nil:
			case a.Labels[agentJobLabel] == "suspended":
				d.deleteAgent(a.Name, d.log.With("compute", c.ID, "pod", a.Name))
			case exclusiveAgent(a.Labels[agentJobLabel]):
				busy = a.Name
			}
		}
		if busy == "" {
			return pod, nil
		}
		d.log.Info("waiting for a backup agent before starting", "compute", c.ID, "agent", busy)
		if _, err := d.deletePod(ctx, name); err != nil {
			return nil, err
		}
		err = d.waitPod(ctx, busy, func(a *corev1.Pod) (bool, error) { return a == nil || terminal(a), nil })
		if err != nil {
			return nil, fmt.Errorf("wait for backup agent %s: %w", busy, err)
		}
		if pod, err = d.ensurePod(ctx, c, name, pvc); err != nil {
			return nil, err
		}
	}
}

// agentPod builds an agent's Pod on the compute's claim: the compute's
// user, node constraints and image, no API access, no ingress (the
// NetworkPolicy for agentManagedBy).
func (d *Driver) agentPod(c *store.Compute, pvc *corev1.PersistentVolumeClaim, kind string, job []byte) *corev1.Pod {
	labels := labelsFor(c)
	labels[ManagedByLabel], labels["app.kubernetes.io/name"], labels[agentJobLabel] = agentManagedBy, agentName, kind
	image := c.Spec.Image
	if image == "" {
		image = d.opts.Image
	}
	uid, fsChange := int64(mysqlUID), corev1.FSGroupChangeOnRootMismatch
	no, deadline := false, int64(agentMaxRuntime)
	mounts := []corev1.VolumeMount{{Name: agentVolume, MountPath: agentMountPath}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pvc.Name + "-agent-", Namespace: d.opts.Namespace, Labels: labels,
			OwnerReferences: ownedBy(pvc)},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			NodeSelector:                  d.opts.NodeSelector,
			Tolerations:                   d.tolerations(),
			TerminationGracePeriodSeconds: ptr(int64(30)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr(true), RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
				FSGroupChangePolicy: &fsChange,
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{
				Name: "install", Image: d.opts.AgentImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{agentBinary, "agent", "install", agentMountPath + "/serverlessd"},
				VolumeMounts:    mounts,
				SecurityContext: restricted(),
			}},
			Containers: []corev1.Container{{
				Name: agentContainer, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command:                  []string{agentMountPath + "/serverlessd", "agent", "run"},
				Env:                      d.agentEnv(pvc, kind, job),
				EnvFrom:                  d.agentEnvFrom(),
				Resources:                agentResources(),
				VolumeMounts:             append(mounts, corev1.VolumeMount{Name: dataVolume, MountPath: dataMountPath}),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext:          restricted(),
			}},
			Volumes: []corev1.Volume{
				{Name: dataVolume, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name},
				}},
				{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

func (d *Driver) agentEnv(pvc *corev1.PersistentVolumeClaim, kind string, job []byte) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: "SERVERLESSD_AGENT_JOB", Value: string(job)},
		{Name: "SERVERLESSD_DATADIR", Value: datadir(pvc)},
		{Name: "TMPDIR", Value: agentMountPath},
	}
	if kind == "hot" { // the daemon's account, for mariadb-backup's login
		env = append(env, corev1.EnvVar{Name: "SERVERLESSD_ADMIN_PASSWORD", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: pvc.Name}, Key: keyAdminPassword},
		}})
	}
	for _, k := range slices.Sorted(maps.Keys(d.opts.AgentEnv)) {
		env = append(env, corev1.EnvVar{Name: k, Value: d.opts.AgentEnv[k]})
	}
	return env
}

// agentEnvFrom adds the keys of AgentSecret, when it exists (the target's
// credentials), to the agent's environment.
func (d *Driver) agentEnvFrom() []corev1.EnvFromSource {
	if d.opts.AgentSecret == "" {
		return nil
	}
	return []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: d.opts.AgentSecret}, Optional: ptr(true)}}}
}

// agentResources: little CPU (it waits on the network), and memory for a
// restore's private mariadbd.
func agentResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
}

func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}
