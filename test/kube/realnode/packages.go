//go:build linux && realnode

package realnode

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// hostPackages are the Debian packages a real node needs, each with a file
// that proves it is installed: checking files is much faster than dpkg and
// does not depend on how the file got there.
var hostPackages = []struct{ pkg, file string }{
	{"containerd", "/usr/bin/containerd"},
	{"runc", "/usr/sbin/runc"},
	// Debian puts the CNI plugins in /usr/lib/cni, not /opt/cni/bin.
	{"containernetworking-plugins", "/usr/lib/cni/bridge"},
	{"buildah", "/usr/bin/buildah"},
	{"debootstrap", "/usr/sbin/debootstrap"},
	// kube-proxy (iptables mode) and the bridge plugin's ipMasq use iptables;
	// Debian 12 points it at the nftables backend.
	{"iptables", "/usr/sbin/iptables"},
	// nft deletes the nftables tables iptables-nft made, at cleanup.
	{"nftables", "/usr/sbin/nft"},
	{"conntrack", "/usr/sbin/conntrack"},
	{"ipset", "/usr/sbin/ipset"},
	{"socat", "/usr/bin/socat"},
	{"ethtool", "/usr/sbin/ethtool"},
	// The pause image is built from Kubernetes' own pause.c, statically.
	{"gcc", "/usr/bin/gcc"},
	{"libc6-dev", "/usr/lib/x86_64-linux-gnu/libc.a"},
	// The daemon's store, run by pgtest (Debian 12's server is 15).
	{"postgresql", "/usr/lib/postgresql/15/bin/postgres"},
}

// ensurePackages installs, with apt-get, the packages whose file is missing.
// It installs no recommends: buildah's would pull in podman's networking.
func ensurePackages() error {
	var missing []string
	for _, p := range hostPackages {
		if _, err := os.Stat(p.file); err != nil {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("packages %s are missing and only root can install them", strings.Join(missing, " "))
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	cmd := exec.Command("apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		// A stale package list is the usual reason: update once and retry.
		if out2, err2 := exec.Command("apt-get", "update").CombinedOutput(); err2 != nil {
			return fmt.Errorf("apt-get update: %w\n%s", err2, kubetest.Tail(string(out2), 2000))
		}
		cmd = exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err = cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, kubetest.Tail(string(out), 3000))
		}
	}
	return nil
}
