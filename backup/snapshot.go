package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt means a restored file does not match its checksum, or its
// object cannot be decompressed: the backup is damaged.
var ErrCorrupt = errors.New("backup object is corrupt")

// Manifest lists a snapshot's files.
type Manifest struct {
	TakenAt time.Time `json:"taken_at"`
	// Timeline is the datadir's history this snapshot belongs to, and
	// Binlog the newest binary log it holds: a point-in-time restore from
	// it replays the timeline's binary logs after that one. A hot backup's
	// data stops inside Binlog, at BinlogPos: the replay starts there.
	Timeline  string `json:"timeline,omitempty"`
	Binlog    string `json:"binlog,omitempty"`
	BinlogPos uint64 `json:"binlog_pos,omitempty"`
	Files     []File `json:"files"`
}

// File is one file or folder of a snapshot.
type File struct {
	Path    string      `json:"path"` // slash-separated, relative to the snapshot's root
	Dir     bool        `json:"dir,omitempty"`
	Mode    fs.FileMode `json:"mode"`
	UID     int         `json:"uid"`
	GID     int         `json:"gid"`
	Size    int64       `json:"size"`
	ModTime time.Time   `json:"mod_time"`
	SHA256  string      `json:"sha256,omitempty"`
}

// objectKey is where a content lives: named by its SHA-256, so a content
// is stored once, whichever file and snapshot it belongs to.
func objectKey(sum string) string { return "objects/" + sum[:2] + "/" + sum + ".zst" }

// Stats say what a snapshot read and stored.
type Stats struct {
	Files, Uploaded, Reused int   // Reused: unchanged since prev, or content already stored
	BytesRead, BytesStored  int64 // BytesStored: compressed
}

// Snapshot stores the folder root in t and returns its manifest. A file
// whose size, time and mode match prev's entry keeps prev's checksum
// without being read; a content t already has is not stored again. root
// must not change meanwhile: it is a stopped compute's folder.
func Snapshot(ctx context.Context, t Target, root string, prev *Manifest) (*Manifest, Stats, error) {
	known := map[string]File{}
	if prev != nil {
		for _, f := range prev.Files {
			known[f.Path] = f
		}
	}
	m := &Manifest{TakenAt: time.Now().UTC()}
	var st Stats
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if e.Type()&fs.ModeSymlink != 0 || !(e.IsDir() || e.Type().IsRegular()) {
			return nil // sockets and links are not data
		}
		f, err := describe(p, filepath.ToSlash(rel), e)
		if err != nil || f.Dir {
			m.Files = append(m.Files, f)
			return err
		}
		st.Files++
		if old, ok := known[f.Path]; ok && old.Size == f.Size && old.ModTime.Equal(f.ModTime) && old.Mode == f.Mode && old.SHA256 != "" {
			f.SHA256 = old.SHA256
			st.Reused++
		} else if err := storeFile(ctx, t, p, &f, &st); err != nil {
			return err
		}
		m.Files = append(m.Files, f)
		return nil
	})
	if err != nil {
		return nil, st, fmt.Errorf("snapshot %s: %w", root, err)
	}
	m.Binlog = newestBinlog(m.Files)
	return m, st, nil
}

// newestBinlog names the newest binary log among a snapshot's files: the
// compute started on them writes the next one.
func newestBinlog(files []File) string {
	newest := ""
	for _, f := range files {
		if binlogName.MatchString(f.Path) && f.Path > newest {
			newest = f.Path
		}
	}
	return newest
}

// describe reads a file's metadata.
func describe(p, rel string, e fs.DirEntry) (File, error) {
	info, err := e.Info()
	if err != nil {
		return File{}, err
	}
	uid, gid := owner(info)
	return File{Path: rel, Dir: e.IsDir(), Mode: info.Mode().Perm(), UID: uid, GID: gid,
		Size: info.Size(), ModTime: info.ModTime().UTC()}, nil
}

// storeFile reads the file once, hashing and compressing it into a staging
// file, then stores that under the hash unless t has the content already.
// Naming an object only after reading it means an object's name always
// matches what it holds, even if the file changed while it was read.
func storeFile(ctx context.Context, t Target, p string, f *File, st *Stats) error {
	stage, sum, n, err := stageFile(p)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	defer closeStage(stage)
	f.SHA256 = sum
	st.BytesRead += n
	if ok, err := t.Exists(ctx, objectKey(f.SHA256)); err != nil {
		return err
	} else if ok {
		st.Reused++
		return nil
	}
	size, err := putStage(ctx, t, objectKey(f.SHA256), stage)
	if err != nil {
		return fmt.Errorf("store %s: %w", f.Path, err)
	}
	st.Uploaded++
	st.BytesStored += size
	return nil
}

