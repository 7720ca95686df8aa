package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Kubernetes is the release of k8s.io/kubernetes that the apiserver module
// pins, and the folder its binaries are cached in.
type Kubernetes struct {
	Module  string // the apiserver module's folder, from the caller's
	Version string // as its go.mod pins it: v1.37.2
	Cache   string // CacheDir
}

// LocateKubernetes reads the release the apiserver module in folder
// module pins, and makes the cache folder.
func LocateKubernetes(module string) (*Kubernetes, error) {
	ver, err := Output("go", "list", "-C", module, "-m", "-f", "{{.Version}}", "k8s.io/kubernetes")
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	return &Kubernetes{Module: module, Version: ver, Cache: cache}, nil
}

// CacheDir is where built binaries and images are kept between runs, of
// both suites: SERVERLESSD_KUBE_CACHE, or serverlessd-kube in the user's
// cache folder. It makes the folder.
func CacheDir() (string, error) {
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

// Binaries returns the path of each of commands (kube-apiserver,
// kubelet...). Each is cached by Kubernetes and Go version
// (kube-apiserver-v1.37.2-go1.26.8), so that later runs of either suite
// skip the build. The missing ones are built by one go build, in which the
// packages they share compile once, into a temporary folder and then
// renamed into place: a build cut short leaves no binary in the cache.
func (k *Kubernetes) Binaries(commands []string, logf func(string, ...any)) (map[string]string, error) {
	bins := map[string]string{}
	var missing []string
	for _, c := range commands {
		bins[c] = filepath.Join(k.Cache, fmt.Sprintf("%s-%s-%s", c, k.Version, runtime.Version()))
		if _, err := os.Stat(bins[c]); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return bins, nil
	}
	tmp, err := os.MkdirTemp(k.Cache, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-C", k.Module, "-trimpath", "-o", tmp + "/"}
	for _, c := range missing {
		args = append(args, "k8s.io/kubernetes/cmd/"+c)
	}
	logf("building %v %s into %s (minutes, once)", missing, k.Version, k.Cache)
	t0 := time.Now()
	if _, err := Output("go", args...); err != nil {
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
