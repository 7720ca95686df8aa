// Package backup copies a stopped compute's folder to a backup target as a
// snapshot, and back. A suspended compute's datadir was shut down cleanly,
// so its files are a consistent copy without any backup tool.
//
// A snapshot is a manifest (every file's path, size, mode, owner, time and
// SHA-256) plus one object per distinct file content, zstd-compressed and
// named by its SHA-256: a file that did not change since the previous
// snapshot is not read or uploaded again, and the same content is stored
// once. Every restore verifies every file against its checksum.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound means the target has no object under the key.
var ErrNotFound = errors.New("backup object not found")

// Target stores objects by key ("objects/ab12....zst").
type Target interface {
	// Put stores what r yields under key, replacing any object there; a
	// failed Put leaves no partial object.
	Put(ctx context.Context, key string, r io.Reader) error
	// Get opens the object under key; ErrNotFound when there is none.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Exists reports whether key holds an object.
	Exists(ctx context.Context, key string) (bool, error)
}

// Dir is a Target in a local folder (the default: <data_dir>/backups).
type Dir struct{ Root string }

var _ Target = Dir{}

func (d Dir) path(key string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(key))
	if key == "" || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("backup key %q is not a relative path inside the target", key)
	}
	return filepath.Join(d.Root, clean), nil
}

// Put writes the object to a temporary file and renames it into place.
func (d Dir) Put(ctx context.Context, key string, r io.Reader) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup target %s: %w", d.Root, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return fmt.Errorf("backup target %s: %w", d.Root, err)
	}
	defer os.Remove(f.Name()) // gone after the rename; a failed Put leaves nothing
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		f.Close()
		return fmt.Errorf("write backup object %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write backup object %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write backup object %s: %w", key, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("write backup object %s: %w", key, err)
	}
	return nil
}

// Get opens the object's file.
func (d Dir) Get(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backup object %s: %w", key, ErrNotFound)
	}
	return f, err
}

// Exists stats the object's file.
func (d Dir) Exists(_ context.Context, key string) (bool, error) {
	p, err := d.path(key)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// ctxReader stops a copy once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
