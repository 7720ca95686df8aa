//go:build linux && realnode

package realnode

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// imageRev names the cached root filesystems and images: bump it when the
// way they are built changes, and the next run builds them again.
const imageRev = "r1"

// mariadbRev names the mariadb root filesystem and image alone: r2 made
// its mysql user 999 and its configuration the official image's; r3 added
// mariadb-backup, which the official image has too (hot backups).
const mariadbRev = "r3"

// The images the node runs, all made here: the machine has no registry.
const (
	pauseImage   = "localhost/pause:realnode"
	mariadbImage = "localhost/serverlessd-mariadb:test"
	// baseImage is a Debian root filesystem with CA certificates, for the
	// daemon's image (not imported into the node yet).
	baseImage = "localhost/serverlessd-base:test"
	suite     = "bookworm"
)

// images are docker-archive files of the images, in the cache.
type images struct {
	archives map[string]string // image reference -> docker-archive path
}

// buildImages returns the images, building what the cache lacks. work is a
// scratch folder, removed when done; buildah keeps its storage there (vfs:
// no mounts to leave behind) and not in /var/lib/containers.
func buildImages(cache, work, kubeVersion string, logf func(string, ...any)) (*images, error) {
	im := &images{archives: map[string]string{
		pauseImage:   filepath.Join(cache, fmt.Sprintf("image-pause-%s-%s.tar", kubeVersion, imageRev)),
		mariadbImage: filepath.Join(cache, "image-serverlessd-mariadb-"+mariadbRev+".tar"),
		baseImage:    filepath.Join(cache, "image-serverlessd-base-"+imageRev+".tar"),
	}}
	defer os.RemoveAll(work)
	b := &builder{cache: cache, work: work, logf: logf}
	if !exists(im.archives[pauseImage]) {
		if err := b.pause(kubeVersion, im.archives[pauseImage]); err != nil {
			return nil, err
		}
	}
	baseFS := filepath.Join(cache, fmt.Sprintf("rootfs-%s-minbase-%s.tar", suite, imageRev))
	if !exists(baseFS) {
		if err := b.debootstrap(baseFS); err != nil {
			return nil, err
		}
	}
	if !exists(im.archives[baseImage]) {
		if err := b.image(baseFS, baseImage, im.archives[baseImage], nil); err != nil {
			return nil, err
		}
	}
	mariadbFS := filepath.Join(cache, fmt.Sprintf("rootfs-%s-mariadb-%s.tar", suite, mariadbRev))
	if !exists(mariadbFS) {
		if err := b.mariadbRootfs(baseFS, mariadbFS); err != nil {
			return nil, err
		}
	}
	if !exists(im.archives[mariadbImage]) {
		if err := b.image(mariadbFS, mariadbImage, im.archives[mariadbImage], []string{"--cmd", "mariadbd"}); err != nil {
			return nil, err
		}
	}
	return im, nil
}

type builder struct {
	cache, work string
	logf        func(string, ...any)
}

