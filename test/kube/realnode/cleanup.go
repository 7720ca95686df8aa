//go:build linux && realnode

package realnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/test/kube/kubetest"
)

// The host state a node changes, and that cleanup puts back.
var (
	// sysctls: the bridge plugin turns on forwarding (isGateway); the
	// kubelet sets its "kernel defaults" (protectKernelDefaults false);
	// kube-proxy could set conntrack and route_localnet ones (its
	// configuration asks it not to).
	trackedSysctls = []string{
		"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
		"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
		"net/ipv4/conf/all/route_localnet",
		"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
		"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
		"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	}
	// hostPaths are fixed paths the node's programs create whatever their
	// configuration: the kubelet links container logs in /var/log/containers,
	// containerd 1.6's shims put their sockets in /run/containerd/s. The
	// others are listed so that a run that makes one shows in the check.
	hostPaths = []string{
		"/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/containerd",
		"/opt/containerd", "/var/lib/kubelet", "/var/lib/cni", "/etc/cni", "/opt/cni",
		"/run/netns", "/etc/kubernetes", "/run/kubernetes", "/var/lib/containers", "/run/containers",
		"/var/lib/kube-router", "/var/run/kube-router",
	}
)

// cgroupRoot holds one folder per cgroup v1 hierarchy; the kubelet
// (cgroupsPerQOS, cgroupfs driver) makes kubepods in each.
const cgroupRoot = "/sys/fs/cgroup"

// hostState is what the host had before a run. It is saved in the run's
// folder, so that a later run can restore it if this one dies uncleanly.
type hostState struct {
	Pid        int               // the test process
	Dir        string            // the run's folder
	Sysctls    map[string]string // tracked sysctl -> value
	Paths      map[string]bool   // hostPaths -> existed
	NFTables   []string          // "family name" of each nftables table
	CgroupDirs []string          // kubepods folders that existed (none, normally)
	IPSets     []string          // ipsets that existed (kube-router makes its own)
}

const stateFile = "host-state.json"

// recordHost records the host's state and saves it in dir.
func recordHost(dir string) (*hostState, error) {
	h := &hostState{Pid: os.Getpid(), Dir: dir, Sysctls: map[string]string{}, Paths: map[string]bool{}}
	for _, s := range trackedSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			h.Sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		h.Paths[p] = err == nil
	}
	h.NFTables = nftTables()
	h.CgroupDirs = kubepodsDirs()
	h.IPSets = ipsets()
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, err
	}
	return h, os.WriteFile(filepath.Join(dir, stateFile), data, 0o644)
}

// restore undoes what a run did to the host, in the order that lets each
// step work: processes first (they hold mounts, cgroups, links), mounts
// (they hold network namespaces, whose veths go with them), the bridge,
// the iptables rules, sysctls, cgroups, paths. It goes on past errors and
// returns them all.
func (h *hostState) restore() error {
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	killPodProcesses()
	killShims(filepath.Join(h.Dir, "node", "containerd", "containerd.sock"))
	killUnder(h.Dir)
	note(unmountUnder(h.Dir))
	note(deleteBridge())
	for _, cmd := range []string{"iptables", "ip6tables"} {
		note(flushChains(cmd))
	}
	// After the rules: a set that a rule names cannot be destroyed.
	note(h.destroyIPSets())
	note(h.deleteNFTables())
	for s, v := range h.Sysctls {
		cur, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err == nil && strings.TrimSpace(string(cur)) != v {
			note(os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644))
		}
	}
	note(h.removeCgroups())
	for p, existed := range h.Paths {
		if !existed {
			note(removeIfMade(p))
		}
	}
	return errors.Join(errs...)
}

// sweepLeftovers restores the host after earlier runs that could not clean
// up (killed, timed out): each left its folder with its state file.
func sweepLeftovers(logf func(string, ...any)) error {
	files, _ := filepath.Glob(filepath.Join(os.TempDir(), "realnode-*", stateFile))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var h hostState
		if err := json.Unmarshal(data, &h); err != nil {
			continue
		}
		if h.Pid != os.Getpid() && syscall.Kill(h.Pid, 0) == nil {
			return fmt.Errorf("run %s (pid %d) is still going: two nodes cannot share the host", h.Dir, h.Pid)
		}
		logf("cleaning up after an earlier run in %s", h.Dir)
		if err := h.restore(); err != nil {
			return fmt.Errorf("clean up %s: %w", h.Dir, err)
		}
		if err := os.RemoveAll(h.Dir); err != nil {
			return err
		}
	}
	return nil
}

