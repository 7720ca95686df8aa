//go:build linux && realnode

package realnode

import (
	"context"
	"log"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The cluster's default StorageClass and the provisioner behind it. A
// claim that names no class (the daemon's) gets this one from the
// DefaultStorageClass admission plugin.
const (
	defaultClass = "realnode-dynamic"
	provisioner  = "serverlessd.test/hostpath"
	// provisionedBy is the PV annotation that tells the PV controller an
	// external provisioner made the volume and will delete it.
	provisionedBy = "pv.kubernetes.io/provisioned-by"
	// mysqlUID owns the volumes' folders: it is the mysql user of the
	// official mariadb image and of the test's, and the kubelet does not
	// apply a Pod's fsGroup to hostPath volumes.
	mysqlUID = 999
)

// hostPathProvisioner is the least an external provisioner does: for each
// claim of its class with no volume, a hostPath PV pre-bound to it (the
// PV controller then binds the claim); for each of its volumes released
// (claim deleted, policy Delete), the folder and the PV are removed.
type hostPathProvisioner struct {
	client kubernetes.Interface
	dir    string // one folder per volume
	log    *log.Logger
	pvcs   cache.Indexer
	pvs    cache.Indexer
}

// startProvisioner makes the default StorageClass and provisions its
// claims until ctx ends, logging to logDir/provisioner.log.
func startProvisioner(ctx context.Context, client kubernetes.Interface, dir, logDir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(logDir, "provisioner.log"))
	if err != nil {
		return err
	}
	immediate, del := storagev1.VolumeBindingImmediate, corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: defaultClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       provisioner,
		ReclaimPolicy:     &del,
		VolumeBindingMode: &immediate,
	}
	if _, err := client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	p := &hostPathProvisioner{client: client, dir: dir, log: log.New(f, "", log.Lmicroseconds),
		pvcs: factory.Core().V1().PersistentVolumeClaims().Informer().GetIndexer(),
		pvs:  factory.Core().V1().PersistentVolumes().Informer().GetIndexer()}
	// Every change of a claim or volume kicks one pass over all of them:
	// a test cluster has a handful.
	kick := make(chan struct{}, 1)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify(kick) },
		UpdateFunc: func(any, any) { notify(kick) },
	}
	for _, inf := range []cache.SharedIndexInformer{factory.Core().V1().PersistentVolumeClaims().Informer(),
		factory.Core().V1().PersistentVolumes().Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	go func() {
		defer f.Close()
		defer factory.Shutdown()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
				p.sync(ctx)
			}
		}
	}()
	return nil
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sync provisions the claims that need a volume and deletes the volumes
// released.
func (p *hostPathProvisioner) sync(ctx context.Context) {
	have := map[string]bool{} // claims with a volume of ours: namespace/name
	for _, obj := range p.pvs.List() {
		pv := obj.(*corev1.PersistentVolume)
		if pv.Annotations[provisionedBy] != provisioner {
			continue
		}
		if pv.Spec.ClaimRef != nil {
			have[pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name] = true
		}
		if pv.Status.Phase == corev1.VolumeReleased && pv.DeletionTimestamp == nil {
			p.delete(ctx, pv)
		}
	}
	for _, obj := range p.pvcs.List() {
		pvc := obj.(*corev1.PersistentVolumeClaim)
		key := pvc.Namespace + "/" + pvc.Name
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != defaultClass ||
			pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || have[key] {
			continue
		}
		p.provision(ctx, pvc)
	}
}

// provision makes a folder owned by the mysql user and a PV on it,
// pre-bound to the claim by its UID.
func (p *hostPathProvisioner) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	name := "pvc-" + string(pvc.UID)
	path := filepath.Join(p.dir, name)
	if err := mkdirOwned(path); err != nil {
		p.log.Printf("claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedBy: provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              defaultClass,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptrTo(corev1.HostPathDirectory)},
			},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		p.log.Printf("claim %s/%s: create volume: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	p.log.Printf("claim %s/%s: volume %s at %s", pvc.Namespace, pvc.Name, name, path)
}

// delete removes a released volume's folder, then the PV.
func (p *hostPathProvisioner) delete(ctx context.Context, pv *corev1.PersistentVolume) {
	if hp := pv.Spec.HostPath; hp != nil && filepath.Dir(hp.Path) == p.dir {
		if err := os.RemoveAll(hp.Path); err != nil {
			p.log.Printf("volume %s: %v", pv.Name, err)
			return
		}
	}
	err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		p.log.Printf("volume %s: delete: %v", pv.Name, err)
		return
	}
	p.log.Printf("volume %s released: deleted", pv.Name)
}

// mkdirOwned makes a volume's folder, mode 0750, owned by the mysql user.
func mkdirOwned(path string) error {
	if err := os.Mkdir(path, 0o750); err != nil && !os.IsExist(err) {
		return err
	}
	return os.Chown(path, mysqlUID, mysqlUID)
}