// buildah runs buildah on storage of its own in the scratch folder, with
// a containers.conf that keeps its CNI lock out of /etc/cni. (Its blob
// info cache still goes to /var/lib/containers/cache, which no flag moves:
// cleanup removes that folder if the run made it.)
func (b *builder) buildah(args ...string) (string, error) {
	root := filepath.Join(b.work, "buildah")
	conf := filepath.Join(root, "containers.conf")
	if !exists(conf) {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return "", err
		}
		data := fmt.Sprintf("[network]\nnetwork_config_dir = %q\n", filepath.Join(root, "cni"))
		if err := os.WriteFile(conf, []byte(data), 0o644); err != nil {
			return "", err
		}
	}
	global := []string{"--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "vfs"}
	var stderr bytes.Buffer
	cmd := exec.Command("buildah", append(global, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("buildah %s: %w\n%s", strings.Join(args, " "), err, kubetest.Tail(stderr.String(), 3000))
	}
	return strings.TrimSpace(string(out)), nil
}

// pause builds the Pod sandbox image from Kubernetes' own pause.c (in the
// module cache, at the version of the other binaries), statically linked
// into an image with nothing else: containerd's CRI needs a sandbox image
// and would pull registry.k8s.io/pause otherwise.
func (b *builder) pause(kubeVersion, archive string) error {
	t0 := time.Now()
	modDir, err := kubetest.Output("go", "list", "-C", apiserverModule, "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	if err != nil {
		return err
	}
	dir := filepath.Join(b.work, "pause")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "pause")
	if _, err := kubetest.Output("gcc", "-Os", "-Wall", "-static", "-DVERSION="+kubeVersion, "-o", bin,
		filepath.Join(modDir, "build", "pause", "linux", "pause.c")); err != nil {
		return err
	}
	ctr, err := b.buildah("from", "scratch")
	if err != nil {
		return err
	}
	defer b.buildah("rm", ctr)
	steps := [][]string{
		{"copy", ctr, bin, "/pause"},
		{"config", "--entrypoint", `["/pause"]`, ctr},
	}
	if err := b.commit(ctr, steps, pauseImage, archive); err != nil {
		return err
	}
	b.logf("pause image built in %s", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// image commits a root filesystem tarball as an image and writes it as a
// docker-archive (which keeps the image's name, for ctr import).
func (b *builder) image(rootfs, ref, archive string, config []string) error {
	t0 := time.Now()
	ctr, err := b.buildah("from", "scratch")
	if err != nil {
		return err
	}
	defer b.buildah("rm", ctr)
	// buildah add unpacks a local tarball into the container.
	steps := [][]string{{"add", ctr, rootfs, "/"}}
	if config != nil {
		steps = append(steps, append(append([]string{"config"}, config...), ctr))
	}
	if err := b.commit(ctr, steps, ref, archive); err != nil {
		return err
	}
	b.logf("image %s built in %s", ref, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

func (b *builder) commit(ctr string, steps [][]string, ref, archive string) error {
	steps = append(steps, []string{"commit", "-q", ctr, ref},
		[]string{"push", ref, "docker-archive:" + archive + ".tmp:" + ref})
	_ = os.Remove(archive + ".tmp")
	for _, s := range steps {
		if _, err := b.buildah(s...); err != nil {
			return err
		}
	}
	return os.Rename(archive+".tmp", archive)
}

// debootstrap makes a minimal Debian root filesystem, with CA certificates,
// from the mirror the host's apt uses, and tars it into the cache.
func (b *builder) debootstrap(tarball string) error {
	t0 := time.Now()
	dir := filepath.Join(b.work, "minbase")
	mirror := aptMirror()
	b.logf("debootstrap %s from %s (minutes, once)", suite, mirror)
	if _, err := kubetest.Output("debootstrap", "--variant=minbase", "--include=ca-certificates", suite, dir, mirror); err != nil {
		return err
	}
	// apt's lists are 40 MB that no image needs.
	if err := clearDir(filepath.Join(dir, "var/lib/apt/lists")); err != nil {
		return err
	}
	if err := tarDir(dir, tarball); err != nil {
		return err
	}
	b.logf("rootfs %s made in %s", filepath.Base(tarball), time.Since(t0).Round(time.Second))
	return os.RemoveAll(dir)
}

// mariadbInstall runs in the chroot. It makes the image what the
// kubernetes driver expects of the official image (docker.io/mariadb):
//   - the mysql user is 999:999, made before mariadb-server, whose postinst
//     keeps an existing system user (Debian's would be 100 or so);
//   - /run/mysqld, where Debian's my.cnf puts the socket and pid file, is
//     writable whatever the uid, since the driver's start script runs
//     mariadbd with the configuration files;
//   - the configuration binds every address and names no user nor log
//     file (Debian's binds 127.0.0.1 only, which Pods cannot reach).
const mariadbInstall = `set -e
groupadd --system --gid 999 mysql
useradd --system --uid 999 --gid mysql --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mysql
apt-get update -q
apt-get install -y -q --no-install-recommends mariadb-server mariadb-backup
apt-get clean
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
chmod 1777 /run/mysqld
find /etc/mysql/ -name '*.cnf' -print0 | xargs -0 grep -lZE '^(bind-address|log|user\s)' |
  xargs -r -0 sed -Ei 's/^(bind-address|log|user\s)/#&/'
`

// mariadbRootfs installs mariadb-server into a copy of the minimal root
// filesystem with apt-get in a chroot, and checks the mysql user's ids.
func (b *builder) mariadbRootfs(baseFS, tarball string) error {
	t0 := time.Now()
	dir := filepath.Join(b.work, "mariadb")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := kubetest.Output("tar", "-C", dir, "-xf", baseFS); err != nil {
		return err
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return err
	}
	// apt-get in the chroot resolves the mirror with the host's DNS; the
	// policy-rc.d keeps mariadb-server's postinst from starting mariadbd
	// (there is no init in a chroot, and it would outlive the install).
	files := map[string]string{"etc/resolv.conf": string(resolv), "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o755); err != nil {
			return err
		}
	}
	cmd := exec.Command("chroot", dir, "sh", "-c", mariadbInstall)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LANG=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install mariadb-server in the chroot: %w\n%s", err, kubetest.Tail(string(out), 3000))
	}
	// The postinst initialized /var/lib/mysql: a Pod makes its own datadir.
	for _, d := range []string{"var/lib/mysql", "var/lib/apt/lists"} {
		if err := clearDir(filepath.Join(dir, d)); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(dir, "usr/sbin/policy-rc.d")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	uid, gid, err := passwdIDs(filepath.Join(dir, "etc/passwd"), "mysql")
	if err != nil {
		return err
	}
	if uid != mysqlUID || gid != mysqlUID {
		return fmt.Errorf("the image's mysql user is %d:%d, want %d:%d", uid, gid, mysqlUID, mysqlUID)
	}
	if err := tarDir(dir, tarball); err != nil {
		return err
	}
	b.logf("rootfs %s made in %s", filepath.Base(tarball), time.Since(t0).Round(time.Second))
	return os.RemoveAll(dir)
}

// aptMirror is the host's Debian mirror: the first URI of a deb822 or
// one-line source whose path ends in /debian (not debian-security).
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			for _, field := range strings.Fields(line) {
				if strings.HasPrefix(field, "http") && strings.HasSuffix(strings.TrimSuffix(field, "/"), "/debian") {
					return field
				}
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// passwdIDs returns a user's uid and gid from a passwd file.
func passwdIDs(passwd, user string) (uid, gid int64, err error) {
	f, err := os.Open(passwd)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 3 && fields[0] == user {
			uid, err1 := strconv.ParseInt(fields[2], 10, 64)
			gid, err2 := strconv.ParseInt(fields[3], 10, 64)
			if err1 != nil || err2 != nil {
				return 0, 0, fmt.Errorf("%s: bad entry for %s", passwd, user)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("%s: no user %s", passwd, user)
}

// tarDir writes dir's content as a tarball (numeric owners: the image's
// users are not the host's), through a temporary name.
func tarDir(dir, tarball string) error {
	if _, err := kubetest.Output("tar", "-C", dir, "--numeric-owner", "-cf", tarball+".tmp", "."); err != nil {
		return err
	}
	return os.Rename(tarball+".tmp", tarball)
}

// clearDir removes what a folder holds, not the folder.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