// stageFile reads the file at p once, hashing it and compressing it into
// a temporary file, and returns that file (to be closed with closeStage),
// the content's SHA-256 and the bytes read.
func stageFile(p string) (stage *os.File, sum string, n int64, err error) {
	src, err := os.Open(p)
	if err != nil {
		return nil, "", 0, err
	}
	defer src.Close()
	stage, err = os.CreateTemp("", "serverlessd-backup-*")
	if err != nil {
		return nil, "", 0, err
	}
	h := sha256.New()
	if n, err = compressCount(stage, io.TeeReader(src, h)); err != nil {
		closeStage(stage)
		return nil, "", 0, err
	}
	return stage, hex.EncodeToString(h.Sum(nil)), n, nil
}

func closeStage(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// putStage stores a staged file under key and returns its size.
func putStage(ctx context.Context, t Target, key string, stage *os.File) (int64, error) {
	size, err := stage.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = stage.Seek(0, io.SeekStart)
	}
	if err != nil {
		return 0, err
	}
	return size, t.Put(ctx, key, stage)
}

// compressCount compresses r into w and returns how many bytes it read.
func compressCount(w io.Writer, r io.Reader) (int64, error) {
	c := &countingReader{r: r}
	err := compress(w, c)
	return c.n, err
}

func compress(w io.Writer, r io.Reader) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return err
	}
	if _, err := io.Copy(zw, r); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Restore writes the snapshot's files under root, which must not exist or
// be empty, with their modes, owners (when the daemon may set them) and
// times, and checks every file against its SHA-256: a damaged object is
// ErrCorrupt, naming the file.
func Restore(ctx context.Context, t Target, m *Manifest, root string) error {
	if entries, err := os.ReadDir(root); err == nil && len(entries) > 0 {
		return fmt.Errorf("restore into %s: the folder is not empty", root)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	files := append([]File(nil), m.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path }) // parents first
	for _, f := range files {
		if err := restoreOne(ctx, t, root, f); err != nil {
			return fmt.Errorf("restore %s into %s: %w", f.Path, root, err)
		}
	}
	// Folder times last: writing their files moved them.
	for i := len(files) - 1; i >= 0; i-- {
		if f := files[i]; f.Dir {
			_ = os.Chtimes(filepath.Join(root, filepath.FromSlash(f.Path)), f.ModTime, f.ModTime)
		}
	}
	return nil
}

func restoreOne(ctx context.Context, t Target, root string, f File) error {
	if f.Path != "." && !filepath.IsLocal(filepath.FromSlash(f.Path)) {
		return fmt.Errorf("the manifest names a path outside the snapshot: %w", ErrCorrupt)
	}
	if !f.Dir && len(f.SHA256) != sha256.Size*2 {
		return fmt.Errorf("the manifest has no valid checksum for it: %w", ErrCorrupt)
	}
	p := filepath.Join(root, filepath.FromSlash(f.Path))
	if f.Dir {
		if err := os.MkdirAll(p, f.Mode|0o700); err != nil {
			return err
		}
		return finish(p, f)
	}
	if err := fetchVerified(ctx, t, objectKey(f.SHA256), f.SHA256, p); err != nil {
		return err
	}
	return finish(p, f)
}

// fetchVerified writes the object under key, decompressed, to a new file
// at path, and checks that its content has the SHA-256 sum: a damaged
// object is ErrCorrupt.
func fetchVerified(ctx context.Context, t Target, key, sum, path string) error {
	obj, err := t.Get(ctx, key)
	if err != nil {
		return err
	}
	defer obj.Close()
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	err = decompress(io.MultiWriter(out, h), obj)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("content has SHA-256 %s, where %s was stored: %w", got, sum, ErrCorrupt)
	}
	return nil
}

func decompress(w io.Writer, r io.Reader) error {
	zr, err := zstd.NewReader(r)
	if err != nil {
		return fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	defer zr.Close()
	if _, err := io.Copy(w, zr); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return err // the write failed, not the object
		}
		return fmt.Errorf("decompress: %v: %w", err, ErrCorrupt)
	}
	return nil
}

// finish sets a restored file's mode, owner and time.
func finish(p string, f File) error {
	if err := os.Chmod(p, f.Mode); err != nil {
		return err
	}
	if err := chown(p, f.UID, f.GID); err != nil {
		return err
	}
	return os.Chtimes(p, f.ModTime, f.ModTime)
}

// SaveManifest stores m under key as JSON.
func SaveManifest(ctx context.Context, t Target, key string, m *Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return t.Put(ctx, key, bytes.NewReader(b))
}

// LoadManifest reads the manifest under key.
func LoadManifest(ctx context.Context, t Target, key string) (*Manifest, error) {
	r, err := t.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var m Manifest
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest %s: %v: %w", key, err, ErrCorrupt)
	}
	return &m, nil
}
