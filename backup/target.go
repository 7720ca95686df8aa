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
	"sort"
	"strings"
	"time"
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
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes the object under key; deleting a missing one is no error.
	Delete(ctx context.Context, key string) error
}

// Object is one stored object, as List returns it.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
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

// List walks the folder under prefix. Temporary files of a Put in
// progress are left out.
func (d Dir) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".put-") {
			return nil
		}
		rel, err := filepath.Rel(d.Root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backup target %s: %w", d.Root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the object's file.
func (d Dir) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete backup object %s: %w", key, err)
	}
	return nil
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
