//go:build linux && realnode

package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// apiserverModule is the module that exists only to build Kubernetes
// binaries (its go.mod has a tool line for each): the harness's module
// embeds etcd server v3.6 and Kubernetes needs the v3.7 client modules.
const apiserverModule = "../apiserver"

// kubeCommands are the Kubernetes binaries a real node runs.
var kubeCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// cacheDir is where built binaries and images are kept between runs: the
// same folder as the harness's kube-apiserver (SERVERLESSD_KUBE_CACHE or
// ~/.cache/serverlessd-kube).
func cacheDir() (string, error) {
	if d := os.Getenv("SERVERLESSD_KUBE_CACHE"); d != "" {
		return d, os.MkdirAll(d, 0o755)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	d := filepath.Join(base, "serverlessd-kube")
	return d, os.MkdirAll(d, 0o755)
}

// kubeBinaries returns the path of each of kubeCommands, built from
// k8s.io/kubernetes at the version the apiserver module pins and cached by
// Kubernetes and Go version, named as the harness names kube-apiserver
// (kube-apiserver-v1.37.2-go1.26.8) so that both share it. The missing ones
// are built by one go build: the packages they share compile once.
func kubeBinaries(logf func(string, ...any)) (map[string]string, error) {
	ver, err := output("go", "list", "-C", apiserverModule, "-m", "-f", "{{.Version}}", "k8s.io/kubernetes")
	if err != nil {
		return nil, err
	}
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	var missing []string
	for _, c := range kubeCommands {
		bins[c] = filepath.Join(cache, fmt.Sprintf("%s-%s-%s", c, ver, runtime.Version()))
		if _, err := os.Stat(bins[c]); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return bins, nil
	}
	tmp, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-C", apiserverModule, "-trimpath", "-o", tmp + "/"}
	for _, c := range missing {
		args = append(args, "k8s.io/kubernetes/cmd/"+c)
	}
	logf("building %v %s into %s (minutes, once)", missing, ver, cache)
	t0 := time.Now()
	if _, err := output("go", args...); err != nil {
		return nil, err
	}
	for _, c := range missing {
		if err := os.Rename(filepath.Join(tmp, c), bins[c]); err != nil {
			return nil, err
		}
	}
	logf("built %v in %s", missing, time.Since(t0).Round(time.Second))
	return bins, nil
}
