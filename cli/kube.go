package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/serverlessd/serverlessd/compute"
	kubedriver "github.com/serverlessd/serverlessd/compute/kubernetes"
	"github.com/serverlessd/serverlessd/config"
)

// openKubernetes builds the kubernetes compute driver from the config: the
// kubeconfig file when one is set, else the Pod's in-cluster service account.
func openKubernetes(cfg config.Config, log *slog.Logger) (compute.Driver, error) {
	k := cfg.Kubernetes
	// client-go logs through klog: send it to the daemon's log.
	klog.SetSlogLogger(log.With("component", "kubernetes"))
	rc, err := restConfig(k.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "serverlessd/" + Version
	// client-go's default limit (5 requests/s, bursts of 10) would queue a
	// wake behind the previous suspend's calls: a resume costs about five
	// requests, and clients wait on it. The API server's priority and
	// fairness protects it from us instead.
	rc.QPS, rc.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	// Events get their own client, so that recording them never takes a
	// lifecycle call's turn.
	events, err := kubernetes.NewForConfig(rest.CopyConfig(rc))
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	tols := make([]corev1.Toleration, 0, len(k.Tolerations))
	for _, t := range k.Tolerations {
		tols = append(tols, corev1.Toleration{
			Key: t.Key, Operator: corev1.TolerationOperator(t.Operator),
			Value: t.Value, Effect: corev1.TaintEffect(t.Effect),
		})
	}
	agentImage := k.AgentImage
	if agentImage == "" && cfg.Backup.Enabled && k.Kubeconfig == "" {
		agentImage = ownImage(cs, k.Namespace, log)
	}
	return kubedriver.New(kubedriver.Options{
		Client:       cs,
		EventClient:  events,
		Namespace:    k.Namespace,
		Image:        k.Image,
		StorageClass: k.StorageClass,
		StorageSize:  k.StorageSize,
		CPU:          k.CPU,
		CPULimit:     k.CPULimit,
		Memory:       k.Memory,
		NodeSelector: k.NodeSelector,
		Tolerations:  tols,
		StopTimeout:  cfg.Compute.StopTimeout,
		Logger:       log,
		Binlog:       cfg.Backup.Enabled,
		AgentImage:   agentImage,
		AgentEnv:     agentEnv(cfg.Backup.S3),
		AgentSecret:  k.AgentSecret,
	})
}

// agentEnv is the backup agents' target, as `serverlessd agent run`
// reads it. Credentials never go in a Pod's spec: they come from the
// kubernetes.agent_secret Secret or the nodes' own AWS credentials.
func agentEnv(o config.S3) map[string]string {
	env := map[string]string{}
	for k, v := range map[string]string{envS3Endpoint: o.Endpoint, envS3Bucket: o.Bucket, envS3Prefix: o.Prefix, envS3Region: o.Region} {
		if v != "" {
			env[k] = v
		}
	}
	return env
}

// ownImage is the image of the daemon's own Pod (a Pod's hostname is its
// name), for backup agents; "" if it cannot be read.
func ownImage(cs kubernetes.Interface, namespace string, log *slog.Logger) string {
	name, err := os.Hostname()
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pod, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || len(pod.Spec.Containers) == 0 {
		log.Warn("could not read this daemon's own image for backup agents; set kubernetes.agent_image", "pod", name, "err", err)
		return ""
	}
	// The digest it runs, where the kubelet reports one: a tag may have
	// moved since, and the agents must run this daemon's version.
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == pod.Spec.Containers[0].Name && strings.Contains(cs.ImageID, "@sha256:") {
			return strings.TrimPrefix(cs.ImageID, "docker-pullable://")
		}
	}
	return pod.Spec.Containers[0].Image
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes.kubeconfig is empty and this is not a Pod (%w): set kubernetes.kubeconfig", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}
