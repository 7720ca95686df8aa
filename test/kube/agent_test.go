package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// isAgent reports whether a Pod is a backup agent's, as the kubernetes
// driver labels them.
func isAgent(pod *corev1.Pod) bool {
	return pod.Labels["app.kubernetes.io/managed-by"] == "serverlessd-backup"
}

// runAgent runs a backup agent's Pod as a kubelet would, once its init
// container has put the binary in place: the serverlessd binary the tests
// built, as the container's command, with the container's environment
// (its envFrom Secrets included) and its datadir translated to the folder
// that stands for the claim. The Pod then ends, with the agent's report as
// the container's termination message.
func (n *node) runAgent(ctx context.Context, pod *corev1.Pod) {
	ct := pod.Spec.Containers[0]
	env, err := n.agentEnv(ctx, pod, ct)
	var out []byte
	code, msg := int32(1), ""
	if err == nil {
		out, code, msg, err = runAgentProcess(ctx, ct, env)
	}
	if err != nil {
		msg = err.Error()
	}
	if code != 0 {
		n.logf("agent pod %s failed: %s\n%s", pod.Name, msg, kubetest.Tail(string(out), 3000))
	}
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	n.setStatus(ctx, pod, func(p *corev1.Pod) {
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ct.Name, Image: ct.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: msg}}}}
	})
}

// runAgentProcess runs the agent and returns its output, exit code and
// report (the termination message).
func runAgentProcess(ctx context.Context, ct corev1.Container, env []string) ([]byte, int32, string, error) {
	if len(ct.Command) < 1 || filepath.Base(ct.Command[0]) != "serverlessd" {
		return nil, 1, "", fmt.Errorf("agent command %q is not serverlessd", ct.Command)
	}
	tmp, err := os.MkdirTemp("", "kube-agent-")
	if err != nil {
		return nil, 1, "", err
	}
	defer os.RemoveAll(tmp)
	result := filepath.Join(tmp, "termination-log")
	cmd := exec.CommandContext(ctx, daemonBin, ct.Command[1:]...)
	cmd.Env = append(env, "SERVERLESSD_AGENT_RESULT="+result, "TMPDIR="+tmp, "PATH="+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	code := int32(0)
	if errors.As(err, &exit) {
		code, err = int32(exit.ExitCode()), nil
	}
	msg, _ := os.ReadFile(result)
	return out, code, string(msg), err
}

// agentEnv is the container's environment as the kubelet gives it, the
// datadir moved to the claim's folder on this node.
func (n *node) agentEnv(ctx context.Context, pod *corev1.Pod, ct corev1.Container) ([]string, error) {
	var env []string
	for _, from := range ct.EnvFrom {
		if from.SecretRef == nil {
			continue
		}
		s, err := n.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
			continue
		}
		if err != nil {
			return nil, err
		}
		for k, v := range s.Data {
			env = append(env, k+"="+string(v))
		}
	}
	mount, claim := agentClaim(pod, ct)
	pvc, err := n.cs.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volume claim %q: %w", claim, err)
	}
	// The kubelet mounts a new claim's volume empty.
	if err := os.MkdirAll(n.volume(pvc), 0o755); err != nil {
		return nil, err
	}
	for _, e := range ct.Env {
		v := e.Value
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			data, err := n.secret(ctx, pod.Namespace, ref.SecretKeyRef.Name)
			if err != nil {
				return nil, err
			}
			v = string(data[ref.SecretKeyRef.Key])
		}
		if e.Name == "SERVERLESSD_DATADIR" {
			v = filepath.Join(n.volume(pvc), strings.TrimPrefix(v, mount))
		}
		if e.Name != "TMPDIR" {
			env = append(env, e.Name+"="+v)
		}
	}
	return env, nil
}

// agentClaim is where the container mounts a claim, and which.
func agentClaim(pod *corev1.Pod, ct corev1.Container) (mount, claim string) {
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		for _, m := range ct.VolumeMounts {
			if m.Name == v.Name {
				return m.MountPath, v.PersistentVolumeClaim.ClaimName
			}
		}
	}
	return "", ""
}
