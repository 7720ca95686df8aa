package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// sameTree fails unless b holds a's files with the same contents and modes.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(a, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		ia, _ := e.Info()
		ib, err := os.Stat(q)
		if err != nil {
			t.Errorf("%s is missing from the restore", rel)
			return nil
		}
		if ia.Mode() != ib.Mode() || (!e.IsDir() && !ia.ModTime().Equal(ib.ModTime())) {
			t.Errorf("%s: mode %v time %v, restored %v %v", rel, ia.Mode(), ia.ModTime(), ib.Mode(), ib.ModTime())
		}
		if !e.IsDir() {
			ca, _ := os.ReadFile(p)
			cb, _ := os.ReadFile(q)
			if !bytes.Equal(ca, cb) {
				t.Errorf("%s: contents differ", rel)
			}
			n++
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("compare %s and %s: %v (%d files)", a, b, err, n)
	}
}

func TestSnapshotRestoreIncremental(t *testing.T) {
	ctx := context.Background()
	src, tgt := t.TempDir(), Dir{Root: t.TempDir()}
	write(t, filepath.Join(src, "ibdata1"), strings.Repeat("innodb page ", 10000), 0o660)
	write(t, filepath.Join(src, "shop", "t.ibd"), "rows", 0o640)
	write(t, filepath.Join(src, "shop", "copy.ibd"), "rows", 0o640) // the same content: stored once
	write(t, filepath.Join(src, "empty"), "", 0o600)

	m1, st, err := Snapshot(ctx, tgt, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 4 || st.Uploaded != 3 || st.Reused != 1 || st.BytesStored >= st.BytesRead {
		t.Fatalf("first snapshot: %+v, want 4 files, 3 contents stored compressed", st)
	}
	out := filepath.Join(t.TempDir(), "restored")
	if err := Restore(ctx, tgt, m1, out); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)

	// One file changes: only it is read and stored.
	write(t, filepath.Join(src, "shop", "t.ibd"), "more rows", 0o640)
	m2, st, err := Snapshot(ctx, tgt, src, m1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Uploaded != 1 || st.Reused != 3 || st.BytesRead != int64(len("more rows")) {
		t.Fatalf("second snapshot: %+v, want one file read and stored", st)
	}
	if err := SaveManifest(ctx, tgt, "snapshots/prj_1/2.json", m2); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadManifest(ctx, tgt, "snapshots/prj_1/2.json")
	if err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "restored")
	if err := Restore(ctx, tgt, loaded, out2); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out2)
	if err := Restore(ctx, tgt, loaded, out2); err == nil {
		t.Fatal("a restore into a folder that is not empty went ahead")
	}
}

// TestCorruptionIsDetected damages a stored object in two ways: both
// restores fail with ErrCorrupt naming the file.
func TestCorruptionIsDetected(t *testing.T) {
	ctx := context.Background()
	src, tgt := t.TempDir(), Dir{Root: t.TempDir()}
	write(t, filepath.Join(src, "data.ibd"), strings.Repeat("x", 100000), 0o640)
	m, _, err := Snapshot(ctx, tgt, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum string
	for _, f := range m.Files {
		if f.Path == "data.ibd" {
			sum = f.SHA256
		}
	}
	obj := filepath.Join(tgt.Root, filepath.FromSlash(objectKey(sum)))
	good, _ := os.ReadFile(obj)
	for name, damage := range map[string]func([]byte) []byte{
		"a flipped byte": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 0xff; return c },
		"truncated":      func(b []byte) []byte { return b[:len(b)/2] },
	} {
		if err := os.WriteFile(obj, damage(good), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Restore(ctx, tgt, m, filepath.Join(t.TempDir(), "r"))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "data.ibd") {
			t.Errorf("%s: restore = %v, want ErrCorrupt naming data.ibd", name, err)
		}
	}
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	if err := Restore(ctx, tgt, m, filepath.Join(t.TempDir(), "r")); !errors.Is(err, ErrNotFound) {
		t.Errorf("a missing object: %v, want ErrNotFound", err)
	}
}

// TestTamperedManifest refuses paths outside the restore and missing sums.
func TestTamperedManifest(t *testing.T) {
	for _, f := range []File{{Path: "../escape", SHA256: strings.Repeat("a", 64)}, {Path: "x"}} {
		err := Restore(context.Background(), Dir{Root: t.TempDir()}, &Manifest{Files: []File{f}}, filepath.Join(t.TempDir(), "r"))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("manifest entry %+v: %v, want ErrCorrupt", f, err)
		}
	}
}

func TestDirRefusesKeysOutside(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	for _, key := range []string{"", "../x", "/etc/passwd", "a/../../x"} {
		if err := d.Put(context.Background(), key, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) wrote outside the target", key)
		}
	}
}
