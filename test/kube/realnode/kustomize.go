//go:build linux && realnode

package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlay is what a user of deploy/kubernetes adds to it: the image they
// built, the store's Secret (store-secret.example.yaml filled in) and the
// compute settings that fit this node (the test's mariadb image, which is
// not the driver's default mariadb tag, and a small Pod). Configuration
// only: the shipped manifests are used as they are.
const overlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %[1]s
  - store-secret.yaml
images:
  - name: registry.example/serverlessd
    newName: localhost/serverlessd
    newTag: test
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: serverlessd, namespace: serverlessd}
      spec:
        template:
          spec:
            containers:
              - name: serverlessd
                env:
                  - {name: SERVERLESSD_KUBERNETES_IMAGE, value: %[2]s}
                  - {name: SERVERLESSD_KUBERNETES_CPU, value: 500m}
                  - {name: SERVERLESSD_KUBERNETES_MEMORY, value: 256Mi}
                  - {name: SERVERLESSD_KUBERNETES_STORAGE_SIZE, value: 1Gi}
                  - {name: SERVERLESSD_COMPUTE_DEFAULT_MEMORY, value: 256Mi}
                  - {name: SERVERLESSD_COMPUTE_STOP_TIMEOUT, value: 30s}
`

const storeSecret = `apiVersion: v1
kind: Secret
metadata:
  name: serverlessd-store
  namespace: serverlessd
type: Opaque
stringData:
  dsn: %q
  api-tokens: %q
`

// kustomizeDeploy writes the overlay in dir, builds it with kustomize's
// library (as kubectl apply -k does) and returns the objects in kustomize's
// legacy order (namespaces, accounts, RBAC, Secrets before workloads).
func kustomizeDeploy(dir, dsn, token string) ([]*unstructured.Unstructured, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base, err := filepath.Abs(filepath.Join(repoRoot, "deploy/kubernetes"))
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		"kustomization.yaml": fmt.Sprintf(overlay, rel, mariadbImage),
		"store-secret.yaml":  fmt.Sprintf(storeSecret, dsn, token),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	opts := krusty.MakeDefaultOptions()
	// The base is outside the overlay's folder.
	opts.LoadRestrictions = types.LoadRestrictionsNone
	opts.Reorder = krusty.ReorderOptionLegacy
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			return nil, err
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs, nil
}

// applyAll server-side applies objects in order, as kubectl apply
// --server-side does, through the dynamic client.
func (e *env) applyAll(ctx context.Context, objs []*unstructured.Unstructured) error {
	dc, err := discovery.NewDiscoveryClientForConfig(e.cluster.admin)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(e.cluster.admin)
	if err != nil {
		return err
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "realnode", Force: true}); err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
		}
	}
	return nil
}
