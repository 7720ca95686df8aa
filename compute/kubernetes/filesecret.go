package kubernetes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FileSecret keeps a few files of the daemon's data dir in a Secret of the
// driver's namespace, so that every replica and every restart of the
// daemon, whose data dir may be an emptyDir, uses the same ones: the
// proxy's self-signed TLS certificate and RSA key, made once.
type FileSecret struct {
	d     *Driver
	name  string
	dir   string
	files []string
}

// FileSecret returns the Secret called name that keeps files of dir.
func (d *Driver) FileSecret(name, dir string, files ...string) *FileSecret {
	return &FileSecret{d: d, name: name, dir: dir, files: files}
}

// Restore writes the Secret's files into dir. It reports false, and writes
// nothing, when there is no Secret yet.
func (f *FileSecret) Restore(ctx context.Context) (bool, error) {
	s, err := f.d.cli.CoreV1().Secrets(f.d.opts.Namespace).Get(ctx, f.name, getOpts)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read secret %s: %w", f.name, err)
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return false, err
	}
	for _, name := range f.files {
		data, ok := s.Data[name]
		if !ok {
			return false, fmt.Errorf("secret %s has no %s: delete it, and the daemon makes a new one", f.name, name)
		}
		if err := os.WriteFile(filepath.Join(f.dir, name), data, 0o600); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Save creates the Secret from the files in dir. If another replica made
// it first, that one is kept: this daemon uses its own files until its next
// start, which restores the Secret's.
func (f *FileSecret) Save(ctx context.Context) error {
	data := map[string][]byte{}
	for _, name := range f.files {
		b, err := os.ReadFile(filepath.Join(f.dir, name))
		if err != nil {
			return err
		}
		data[name] = b
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: f.name, Namespace: f.d.opts.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "serverlessd"}},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	_, err := f.d.cli.CoreV1().Secrets(f.d.opts.Namespace).Create(ctx, s, createOpts)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create secret %s: %w", f.name, err)
	}
	return nil
}
