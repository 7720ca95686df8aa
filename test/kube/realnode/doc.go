//go:build linux && realnode

// Package realnode brings up a real one-node Kubernetes cluster on this
// machine, from nothing, and runs MariaDB Pods in it:
//
//	cd test/kube && go test -tags realnode -count=1 -v -timeout 60m ./realnode
//
// (make test-kube-real). TestRealNodeRunsMariaDB runs mariadb Pods by hand;
// TestRealNodeDaemon runs `serverlessd serve` on the host with the
// kubernetes driver and a PostgreSQL store, and measures a compute's
// create, resumes, in-place crash recovery and destroy ("REALNODE
// FIGURES"). TestRealNodeInCluster runs the daemon as shipped: the
// Dockerfile built with buildah against local stand-ins of its base images
// (dockerimage.go), deploy/kubernetes applied with kustomize
// (kustomize.go), the store reached through a forwarder on the bridge
// (pgforward.go); it counts failed logins while a replica dies and during
// a rolling update, and checks the NetworkPolicy with kube-router as the
// node's policy controller (policy.go; "REALNODE CLUSTER FIGURES"); a
// login loop straight to the surviving replica must lose nothing.
// TestRealNodeStoppedKubelet SIGKILLs the kubelet under an active compute:
// the daemon restarts and serves while the node is Unknown, the Pod is
// force-deleted, the project's login fails with a clear error (its volume
// is bound to the node), and wakes with its rows once the kubelet is back
// ("REALNODE NODE LOSS FIGURES"). The
// tests share one cluster, brought up by the first and torn down by
// TestMain. Its default StorageClass is served by a small hostPath
// provisioner in the test process (provisioner.go).
//
// It needs root and a Debian 12 host (apt-get installs what is missing:
// packages.go). The control plane is etcd in the test process plus
// kube-apiserver, kube-controller-manager and kube-scheduler; the node is
// containerd (runc, cgroupfs), the kubelet, kube-proxy (iptables) and a CNI
// bridge. The Kubernetes binaries are built from the ../apiserver module and
// the images (pause, mariadb, a Debian base) with debootstrap and buildah;
// both are cached in ~/.cache/serverlessd-kube (SERVERLESSD_KUBE_CACHE), as
// are kube-router and the Dockerfile's buildah storage.
//
// Every file and process of a run is in /tmp/realnode-*; what a node
// changes outside it (iptables, sysctls, cgroups, the bridge, a few fixed
// paths) is recorded first and put back by the teardown (cleanup.go), on
// success, failure, SIGINT and SIGTERM. A run killed harder leaves its
// record, and the next run restores the host from it before starting.
//
// REALNODE_KEEP=1 keeps the run's folder (logs in logs/) after a success;
// a failure always keeps it. REALNODE_RUNC names a runc wrapper, for
// debugging runc failures.
package realnode
