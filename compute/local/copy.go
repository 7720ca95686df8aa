package local

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// copyBlock is the unit of hole detection when sparsifying a template.
const copyBlock = 64 << 10

// copyTree copies the directory src to dst (which must not exist), then
// makes the copy durable: a compute must never come back from a power cut
// with a half-copied system table.
func copyTree(dst, src string) error {
	var paths []string
	err := filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			err = os.Mkdir(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			err = copyFile(target, path, info)
		default:
			return nil // a datadir holds no links, sockets or devices worth copying
		}
		paths = append(paths, target)
		return err
	})
	if err != nil {
		return err
	}
	return syncPaths(paths)
}

// copyFile copies src into a new file with src's modification time (so
// that a backup of the copy knows its files unchanged from the original's,
// without reading them), then copyContent's bytes.
func copyFile(dst, src string, info fs.FileInfo) error {
	if err := copyContent(dst, src, info); err != nil {
		return err
	}
	return os.Chtimes(dst, info.ModTime(), info.ModTime())
}

// copyContent copies the data regions of src (a template file, made sparse by
// sparsify) into a new file. A fresh datadir is mostly zeros (the redo log,
// ibdata1's free pages), so this moves a few MB instead of ~50. The full
// size is first reserved with fallocate, as InnoDB itself extends its files,
// so that a later write into a hole never fails with ENOSPC.
func copyContent(dst, src string, info fs.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	defer out.Close()
	size := info.Size()
	if size == 0 {
		return out.Close()
	}
	if cloneFile(out, in) == nil {
		return out.Close()
	}
	if err := reserve(out, size); err != nil {
		return err
	}
	if err := copyData(out, in, size); err != nil {
		return err
	}
	return out.Close()
}

// copyData copies each data region of in, found with SEEK_DATA/SEEK_HOLE,
// to the same offset of out. Within a region io.Copy uses copy_file_range,
// so the bytes never pass through user space.
func copyData(out, in *os.File, size int64) error {
	for off := int64(0); off < size; {
		start, err := in.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return err
		}
		end, err := in.Seek(start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := in.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, end-start); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// sparsify rewrites a template file with holes where its blocks are all
// zeros, so that copyFile skips them. It runs once per template.
func sparsify(path string) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := path + ".sparse"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer out.Close()
	if err := writeNonZero(out, in); err != nil {
		return err
	}
	if err := out.Truncate(info.Size()); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeNonZero writes every block of in that is not all zeros at the same
// offset of out.
func writeNonZero(out, in *os.File) error {
	buf := make([]byte, copyBlock)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], make([]byte, n)) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sparsifyTree sparsifies the large files under root: small ones have no
// room for holes worth the trouble.
func sparsifyTree(root string) error {
	return filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		info, err := e.Info()
		if err != nil || info.Size() < 1<<20 {
			return err
		}
		return sparsify(path)
	})
}

// syncPaths fsyncs files and folders, several at once: the journal commits
// of concurrent fsyncs are batched, which makes ~200 files cheap.
func syncPaths(paths []string) error {
	const workers = 16
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	work := make(chan string)
	for range workers {
		wg.Go(func() {
			for p := range work {
				if err := syncPath(p); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	return first
}

// syncTree fsyncs every file and folder under root.
func syncTree(root string) error {
	var paths []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err == nil && (e.IsDir() || e.Type().IsRegular()) {
			paths = append(paths, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	return syncPaths(paths)
}

// syncPath fsyncs a file, or a folder so that the entries created or
// renamed in it survive a crash.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error { return syncPath(dir) }
