//go:build linux && realnode

package realnode

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// The daemon's image, built from the repository's Dockerfile as it is, and
// the two images its FROM lines name. The machine has no registry: the
// stand-ins are made here, under those exact names, and the build runs
// with --pull=never, so it uses them or fails.
const (
	daemonImage   = "localhost/serverlessd:test"
	golangImage   = "docker.io/library/golang:1.26-bookworm"
	distrolessImg = "gcr.io/distroless/static-debian12:nonroot"
	// dockerfileRev names the stand-ins' storage: bump it when the way
	// they are made changes.
	dockerfileRev = "r1"
)

// goEnv is the golang stand-in's configuration: the official image's
// (GOPATH /go, Go in /usr/local/go on the PATH) plus what a build with no
// network needs. The Dockerfile's `RUN go mod download` then reads the
// host's module cache, mounted at /go/pkg/mod, and downloads nothing;
// GOTOOLCHAIN=local keeps go.mod's toolchain line from asking for another.
var goEnv = []string{
	"PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"GOPATH=/go", "GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=-mod=readonly",
}

// buildDaemonImage builds the Dockerfile with buildah into a docker-archive
// in dir and returns its path. buildah's storage is kept in the cache (per
// Go version, since the golang stand-in is the host's Go): the stand-ins
// are made once (a minute or two on vfs). No --layers: on vfs every layer
// is a full copy of the 400 MB build stage, so committing each step costs
// more than the steps (go mod download reads the mounted cache, go build
// the mounted build cache), and keeping them would grow the cache by
// gigabytes a build.
func buildDaemonImage(cache, dir string, logf func(string, ...any)) (string, error) {
	b := &builder{cache: cache, work: filepath.Join(cache, fmt.Sprintf("dockerfile-%s-%s", runtime.Version(), dockerfileRev)), logf: logf}
	if err := b.standIns(); err != nil {
		return "", err
	}
	// The build's "go mod download" runs without network against the
	// host's module cache, so the host runs the same command first: it
	// fetches every module go.mod requires, including ones the host's own
	// builds never need (a Windows-only dependency of cobra, for one).
	if _, err := kubetest.Output("go", "mod", "download", "-C", repoRoot); err != nil {
		return "", err
	}
	modCache, err := kubetest.Output("go", "env", "GOMODCACHE")
	if err != nil {
		return "", err
	}
	goCache, err := kubetest.Output("go", "env", "GOCACHE")
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	// No network in RUN steps (nothing to reach, and no CNI to set up).
	// The module cache is mounted read-only; the build cache read-write,
	// so that a build compiles only what changed since the host's last.
	// .dockerignore leaves test/ out of the context.
	if _, err := b.buildah("bud", "-q", "--pull=never", "--network=none", "--layers=false",
		"--volume", modCache+":/go/pkg/mod:ro", "--volume", goCache+":/root/.cache/go-build",
		"-f", filepath.Join(repoRoot, "Dockerfile"), "-t", daemonImage, repoRoot); err != nil {
		return "", err
	}
	// The previous build's image, untagged by this one.
	_, _ = b.buildah("rmi", "--prune")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	archive := filepath.Join(dir, "serverlessd-image.tar")
	// An earlier test's archive: docker-archive cannot overwrite one.
	if err := os.Remove(archive); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if _, err := b.buildah("push", daemonImage, "docker-archive:"+archive+":"+daemonImage); err != nil {
		return "", err
	}
	logf("Dockerfile built with buildah in %s", time.Since(t0).Round(100*time.Millisecond))
	return archive, nil
}

// standIns makes the Dockerfile's base images in the build storage, if it
// lacks them: golang = the Debian minimal root filesystem plus the host's
// Go tree; distroless = the base image (Debian minbase with CA
// certificates, tzdata). Both are Debian 12 as the real ones are; the real
// distroless has no shell, which the final stage does not use.
func (b *builder) standIns() error {
	if out, err := b.buildah("images", "--format", "{{.Name}}:{{.Tag}}"); err == nil &&
		strings.Contains(out, golangImage) && strings.Contains(out, distrolessImg) {
		return nil
	}
	t0 := time.Now()
	baseFS := filepath.Join(b.cache, fmt.Sprintf("rootfs-%s-minbase-%s.tar", suite, imageRev))
	// The Go that runs the test: the Dockerfile's golang:1.26 stands for it.
	goroot, err := kubetest.Output("go", "env", "GOROOT")
	if err != nil {
		return err
	}
	ctr, err := b.buildah("from", "scratch")
	if err != nil {
		return err
	}
	defer b.buildah("rm", ctr)
	config := []string{"config", "--workingdir", "/go"}
	for _, e := range goEnv {
		config = append(config, "--env", e)
	}
	steps := [][]string{
		{"add", ctr, baseFS, "/"},
		{"copy", ctr, goroot, "/usr/local/go"},
		append(config, ctr),
		{"commit", "-q", ctr, golangImage},
		{"pull", "-q", "docker-archive:" + filepath.Join(b.cache, "image-serverlessd-base-"+imageRev+".tar")},
		{"tag", baseImage, distrolessImg},
	}
	for _, s := range steps {
		if _, err := b.buildah(s...); err != nil {
			return err
		}
	}
	b.logf("the Dockerfile's base images made in %s", time.Since(t0).Round(100*time.Millisecond))
	return nil
}
