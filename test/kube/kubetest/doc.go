// Package kubetest holds what the Kubernetes harness (test/kube) and the
// real-node suite (test/kube/realnode) both need: embedded etcd, the API
// server's credentials, flags and readiness, the Kubernetes binaries,
// manifests applied object by object, and a client of the daemon under
// test. Test files cannot be imported, so the code lives here.
package kubetest