// killPodProcesses kills every process in the kubelet's kubepods cgroups:
// the containers and their sandboxes' pause processes.
func killPodProcesses() {
	for range 50 {
		pids := 0
		for _, d := range kubepodsDirs() {
			data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					pids++
				}
			}
		}
		if pids == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killShims kills the containerd shims of the containerd listening on
// sock: they name its address on their command line.
func killShims(sock string) {
	for _, pid := range pidsWith(func(cmdline []string) bool {
		if len(cmdline) == 0 || !strings.Contains(filepath.Base(cmdline[0]), "containerd-shim") {
			return false
		}
		for _, a := range cmdline {
			if a == sock {
				return true
			}
		}
		return false
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// killUnder kills the processes a dead run left: those whose command line
// names its folder (containerd, the kubelet... of a run killed with -9).
func killUnder(dir string) {
	for _, pid := range pidsWith(func(cmdline []string) bool {
		for _, a := range cmdline {
			if strings.Contains(a, dir+"/") {
				return true
			}
		}
		return false
	}) {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func pidsWith(match func(cmdline []string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount point in dir, deepest first: the
// kubelet's root dir (it makes it rshared), Pod volumes, containerd's
// overlay root filesystems, /dev/shm of sandboxes, network namespaces.
func unmountUnder(dir string) error {
	for range 10 {
		points := mountsUnder(dir)
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, p := range points {
			// Detach: a mount still busy goes once its last user does.
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("still mounted: %v", left)
	}
	return nil
}

// mountsUnder lists the mount points in dir, from /proc/self/mountinfo.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	return points
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// deleteBridge deletes the CNI bridge and any veth still attached to it
// (a Pod's veth goes with its network namespace, normally).
func deleteBridge() error {
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err != nil {
		return nil
	}
	ports, _ := filepath.Glob(filepath.Join("/sys/class/net", bridgeName, "brif", "*"))
	for _, p := range ports {
		_, _ = kubetest.Output("ip", "link", "del", filepath.Base(p))
	}
	_, err := kubetest.Output("ip", "link", "del", bridgeName)
	return err
}

// flushChains removes, from every table, the chains of kube-proxy and of
// kube-router (KUBE-*: KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*) and of
// the CNI plugins (CNI-*) and the rules that jump to them, and
// leaves every other rule: it rewrites each table with iptables-restore,
// from iptables-save's output less those lines.
func flushChains(cmd string) error {
	return flushChainsMatching(cmd, func(chain string) bool {
		return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
	})
}

// flushChainsMatching removes the chains that ours matches, and the rules
// that jump to them, from every table.
func flushChainsMatching(cmd string, ours func(chain string) bool) error {
	if _, err := exec.LookPath(cmd + "-save"); err != nil {
		return nil
	}
	saved, err := kubetest.Output(cmd + "-save")
	if err != nil {
		return err
	}
	var kept []string
	changed := false
	for _, line := range strings.Split(saved, "\n") {
		f := strings.Fields(line)
		drop := false
		switch {
		case len(f) > 0 && strings.HasPrefix(f[0], ":"):
			drop = ours(f[0][1:])
		case len(f) > 1 && f[0] == "-A":
			drop = ours(f[1])
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && ours(f[i+1]) {
					drop = true
				}
			}
		}
		if drop {
			changed = true
			continue
		}
		kept = append(kept, line)
	}
	if !changed {
		return nil
	}
	c := exec.Command(cmd+"-restore", "-w")
	c.Stdin = strings.NewReader(strings.Join(kept, "\n") + "\n")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w\n%s", cmd, err, out)
	}
	return nil
}

// nftTables lists the nftables tables as "family name".
func nftTables() []string {
	out, err := kubetest.Output("nft", "list", "tables")
	if err != nil {
		return nil
	}
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables
}

// deleteNFTables deletes the tables that were not there before: iptables
// on the nftables backend makes a table (ip filter, ip nat, ip6 mangle...)
// the first time a rule goes in it, and flushing the rules leaves it.
func (h *hostState) deleteNFTables() error {
	before := map[string]bool{}
	for _, t := range h.NFTables {
		before[t] = true
	}
	var errs []error
	for _, t := range nftTables() {
		if !before[t] {
			if _, err := kubetest.Output("nft", append([]string{"delete", "table"}, strings.Fields(t)...)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// kubepodsDirs lists the kubepods cgroup folders (and those below them).
func kubepodsDirs() []string {
	var dirs []string
	tops, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", "kubepods*"))
	for _, top := range tops {
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	return dirs
}

// removeCgroups removes the kubepods cgroups the run made, deepest first
// (a cgroup folder is removed with rmdir, once empty of children and
// processes).
func (h *hostState) removeCgroups() error {
	had := map[string]bool{}
	for _, d := range h.CgroupDirs {
		had[d] = true
	}
	var errs []error
	for range 20 {
		dirs := kubepodsDirs()
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		errs = errs[:0]
		left := 0
		for _, d := range dirs {
			if had[d] {
				continue
			}
			left++
			if err := syscall.Rmdir(d); err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
		if left == 0 || len(errs) == 0 {
			return nil
		}
		killPodProcesses()
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// removeIfMade removes a host path that was not there before the run.
func removeIfMade(p string) error {
	if _, err := os.Lstat(p); err != nil {
		return nil
	}
	return os.RemoveAll(p)
}

// verify reports what restore could not put back, by looking again.
func (h *hostState) verify() error {
	var diffs []string
	if m := mountsUnder(h.Dir); len(m) > 0 {
		diffs = append(diffs, fmt.Sprintf("mounts left: %v", m))
	}
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil {
		diffs = append(diffs, "bridge "+bridgeName+" left")
	}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if out, err := kubetest.Output(cmd); err == nil && (strings.Contains(out, "KUBE-") || strings.Contains(out, "CNI-")) {
			diffs = append(diffs, cmd+" still has KUBE-/CNI- chains")
		}
	}
	if left := h.newIPSets(); len(left) > 0 {
		diffs = append(diffs, fmt.Sprintf("ipsets left: %v", left))
	}
	if now := nftTables(); strings.Join(now, ",") != strings.Join(h.NFTables, ",") {
		diffs = append(diffs, fmt.Sprintf("nftables tables %v, were %v", now, h.NFTables))
	}
	for s, v := range h.Sysctls {
		if cur, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil && strings.TrimSpace(string(cur)) != v {
			diffs = append(diffs, fmt.Sprintf("sysctl %s=%s, was %s", s, strings.TrimSpace(string(cur)), v))
		}
	}
	if now := kubepodsDirs(); len(now) != len(h.CgroupDirs) {
		diffs = append(diffs, fmt.Sprintf("kubepods cgroups left: %d", len(now)-len(h.CgroupDirs)))
	}
	for p, existed := range h.Paths {
		if _, err := os.Lstat(p); (err == nil) != existed {
			diffs = append(diffs, fmt.Sprintf("%s exists: %v, was %v", p, err == nil, existed))
		}
	}
	if len(pidsWith(func(cmdline []string) bool {
		return strings.Contains(strings.Join(cmdline, " "), h.Dir+"/")
	})) > 0 {
		diffs = append(diffs, "processes naming "+h.Dir+" left")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("host not restored: %s", strings.Join(diffs, "; "))
	}
	return nil
}

// ipsets lists the names of the host's ipsets.
func ipsets() []string {
	out, err := kubetest.Output("ipset", "list", "-n")
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

// newIPSets lists the ipsets a run made: kube-router's NetworkPolicy
// controller names its own KUBE-SRC-*, KUBE-DST-* (inet6:KUBE-* for IPv6)
// and TMP-* while it swaps them. Others are left alone, whoever made them.
func (h *hostState) newIPSets() []string {
	before := map[string]bool{}
	for _, s := range h.IPSets {
		before[s] = true
	}
	var made []string
	for _, s := range ipsets() {
		name := strings.TrimPrefix(s, "inet6:")
		if !before[s] && (strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "TMP-")) {
			made = append(made, s)
		}
	}
	return made
}

// destroyIPSets destroys the ipsets the run made (after the iptables rules
// that name them are gone).
func (h *hostState) destroyIPSets() error {
	var errs []error
	for _, s := range h.newIPSets() {
		if _, err := kubetest.Output("ipset", "destroy", s); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
